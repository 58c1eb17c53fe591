"""What the two long-running servers (`adacsc serve`, `adacsc external`) share: listening
sockets, the accept loop, one thread per connection, at most `workers` connections served at
once, and a graceful stop (stop accepting, then let the subclass wind down its connections).

A subclass binds its sockets in `start()`, serves a connection in `_accepted()` (usually by
`_spawn`ing a thread that waits for a worker slot) and waits for or cancels the running ones in
`_after_stop()`. Stop and abort are driven by adacsc.server.signals.

What a server is doing can be waited on: `wait_until(predicate)` tests the predicate whenever a
connection or scan starts or ends (in-process callers, the tests); a supervisor process hears
of the same through adacsc.server.notify.
"""

import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from adacsc.server.notify import notify

log = logging.getLogger(__name__)

ACCEPT_POLL_S = 0.2
"""how often the accept loop looks at the stop flag"""
SLOT_POLL_S = 0.1
"""how often a connection waiting for a worker looks at the stop flag"""


def open_listeners(host: str, port: int, backlog: int = 16) -> list[socket.socket]:
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
            sock.listen(backlog)
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


def join_threads(threads: list[threading.Thread], timeout: float | None) -> int:
    """Join `threads` within `timeout` seconds in all (None: wait for each); how many are alive."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for thread in threads:
        thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
    return sum(thread.is_alive() for thread in threads)


class ConnectionServer:
    """The accept loop and connection threads of a server (see the module docstring)."""

    def __init__(self, workers: int) -> None:
        self._stop = threading.Event()
        self._listeners: list[socket.socket] = []
        self._slots = threading.BoundedSemaphore(max(1, workers))
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._changed = threading.Condition()
        self._stopped_at: float | None = None

    def start(self) -> "ConnectionServer":
        """Bind the listening sockets (and warm up); a subclass's job."""
        raise NotImplementedError

    def _accepted(self, sock: socket.socket, peer: str) -> None:
        """Serve one accepted connection (without blocking the accept loop)."""
        raise NotImplementedError

    def _after_stop(self) -> None:
        """Wind down the running connections once no more are accepted."""
        raise NotImplementedError

    def serve_forever(self) -> None:
        """Accept connections until `stop()`; then close the listeners and `_after_stop()`."""
        if not self._listeners:
            self.start()
        selector = selectors.DefaultSelector()
        for listener in self._listeners:
            listener.setblocking(False)
            selector.register(listener, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=ACCEPT_POLL_S):
                    try:
                        sock, address = key.fileobj.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as err:
                        if not self._stop.is_set():
                            log.warning("accept failed: %s", err)
                            time.sleep(0.05)  # e.g. out of file descriptors: do not spin
                        continue
                    sock.setblocking(True)
                    self._accepted(sock, f"{address[0]}:{address[1]}")
        finally:
            selector.close()
            for listener in self._listeners:
                listener.close()
            notify("STOPPING=1")
            self._after_stop()

    def stop(self) -> None:
        """Stop accepting; what happens to running connections is the subclass's `_after_stop`."""
        if self._stopped_at is None:  # no lock: a signal handler calls this
            self._stopped_at = time.monotonic()
        self._stop.set()

    def since_stop(self) -> float:
        """Seconds since the first stop() (0 before it): a grace period counts from there, not
        from the moment the accept loop notices."""
        return 0.0 if self._stopped_at is None else time.monotonic() - self._stopped_at

    @property
    def stopping(self) -> bool:
        """Whether stop() was called."""
        return self._stop.is_set()

    def wait_until(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait until `predicate()` holds, tested now and whenever a connection or a scan starts
        or ends (at most `timeout` seconds; None: no limit); whether it holds."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def _changed_now(self) -> None:
        """Something `wait_until` predicates may look at has changed: test them again."""
        with self._changed:
            self._changed.notify_all()

    def running_threads(self) -> list[threading.Thread]:
        """The threads serving (or waiting to serve) a connection."""
        with self._lock:
            return list(self._threads)

    def _spawn(self, target: Callable[..., None], args: tuple[Any, ...], name: str) -> None:
        """Run `target(*args)` on its own daemon thread, counted in running_threads() until it ends."""

        def run() -> None:
            try:
                target(*args)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())
                self._changed_now()

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()
        self._changed_now()

    def _wait_for_slot(self, timeout_s: float | None = None) -> bool:
        """Take a worker slot, waiting at most `timeout_s` (None: until stop()); False without one."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        acquired = False
        while not acquired and not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
            acquired = self._slots.acquire(timeout=SLOT_POLL_S)
        return acquired
