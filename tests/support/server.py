"""Helpers for the server and send tests: a server in a thread or a process (and what it notifies),
raw-socket exchanges; the scans come from adacsc.simulation.small_scan."""

import itertools
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import ismrmrd
import numpy as np

from adacsc.server import Server, ServerSettings, SessionSettings
from adacsc.io.dataset import InputScan
from adacsc.server import notify
from adacsc.server import protocol as proto

FRONTEND = "adacsc_frontend"


def frontend_text(**properties: str) -> str:
    """The front-end chain as XML text (what -C sends), with coil_combination properties."""
    props = "".join(f'<property name="{k}" value="{v}"/>' for k, v in properties.items())
    return ("<configuration><version>2</version><stream>"
            '<external><execute name="adacsc.gadgets.noise_adjust" target="noise_adjust" type="python"/>'
            "<configuration/></external>"
            '<external><execute name="adacsc.gadgets.readout_buffer" target="readout_buffer" type="python"/>'
            "<configuration/></external>"
            '<external><execute name="adacsc.gadgets.coil_combination" target="coil_combination" type="python"/>'
            f'<configuration><property name="output" value="images"/>{props}</configuration></external>'
            "</stream></configuration>")


def chain_text(*nodes: tuple[str, str]) -> str:
    """A chain XML of the given (module, target) nodes."""
    body = "".join(f'<external><execute name="{m}" target="{t}" type="python"/><configuration/></external>'
                   for m, t in nodes)
    return f"<configuration><version>2</version><stream>{body}</stream></configuration>"


def scan_messages(path: Path) -> tuple[bytes, list[bytes]]:
    """(header XML, encoded ACQUISITION messages) of a file."""
    with InputScan(path) as scan:
        return scan.header_bytes(), [proto.item_message(a) for a in scan.acquisitions()]


def scan_stream(path: Path, config_name: str = FRONTEND) -> bytes:
    """A whole streaming session for a file: config name, header, every acquisition, CLOSE."""
    header, acquisitions = scan_messages(path)
    return (proto.config_file_message(config_name) + proto.header_message(header) + b"".join(acquisitions)
            + proto.close_message())


def non_reading_client(port: int) -> socket.socket:
    """A client socket with a 4 KiB receive buffer, for tests that send and never read: the
    server's writes stall as soon as a little data is waiting."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    return sock


def assert_same_images(a: dict[str, list[ismrmrd.Image]], b: dict[str, list[ismrmrd.Image]]) -> None:
    """Identical pixel data, headers (attribute_string_len aside: set only by serialisation) and meta."""
    assert sorted(a) == sorted(b) and a
    for name in a:
        assert len(a[name]) == len(b[name])
        for x, y in zip(sorted(a[name], key=lambda i: (i.slice, i.image_index)),
                        sorted(b[name], key=lambda i: (i.slice, i.image_index))):
            assert np.array_equal(x.data, y.data)
            hx, hy = ismrmrd.ImageHeader.from_buffer_copy(x.getHead()), ismrmrd.ImageHeader.from_buffer_copy(y.getHead())
            hx.attribute_string_len = hy.attribute_string_len = 0
            assert bytes(hx) == bytes(hy)
            assert x.attribute_string == y.attribute_string


class ThreadedServer:
    """A Server on a free loopback port, serving in a thread."""

    def __init__(self, **settings: object) -> None:
        session = settings.pop("session", None) or SessionSettings(config_dirs=())
        session_overrides = {k: settings.pop(k) for k in list(settings) if k in SessionSettings.__dataclass_fields__}
        session = replace(session, **session_overrides)
        settings.setdefault("preload", False)
        self.server = Server(ServerSettings(port=0, session=session, **settings)).start()
        self.port = self.server.port
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-server", daemon=True)
        self.thread.start()

    def report(self, count: int, timeout: float = 20.0) -> list:
        """Wait until `count` sessions have finished; their reports."""
        finished = self.server.wait_until(lambda: len(self.server.reports) >= count, timeout)
        assert finished, f"only {len(self.server.reports)} sessions finished"
        return self.server.reports

    def wait_for(self, predicate, start: int = 0, timeout: float = 20.0):
        """The first report from index `start` on that satisfies `predicate` (sessions of earlier
        tests may finish late, so report order is not test order)."""
        found = []

        def matched() -> bool:
            found[:] = [r for r in self.server.reports[start:] if predicate(r)]
            return bool(found)

        assert self.server.wait_until(matched, timeout), "no finished session matches"
        return found[0]

    def wait_until(self, predicate, timeout: float = 20.0, what: str = "the condition") -> None:
        """Wait until `predicate()` holds (tested whenever a connection or scan starts or ends)."""
        assert self.server.wait_until(predicate, timeout), f"{what} did not hold within {timeout:g} s"

    def stop(self, timeout: float = 30.0) -> None:
        self.server.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "server did not stop"


@contextmanager
def threaded_server(**settings: object):
    server = ThreadedServer(**settings)
    try:
        yield server
    finally:
        server.stop()


def exchange(port: int, data: bytes, half_close: bool = True, timeout: float = 20.0,
             close_abruptly: bool = False) -> list[proto.Message]:
    """Send raw bytes, then read the server's messages until CLOSE or the end (bounded)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the server may have closed early; read what it said
        if close_abruptly:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            return []
        if half_close:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        return read_replies(sock)
    finally:
        sock.close()


def read_replies(sock: socket.socket, limit: int = 10_000) -> list[proto.Message]:
    """Messages from the server until CLOSE (included), EOF or an error (bounded count)."""
    reader = proto.SocketReader(sock)
    replies = []
    for _ in range(limit):
        try:
            message = proto.read_message(reader)
        except (proto.EndOfStream, proto.ProtocolError, OSError):
            break
        replies.append(message)
        if message.mid == proto.CLOSE:
            break
    return replies


def error_texts(replies: list[proto.Message]) -> list[str]:
    """The error reports among replies (TEXT 'ERROR: ...' or ERROR)."""
    return [m.payload for m in replies
            if m.mid == proto.ERROR or (m.mid == proto.TEXT and m.payload.startswith("ERROR"))]


class Notifications:
    """The supervisor's side of adacsc.server.notify for a server process: a datagram socket in
    the abstract namespace, named by NOTIFY_SOCKET in `environment()`. `wait` blocks on it until
    the server says what the test waits for (no sleeping, no reading of logs)."""

    def __init__(self) -> None:
        self.name = f"adacsc-test-{os.getpid()}-{next(_NOTIFY_IDS)}-{uuid.uuid4().hex[:8]}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.received: list[dict[str, str]] = []
        """every notification so far, in order, as KEY -> VALUE"""

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """`base` (default: this process's environment) with NOTIFY_SOCKET pointing here."""
        return {**(os.environ if base is None else base), notify.ENVIRONMENT: "@" + self.name}

    def wait(self, key: str, value: str | None = None, count: int = 1, after: int = 0, timeout: float = 60.0,
             process: subprocess.Popen | None = None) -> str:
        """The value of the `count`-th notification from index `after` on that sets `key` (to a
        value the regular expression `value` matches from its start, when given); fails after
        `timeout` s, or when `process` exits first."""
        deadline = time.monotonic() + timeout
        while True:
            found = [note[key] for note in self.received[after:]
                     if key in note and (value is None or re.match(value, note[key]))]
            if len(found) >= count:
                return found[count - 1]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{len(found)} of {count} notifications {key}={value or '...'} "
                                     f"within {timeout:g} s")
            self.sock.settimeout(min(remaining, 1.0))  # a bounded receive, to notice a dead process
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                if process is not None and process.poll() is not None:
                    raise AssertionError(f"the server exited ({process.returncode}) before {key}={value or '...'}")
                continue
            self._take(data)

    def mark(self) -> int:
        """Take in every notification already sent: the index the next one will have."""
        self.sock.setblocking(False)
        try:
            while True:
                self._take(self.sock.recv(65536))
        except BlockingIOError:
            pass
        return len(self.received)

    def _take(self, data: bytes) -> None:
        self.received.append(dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line))

    def close(self) -> None:
        self.sock.close()


_NOTIFY_IDS = itertools.count()


def start_server_process(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, int, Path, Notifications]:
    """`adacsc serve` in a subprocess on a free port, without the warm-up solve (tests that need it
    say so: tests/server/test_probes.py): (process, port, log file, its notifications)."""
    log_path = tmp_path / "server.log"
    notes = Notifications()
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "adacsc", "serve", "--port", "0", "--no-warm-up", *args],
                                   stdout=log, stderr=subprocess.STDOUT, env=notes.environment())
    try:
        port = int(notes.wait(notify.PORT, process=process))
    except AssertionError as err:
        process.kill()
        process.wait()
        raise RuntimeError(f"server did not start ({err}): {log_path.read_text()[-3000:]}") from err
    return process, port, log_path, notes
