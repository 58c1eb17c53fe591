"""adacsc.server.notify: the sd_notify datagrams a supervisor (systemd with Type=notify, the tests)
receives, on an abstract or a path socket, and silence without NOTIFY_SOCKET."""

import socket
import uuid
from pathlib import Path

import pytest

from adacsc.server import notify
from adacsc.server import protocol as proto
from adacsc.server.refusal import error_report


def receive(sock: socket.socket) -> str:
    sock.settimeout(5.0)
    return sock.recv(4096).decode()


def test_assignments_arrive_as_one_datagram_on_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"adacsc-notify-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv(notify.ENVIRONMENT, "@" + name)
        assert notify.notify("READY=1", f"{notify.PORT}=9002")
        assert receive(sock) == "READY=1\nX_ADACSC_PORT=9002"
        notify.session_started(3)
        notify.session_ended(3, ok=False)
        assert receive(sock) == "X_ADACSC_SESSION=started 3"
        assert receive(sock) == "X_ADACSC_SESSION=ended 3 failed"


def test_a_path_socket_works_and_no_supervisor_means_no_notification(monkeypatch: pytest.MonkeyPatch) -> None:
    path = Path("/tmp") / f"adacsc-notify-{uuid.uuid4().hex[:12]}.sock"  # socket paths are short
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(path))
            monkeypatch.setenv(notify.ENVIRONMENT, str(path))
            assert notify.notify("STOPPING=1") and receive(sock) == "STOPPING=1"
    finally:
        path.unlink(missing_ok=True)
    assert not notify.notify("STOPPING=1")  # the socket is gone: the server goes on regardless
    monkeypatch.delenv(notify.ENVIRONMENT)
    assert not notify.notify("READY=1")
    monkeypatch.setenv(notify.ENVIRONMENT, "relative/name")  # neither a path nor an abstract name
    assert not notify.notify("READY=1")


def test_error_reports_are_framed_in_one_place() -> None:
    assert error_report("bad") == proto.text_message("ERROR: bad")
    assert error_report("bad", "error") == proto.error_message("bad")
    assert proto.error_message("\udcff").endswith(b"?")  # a lone surrogate cannot break the report
    with pytest.raises(ValueError, match="unknown error format"):
        error_report("bad", "json")
