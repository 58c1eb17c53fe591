"""`adacsc external`: a long-running process that Gadgetron reaches with
`<external><connect port="18002" address="localhost"/>` (configs/adacsc_lowfield_connect.xml).

With `<execute>`, Gadgetron starts a fresh Python process per node and per scan, so every scan pays
for importing torch and loading the dictionary and network. Here one process loads them once and
serves scan after scan: each Gadgetron connection is one scan (CONFIG, HEADER, items, CLOSE), read
with gadgetron-python's own `Connection` and handed to the gadget function, exactly as
`python -m gadgetron` would. Connections are served on their own threads, at most `--workers` at
once (the others wait). A gadget that fails sends ERROR (id 8) before CLOSE, so Gadgetron reports
the failure instead of taking a truncated scan for a finished one. SIGTERM/SIGINT: stop accepting,
let running scans finish, exit 0.
"""

import argparse
import importlib
import itertools
import logging
import os
import selectors
import socket
import struct
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from gadgetron.external.connection import Connection

from adacsc.core import cancel
from adacsc.gadgets.registry import GADGET_MODULES
from adacsc.server.signals import serve_until_signalled

log = logging.getLogger("adacsc.commands.external")

# gadgetron-python reads header arrays through numpy.asarray on ctypes structs, which makes numpy
# warn about the PEP 3118 format once per process; the values are right, the warning is noise.
warnings.filterwarnings("ignore", message="A builtin ctypes object gave a PEP3118 format string",
                        category=RuntimeWarning)

DEFAULT_PORT = 18002
"""The port configs/adacsc_lowfield_connect.xml connects to."""
DEFAULT_GADGET = "csc"
"""The gadget configs/adacsc_lowfield_connect.xml expects at that port."""
ERROR_MESSAGE_ID = 8
CLOSE_MESSAGE_ID = 4
_ERROR_HEADER = struct.Struct("<HQ")
_CLOSE = struct.Struct("<H").pack(CLOSE_MESSAGE_ID)
DESCRIPTION = ("Serve one adacsc gadget to Gadgetron <external><connect port=.. address=../> nodes: models load "
               "once at start, each connection is one scan. SIGTERM/SIGINT: stop accepting, finish running scans, exit.")


def gadget_names() -> dict[str, str]:
    """Gadget name (the module's last part, which is also its target) -> module."""
    return {module.rsplit(".", 1)[1]: module for module in GADGET_MODULES}


def load_gadget(name: str) -> tuple[Any, Callable[[Any], None]]:
    """(module, target function) of a registered gadget."""
    modules = gadget_names()
    if name not in modules:
        raise ValueError(f"unknown gadget {name!r} (one of {', '.join(sorted(modules))})")
    module = importlib.import_module(modules[name])
    return module, getattr(module, name)


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


def error_message(text: str) -> bytes:
    """An ERROR message as Gadgetron reads it from an external node: id 8, uint64 length, text."""
    payload = text.encode("utf-8", errors="replace")
    return _ERROR_HEADER.pack(ERROR_MESSAGE_ID, len(payload)) + payload


def _fail(sock: socket.socket, text: str, drain_s: float = 10.0) -> None:
    """Send ERROR and CLOSE, read (and drop) what Gadgetron still sends for a while, close."""
    try:
        sock.settimeout(5.0)
        sock.sendall(error_message(text) + _CLOSE)
        # Gadgetron may be blocked writing the rest of the scan to us; reading lets it see the error.
        deadline = time.monotonic() + drain_s
        sock.settimeout(1.0)
        while time.monotonic() < deadline and sock.recv(1 << 16):
            pass
    except OSError:
        pass
    finally:
        sock.close()


def open_listeners(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address `host` resolves to (for "localhost": 127.0.0.1 and ::1,
    since Gadgetron connects to the first address its resolver gives). Port 0: one free port,
    the same on every address."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise ValueError(f"cannot resolve --host {host!r}: {err}") from err
    listeners: list[socket.socket] = []
    seen = set()
    errors = []
    for family, kind, proto, _, address in infos:
        if (family, address[0]) in seen:
            continue
        seen.add((family, address[0]))
        if listeners and port == 0:
            address = (address[0], listeners[0].getsockname()[1], *address[2:])
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(16)
        except OSError as err:
            sock.close()
            errors.append(f"{address[0]}: {err}")
            continue
        listeners.append(sock)
    if not listeners:
        raise OSError(f"cannot listen on {host}:{port}: {'; '.join(errors)}")
    for error in errors:
        log.warning("not listening on %s", error)
    return listeners


class ExternalServer:
    """Serves Gadgetron `<connect>` connections with one gadget; usable in a thread or as the
    `adacsc external` main loop (`start`, `serve_forever`, `stop`)."""

    def __init__(self, gadget: str = DEFAULT_GADGET, host: str = "localhost", port: int = DEFAULT_PORT,
                 workers: int = 2, idle_timeout: float | None = 1800.0, preload: bool = True) -> None:
        if workers < 1:
            raise ValueError("--workers must be at least 1")
        self.gadget = gadget
        self.host = host
        self.port = port
        self.idle_timeout = idle_timeout if idle_timeout and idle_timeout > 0 else None
        self.preload = preload
        self._slots = threading.BoundedSemaphore(workers)
        self.workers = workers
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._listeners: list[socket.socket] = []
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._target: Callable[[Any], None] | None = None
        self.served = 0
        self.failed = 0
        self._scan_ids = itertools.count(1)

    def start(self) -> "ExternalServer":
        """Import the gadget (and torch), bind (connections made meanwhile wait in the backlog),
        load the gadget's models once, then report ready."""
        started = time.perf_counter()
        module, self._target = load_gadget(self.gadget)
        self._listeners = open_listeners(self.host, self.port)
        self.port = self._listeners[0].getsockname()[1]
        hook = getattr(module, "preload", None)
        if self.preload and callable(hook):
            try:
                hook()
            except Exception as err:  # the scans' own properties may not need the defaults
                log.warning("%s.preload() failed (models load on the first scan instead): %s", self.gadget, err)
        log.info("gadget %s ready in %.2f s", self.gadget, time.perf_counter() - started)
        addresses = ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in self._listeners)
        log.info("adacsc external (%s) listening on %s, port %d, %d worker(s)", self.gadget, addresses,
                 self.port, self.workers)
        return self

    def serve_forever(self) -> None:
        """Accept until `stop()`; then wait for the running scans."""
        if not self._listeners:
            self.start()
        selector = selectors.DefaultSelector()
        for listener in self._listeners:
            listener.setblocking(False)
            selector.register(listener, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.2):
                    try:
                        sock, address = key.fileobj.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as err:
                        if not self._stop.is_set():
                            log.warning("accept failed: %s", err)
                        continue
                    sock.setblocking(True)
                    self._spawn(sock, f"{address[0]}:{address[1]}")
        finally:
            selector.close()
            for listener in self._listeners:
                listener.close()
            running = self._running()
            if running:
                log.info("stopping: waiting for %d scan(s) to finish", len(running))
            for thread in running:
                thread.join()
            log.info("adacsc external stopped: %d scan(s) served, %d failed", self.served, self.failed)

    def stop(self) -> None:
        """Stop accepting; running scans finish, waiting ones are refused."""
        self._stop.set()

    def abort(self) -> None:
        """Stop accepting and cancel the running scans (their solvers stop at the next iteration)."""
        self._stop.set()
        self._abort.set()

    @property
    def stopping(self) -> bool:
        """Whether stop() was called."""
        return self._stop.is_set()

    def _running(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._threads)

    def _count(self, failed: bool) -> None:
        with self._lock:
            if failed:
                self.failed += 1
            else:
                self.served += 1

    def _spawn(self, sock: socket.socket, peer: str) -> None:
        thread = threading.Thread(target=self._handle, args=(sock, peer, next(self._scan_ids)), name=f"adacsc-external-{peer}",
                                  daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _handle(self, sock: socket.socket, peer: str, scan: int) -> None:
        acquired = False
        try:
            while not acquired and not self._stop.is_set():
                acquired = self._slots.acquire(timeout=0.2)
            if not acquired:
                log.warning("scan %d from %s refused: shutting down", scan, peer)
                _fail(sock, "adacsc external is shutting down", drain_s=1.0)
                return
            cancel.bind(self._abort.is_set)
            self._serve(sock, peer, scan)
        except Exception:  # a bug must end this scan only
            log.exception("scan %d from %s: unexpected failure", scan, peer)
        finally:
            if acquired:
                self._slots.release()
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _serve(self, sock: socket.socket, peer: str, scan: int) -> None:
        assert self._target is not None
        started = time.perf_counter()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        try:
            connection = Connection(_GuardedSocket(sock, self.idle_timeout))
        except Exception as err:  # no CONFIG/HEADER, or a header that does not parse
            self._count(failed=True)
            log.error("scan %d from %s: could not start: %s", scan, peer, err or type(err).__name__)
            _fail(sock, f"adacsc external: could not start the scan: {err or type(err).__name__}")
            return
        log.info("scan %d from %s: started", scan, peer)
        try:
            self._target(connection)
        except Exception as err:
            self._count(failed=True)
            text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            log.error("scan %d from %s: gadget %s failed after %.2f s: %s", scan, peer, self.gadget,
                      time.perf_counter() - started, text)
            _fail(sock, f"adacsc external gadget {self.gadget}: {text}")
            return
        try:
            sock.settimeout(10.0)
            sock.sendall(_CLOSE)
        except OSError as err:
            log.warning("scan %d from %s: could not send CLOSE: %s", scan, peer, err)
        finally:
            sock.close()
        self._count(failed=False)
        log.info("scan %d from %s: done in %.2f s", scan, peer, time.perf_counter() - started)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="localhost",
                        help="address(es) to listen on (default localhost: 127.0.0.1 and ::1; '' for all)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"TCP port of the chain's <connect port=..> (default {DEFAULT_PORT}; 0: any free port)")
    parser.add_argument("--gadget", default=DEFAULT_GADGET, choices=sorted(gadget_names()),
                        help=f"the gadget this process runs (default {DEFAULT_GADGET})")
    parser.add_argument("--workers", type=int, default=2, help="scans served at once (default 2); others wait")
    parser.add_argument("--idle-timeout", type=float, default=1800.0,
                        help="seconds Gadgetron may stay silent in a scan before it is dropped (default 1800; 0: never)")
    parser.add_argument("--no-preload", action="store_true", help="load models on the first scan, not at start")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `external`."""
    parser = subparsers.add_parser(
        "external", help="serve one gadget to Gadgetron <connect> nodes, models loaded once",
        description=DESCRIPTION)
    _add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT."""
    server = ExternalServer(args.gadget, args.host, args.port, args.workers, args.idle_timeout,
                            preload=not args.no_preload)
    server.start()
    serve_until_signalled(server, lambda: len(server._running()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m adacsc.commands.external`: the same command without the `adacsc` front."""
    parser = argparse.ArgumentParser(prog="adacsc external", description=DESCRIPTION)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("ADACSC_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except (ValueError, OSError) as err:
        log.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
