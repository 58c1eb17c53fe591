"""The server of `adacsc external`: a long-running process that Gadgetron reaches with
`<external><connect port="18002" address="localhost"/>` (configs/adacsc_lowfield_connect.xml).

With `<execute>`, Gadgetron starts a fresh Python process per node and per scan, so every scan pays
for importing torch and loading the dictionary and network. Here one process loads them once and
serves scan after scan: each Gadgetron connection is one scan (CONFIG, HEADER, items, CLOSE), read
with gadgetron-python's own `Connection` and handed to the registered gadget (adacsc.gadgets.registry)
as `python -m gadgetron` would, with the scan's context (adacsc.scan_context: the operator limits,
by default from this process's environment, and abort as its stop test). Connections are served on
their own threads, at most `workers` at once (the others wait); the accept loop and threads are
adacsc.server.listener's, shared with `adacsc serve`. A gadget that fails sends ERROR (id 8) before
CLOSE, so Gadgetron reports the failure instead of taking a truncated scan for a finished one.
SIGTERM/SIGINT: stop accepting, let running scans finish, exit 0.
"""

import itertools
import logging
import socket
import sys
import threading
import time
import warnings
from gadgetron.external.connection import Connection

from adacsc.gadgets import registry
from adacsc.gadgets.contract import Gadget
from adacsc.limits import ScanLimits
from adacsc.scan_context import ScanContext
from adacsc.server import protocol as proto
from adacsc.server.listener import ConnectionServer, join_threads, open_listeners
from adacsc.server.notify import PORT, notify, session_ended, session_started
from adacsc.server.refusal import refuse

log = logging.getLogger(__name__)

# gadgetron-python reads header arrays through numpy.asarray on ctypes structs, which makes numpy
# warn about the PEP 3118 format once per process; the values are right, the warning is noise.
warnings.filterwarnings("ignore", message="A builtin ctypes object gave a PEP3118 format string",
                        category=RuntimeWarning)

DEFAULT_PORT = 18002
"""The port configs/adacsc_lowfield_connect.xml connects to."""
DEFAULT_GADGET = "csc"
"""The gadget configs/adacsc_lowfield_connect.xml expects at that port."""
FAILURE_DRAIN_S = 10.0
"""after reporting a failed scan, how long what Gadgetron still sends is read (it may be blocked
writing the rest of the scan to us; reading lets it see the error)"""


class _GuardedSocket:
    """The socket gadgetron-python's Connection wraps, with two fixes for a long-running process:
    reads time out after `idle_timeout` seconds of silence (Connection would wait forever), and a
    peer that vanishes mid-message raises instead of making Connection's read loop spin on empty
    reads."""

    def __init__(self, sock: socket.socket, idle_timeout: float | None) -> None:
        self._sock = sock
        self._idle_timeout = idle_timeout

    def settimeout(self, _value: float | None) -> None:
        self._sock.settimeout(self._idle_timeout)

    def recv(self, size: int, flags: int = 0) -> bytes:
        data = self._sock.recv(size, flags)
        if size and not data:
            raise ConnectionError("Gadgetron closed the connection in the middle of a message")
        return data

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)

    def send(self, data: bytes) -> int:
        self._sock.sendall(data)
        return len(data)

    def close(self) -> None:
        self._sock.close()


def _fail(sock: socket.socket, text: str, drain_s: float = FAILURE_DRAIN_S) -> None:
    """Send ERROR and CLOSE (the framing Gadgetron reads from an external node), read what
    Gadgetron still sends for a while, close."""
    refuse(sock, text, "error", drain_s=drain_s, max_drain_bytes=sys.maxsize)


class ExternalServer(ConnectionServer):
    """Serves Gadgetron `<connect>` connections with one gadget; usable in a thread or as the
    `adacsc external` main loop (`start`, `serve_forever`, `stop`)."""

    def __init__(self, gadget: str = DEFAULT_GADGET, host: str = "localhost", port: int = DEFAULT_PORT,
                 workers: int = 2, idle_timeout: float | None = 1800.0, preload: bool = True,
                 limits: ScanLimits | None = None) -> None:
        if workers < 1:
            raise ValueError("--workers must be at least 1")
        super().__init__(workers)
        self.gadget = gadget
        self.host = host
        self.port = port
        self.idle_timeout = idle_timeout if idle_timeout and idle_timeout > 0 else None
        self.preload = preload
        self.workers = workers
        self.limits = limits if limits is not None else ScanLimits.from_environment()
        """every scan's operator limits (default: this process's environment)"""
        self._abort = threading.Event()
        self._gadget: Gadget | None = None
        self.served = 0
        self.failed = 0
        self._scan_ids = itertools.count(1)

    def start(self) -> "ExternalServer":
        """Import the gadget (and torch), bind (connections made meanwhile wait in the backlog),
        load the gadget's models once, then report ready."""
        started = time.perf_counter()
        self._gadget = registry.gadget(self.gadget)
        self._listeners = open_listeners(self.host, self.port)
        self.port = self._listeners[0].getsockname()[1]
        if self.preload and self._gadget.preload is not None:
            try:
                self._gadget.preload()
            except Exception as err:  # the scans' own properties may not need the defaults
                log.warning("%s.preload() failed (models load on the first scan instead): %s", self.gadget, err)
        log.info("gadget %s ready in %.2f s", self.gadget, time.perf_counter() - started)
        addresses = ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in self._listeners)
        log.info("adacsc external (%s) listening on %s, port %d, %d worker(s)", self.gadget, addresses,
                 self.port, self.workers)
        notify("READY=1", f"STATUS=listening on {addresses}", f"{PORT}={self.port}")
        return self

    def _accepted(self, sock: socket.socket, peer: str) -> None:
        self._spawn(self._handle, (sock, peer, next(self._scan_ids)), f"adacsc-external-{peer}")

    def _after_stop(self) -> None:
        """Wait for the running scans (however long they take)."""
        running = self.running_threads()
        if running:
            log.info("stopping: waiting for %d scan(s) to finish", len(running))
        join_threads(running, None)
        log.info("adacsc external stopped: %d scan(s) served, %d failed", self.served, self.failed)

    def abort(self) -> None:
        """Stop accepting and cancel the running scans (their solvers stop at the next iteration)."""
        self.stop()
        self._abort.set()

    def _count(self, scan: int, failed: bool) -> None:
        with self._lock:
            if failed:
                self.failed += 1
            else:
                self.served += 1
        session_ended(scan, not failed)
        self._changed_now()

    def _handle(self, sock: socket.socket, peer: str, scan: int) -> None:
        acquired = False
        try:
            acquired = self._wait_for_slot()
            if not acquired:
                log.warning("scan %d from %s refused: shutting down", scan, peer)
                _fail(sock, "adacsc external is shutting down", drain_s=1.0)
                return
            self._serve(sock, peer, scan)
        except Exception:  # a bug must end this scan only
            log.exception("scan %d from %s: unexpected failure", scan, peer)
        finally:
            if acquired:
                self._slots.release()

    def _serve(self, sock: socket.socket, peer: str, scan: int) -> None:
        assert self._gadget is not None
        started = time.perf_counter()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        try:
            connection = Connection(_GuardedSocket(sock, self.idle_timeout))
        except Exception as err:  # no CONFIG/HEADER, or a header that does not parse
            log.error("scan %d from %s: could not start: %s", scan, peer, err or type(err).__name__)
            self._count(scan, failed=True)
            _fail(sock, f"adacsc external: could not start the scan: {err or type(err).__name__}")
            return
        log.info("scan %d from %s: started", scan, peer)
        session_started(scan)
        try:
            self._gadget.execute(connection, ScanContext(self.limits, stop=self._abort.is_set))
        except Exception as err:
            text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            log.error("scan %d from %s: gadget %s failed after %.2f s: %s", scan, peer, self.gadget,
                      time.perf_counter() - started, text)
            self._count(scan, failed=True)
            _fail(sock, f"adacsc external gadget {self.gadget}: {text}")
            return
        try:
            sock.settimeout(10.0)
            sock.sendall(proto.close_message())
        except OSError as err:
            log.warning("scan %d from %s: could not send CLOSE: %s", scan, peer, err)
        finally:
            sock.close()
        log.info("scan %d from %s: done in %.2f s", scan, peer, time.perf_counter() - started)
        self._count(scan, failed=False)
