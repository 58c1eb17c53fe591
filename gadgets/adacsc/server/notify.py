"""Telling a supervisor how a server is doing, in systemd's notify protocol (sd_notify(3)).

With `Type=notify` in its unit, systemd sets NOTIFY_SOCKET (a Unix datagram socket; a leading @
names one in the abstract namespace) and takes the service as started when READY=1 arrives.
Both servers send READY=1 once they listen (their port as X_ADACSC_PORT), STOPPING=1 once they
no longer accept connections, and X_ADACSC_SESSION="started N" / "ended N ok|failed" for each
scan (X_ is the prefix sd_notify leaves to services; the tests wait on these instead of reading
the log). Without NOTIFY_SOCKET nothing is sent."""

import logging
import os
import socket

log = logging.getLogger(__name__)

ENVIRONMENT = "NOTIFY_SOCKET"
PORT = "X_ADACSC_PORT"
HTTP_PORT = "X_ADACSC_HTTP_PORT"
SESSION = "X_ADACSC_SESSION"


def notify(*assignments: str) -> bool:
    """Send `KEY=VALUE` assignments as one notification; False when there is no supervisor to
    tell or it cannot be reached (the server goes on regardless)."""
    address = os.environ.get(ENVIRONMENT)
    if not address or address[0] not in "/@":
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto("\n".join(assignments).encode(), target)
    except OSError as err:
        log.debug("notification to %s not sent: %s", address, err)
        return False
    return True


def session_started(number: int) -> None:
    """A scan got a worker."""
    notify(f"{SESSION}=started {number}")


def session_ended(number: int, ok: bool) -> None:
    """A scan ended (ok: without errors and with its client)."""
    notify(f"{SESSION}=ended {number} {'ok' if ok else 'failed'}")
