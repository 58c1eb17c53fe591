"""Graceful stop on SIGTERM / SIGINT for the long-running servers (`adacsc serve`, `adacsc external`):
no new scans are accepted, the running ones finish within the server's grace period; a second
signal cancels them at once."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn, Protocol

log = logging.getLogger(__name__)


class StoppableServer(Protocol):
    @property
    def stopping(self) -> bool: ...

    def stop(self) -> None: ...

    def abort(self) -> None: ...

    def serve_forever(self) -> None: ...


def serve_until_signalled(server: StoppableServer, running: Callable[[], int]) -> None:
    """Stop `server` on SIGTERM or SIGINT (a second signal cancels the `running()` scans) and
    serve until it has stopped."""

    def on_signal(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if server.stopping:
            log.warning("%s again: cancelling %d running scan(s)", name, running())
            server.abort()
        else:
            log.info("%s received: no new scans; running scans finish", name)
            server.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.serve_forever()


def exit_now(code: int) -> NoReturn:
    """End the server process at once, once its scans are finished or cancelled: slices of
    cancelled scans still winding down on the slice pool (between two cancellation points, e.g.
    in a network's forward pass) would otherwise hold the interpreter's exit for seconds, past
    the grace period. Logs are flushed first."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
