"""The `adacsc serve` server: one thread per connection, at most `workers` scans running at once, a
connection taking a worker only once its config and header have arrived (within
`header_timeout_s`; a bounded number of connections may be that far at once), a
bounded number waiting for a slot (the rest are refused with a clear error), gadget modules and
torch imported once at start, graceful stop (stop accepting, let running scans finish for at most
`grace_s` seconds, then cancel the rest and say so, and return). The accept loop and connection
threads are adacsc.server.listener's, shared with `adacsc external`."""

import importlib
import itertools
import logging
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from adacsc import resources
from adacsc.chain.config import ChainError, parse_chain
from adacsc.gadgets import registry
from adacsc.server import protocol as proto
from adacsc.server.heap import collect_scan_garbage, freeze_start_up, release_free_memory
from adacsc.server.listener import ConnectionServer, join_threads
from adacsc.server.notify import PORT, notify, session_ended, session_started
from adacsc.server.opening import Opening, read_opening
from adacsc.server.refusal import refuse
from adacsc.server.request import config_name_warning
from adacsc.server.session import Session
from adacsc.server.session_report import SessionReport
from adacsc.server.session_settings import SessionSettings
from adacsc.server.telemetry import Telemetry

log = logging.getLogger(__name__)

REPORTS_KEPT = 100
"""session reports kept for inspection (the oldest go first; counts and metrics cover every
session): more would only add to the server's memory, about 1 KB of RSS a report (700 B of Python
objects, measured with benchmarks/bench_soak.py and tracemalloc)"""
CANCEL_WAIT_S = 0.5
"""after the grace period, how long cancelled scans get to send their error report and CLOSE"""
ABANDON_WAIT_S = 0.3
"""then, how long the connections still running get once their sockets are shut down"""


@dataclass(frozen=True)
class ServerSettings:
    """How the server listens and admits connections; `session` is what each scan gets."""

    host: str = "127.0.0.1"
    port: int = 9002
    workers: int = 4
    max_waiting: int | None = None
    """connections that may wait for a worker (default 4 x workers); more are refused at once"""
    wait_s: float = 120.0
    """how long a connection waits for a worker before it is refused"""
    header_timeout_s: float = 10.0
    """how long a connection may take to send its config and header; it holds no worker meanwhile"""
    max_opening: int = 256
    """connections that may be sending their config and header at once; more are refused at once"""
    extra_config_dirs: tuple[Path, ...] = ()
    allow_modules: tuple[str, ...] = ()
    """modules a client-sent chain XML may run besides adacsc.gadgets.* and the configured chains'"""
    preload: bool = True
    warm_up: bool = False
    """after preloading, run one warm-up solve (adacsc.server.warmup) before listening"""
    grace_s: float = 60.0
    """after stop(), how long running scans may take to finish before they are cancelled"""
    collect_garbage: bool = False
    """for a server that has its process to itself (`adacsc serve`): freeze the objects alive once
    it has started, and collect each scan's cyclic garbage as it ends (adacsc.server.heap)"""
    session: SessionSettings = field(default_factory=lambda: SessionSettings(config_dirs=()))


class Server(ConnectionServer):
    """`start()` binds and warms up, `serve_forever()` accepts until `stop()`, then waits for the
    running scans. Usable in a thread (tests) or as the `adacsc serve` main loop."""

    def __init__(self, settings: ServerSettings) -> None:
        super().__init__(settings.workers)
        self.settings = settings
        self._sessions: set[Session] = set()
        self._ids = itertools.count(1)
        self._waiting = 0
        self._opening: set[socket.socket] = set()
        self.reports: list[SessionReport] = []
        """the reports of the latest sessions (at most 2 x REPORTS_KEPT: a server runs for months)"""
        self.sessions_served = 0
        self.sessions_failed = 0
        self.session_settings: SessionSettings | None = None
        self.address: tuple[str, int] | None = None
        self.telemetry = Telemetry(active=lambda: len(self._sessions), waiting=lambda: self._waiting,
                                   budget_bytes=lambda: sum(session.budget_used for session in list(self._sessions)))

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self.address is None:
            raise RuntimeError("the server is not started")
        return self.address[1]

    # ---- start-up --------------------------------------------------------------------------

    def start(self) -> "Server":
        """Resolve folders, import the gadgets once, bind and listen."""
        dirs = tuple(resources.folders(resources.CONFIG, self.settings.extra_config_dirs))
        chain_modules = self._configured_modules(dirs)
        trusted = frozenset(chain_modules) | frozenset(self.settings.allow_modules)
        self.session_settings = replace(self.settings.session, config_dirs=dirs, trusted_modules=trusted,
                                        observer=self.telemetry)
        if self.settings.preload:
            self._preload(sorted(chain_modules))
        if self.settings.warm_up:
            from adacsc.server.warmup import warm_up

            warm_up(dirs, limits=replace(self.session_settings.scan_limits,
                                         max_scan_bytes=self.session_settings.max_scan_bytes))
        if self.settings.collect_garbage:
            freeze_start_up()
        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.settings.host, self.settings.port))
        listener.listen(64)
        self._listeners = [listener]
        self.address = listener.getsockname()[:2]
        log.info("listening on %s:%d (%d workers, config folders: %s)", self.address[0], self.address[1],
                 self.settings.workers, ", ".join(str(d) for d in dirs))
        notify("READY=1", f"STATUS=listening on {self.address[0]}:{self.address[1]}", f"{PORT}={self.address[1]}")
        return self

    @staticmethod
    def _configured_modules(dirs: tuple[Path, ...]) -> set[str]:
        """Modules named by the chain XMLs in the config folders (operator-provided, trusted)."""
        modules = set(registry.MODULES.values())
        for folder in dirs:
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.xml")):
                try:
                    modules.update(node.module for node in parse_chain(path.read_text(), path.stem).nodes)
                except (ChainError, OSError, UnicodeDecodeError) as err:
                    log.debug("config %s not usable here: %s", path, err)
        return modules

    @staticmethod
    def _preload(modules: list[str]) -> None:
        """Import torch and every gadget module now, once per process, so no scan pays for it.
        A registered gadget with a `preload` (e.g. to load its models) gets it called."""
        started = time.perf_counter()
        try:
            import torch  # noqa: F401  (the CSC core; importing takes seconds)
        except ImportError:
            log.info("torch is not installed: CSC gadgets will not run")
        loaded = []
        for name in modules:
            try:
                importlib.import_module(name)
            except ImportError as err:
                log.warning("gadget module %s not imported: %s", name, err)
                continue
            except Exception as err:
                log.warning("gadget module %s failed to import: %s", name, err)
                continue
            gadget = registry.by_module(name)
            if gadget is not None and gadget.preload is not None:
                try:
                    gadget.preload()
                except Exception as err:
                    log.warning("%s.preload() failed: %s", name, err)
            loaded.append(name)
        log.info("imported %d gadget modules in %.2f s: %s", len(loaded), time.perf_counter() - started,
                 ", ".join(loaded))

    # ---- serving ---------------------------------------------------------------------------

    def _accepted(self, sock: socket.socket, peer: str) -> None:
        with self._lock:  # stop() shuts down the opening sockets it finds under this lock
            stopping = self._stop.is_set()
            crowded = len(self._opening) >= self.settings.max_opening
            if not crowded and not stopping:
                self._opening.add(sock)
        if stopping:
            self.telemetry.refused("shutting_down")
            refuse(sock, "server shutting down", self.session_settings.error_format)
            return
        if crowded:
            log.warning("refusing %s: %d connections are still sending their header", peer, self.settings.max_opening)
            self.telemetry.refused("crowded")
            threading.Thread(target=refuse, args=(sock, "server busy: too many connections at once, try later",
                                                   self.session_settings.error_format), daemon=True).start()
            return
        self._spawn(self._open, (sock, peer), f"adacsc-conn-{peer}")

    def _open(self, sock: socket.socket, peer: str) -> None:
        """Read the config and header without a worker (bounded in time and bytes), then admit."""
        settings = self.session_settings
        assert settings is not None
        try:
            sock.settimeout(settings.io_timeout_s)
            opening = read_opening(sock, settings.limits, self.settings.header_timeout_s,
                                   settings.message_timeout_s, 4 * settings.limits.max_text_bytes,
                                   lambda message: self._answer_early(message, settings))
        except Exception:
            log.exception("connection %s failed", peer)
            sock.close()
            return
        finally:
            with self._lock:
                self._opening.discard(sock)
        if self._stop.is_set():
            self.telemetry.refused("shutting_down")
            refuse(sock, "server shutting down", settings.error_format)
        elif opening.timed_out:
            log.warning("refusing %s: %s", peer, opening.failure)
            self.telemetry.refused("header_timeout")
            refuse(sock, str(opening.failure), settings.error_format)
        else:
            self._admit(sock, peer, opening)

    @staticmethod
    def _answer_early(message: proto.Message, settings: SessionSettings) -> bytes | None:
        """The warning an unknown config name gets before the header (clients show it at once)."""
        if message.mid != proto.CONFIG_FILE or not message.payload:
            return None
        warning = config_name_warning(message.payload, settings.config_dirs)
        if warning is None:
            return None
        return proto.text_message(f"WARNING: {resources.without_folders(warning, settings.config_dirs)}")

    def _after_stop(self) -> None:
        self._drain()
        log.info("server stopped after %d sessions", self.sessions_served)

    def _drain(self) -> None:
        """Wait up to `grace_s` for the running connections; then cancel them, give them
        CANCEL_WAIT_S to tell their clients, drop those still running (a client that does not
        read, a gadget busy between cancellation points) and return within about a second.
        Every wait ends at a fixed time after the stop request, so time lost in between (a
        loaded machine) shortens the next wait instead of adding to the exit time."""
        running = self.running_threads()
        if running:
            log.info("stopping: waiting up to %g s for %d connection(s) to finish", self.settings.grace_s,
                     len(running))
        join_threads(running, max(0.0, self.settings.grace_s - self.since_stop()))
        with self._lock:
            sessions = list(self._sessions)
        if sessions:
            log.warning("grace period of %g s over: cancelling %d running scan(s)", self.settings.grace_s,
                        len(sessions))
            for session in sessions:
                session.cancel("the server is shutting down")
        if not join_threads(self.running_threads(), self._until_after_grace(CANCEL_WAIT_S)):
            return
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.abandon("the server is shutting down")
        left = join_threads(self.running_threads(), self._until_after_grace(CANCEL_WAIT_S + ABANDON_WAIT_S))
        if left:
            log.error("%d connection(s) did not stop after cancelling; exiting without them", left)

    def _until_after_grace(self, seconds: float) -> float:
        """Seconds left until `seconds` after the grace period's end (0 when past)."""
        return max(0.0, self.settings.grace_s + seconds - self.since_stop())

    def _admit(self, sock: socket.socket, peer: str, opening: Opening) -> None:
        limit = self.settings.max_waiting if self.settings.max_waiting is not None else 4 * self.settings.workers
        error_format = self.session_settings.error_format if self.session_settings else "text"
        acquired = self._slots.acquire(blocking=False)
        if not acquired:
            with self._lock:
                busy = self._waiting >= limit
                if not busy:
                    self._waiting += 1
            self._changed_now()
            if busy:
                log.warning("refusing %s: all %d workers busy and %d connections waiting", peer,
                            self.settings.workers, limit)
                self.telemetry.refused("busy")
                refuse(sock, "server busy: too many scans at once, try later", error_format)
                return
            log.info("%s waits for a free worker", peer)
        self._handle(sock, peer, acquired, opening)

    def _handle(self, sock: socket.socket, peer: str, acquired: bool, opening: Opening) -> None:
        assert self.session_settings is not None
        try:
            if not acquired:
                acquired = self._wait_for_slot(self.settings.wait_s)
                with self._lock:
                    self._waiting -= 1
                self._changed_now()
                if not acquired:
                    reason = ("server shutting down" if self._stop.is_set()
                              else f"server busy: no worker free within {self.settings.wait_s:g} s")
                    log.warning("refusing %s: %s", peer, reason)
                    self.telemetry.refused("shutting_down" if self._stop.is_set() else "wait_timeout")
                    refuse(sock, reason, self.session_settings.error_format)
                    return
            report = self._serve(sock, peer, opening)
            self.telemetry.session_ended(report)
            with self._lock:
                self.sessions_served += 1
                self.sessions_failed += not report.ok
                self.reports.append(report)
                if len(self.reports) > 2 * REPORTS_KEPT:
                    del self.reports[:REPORTS_KEPT]
            session_ended(report.session_id, report.ok)
            self._changed_now()
            if self.settings.collect_garbage:
                collect_scan_garbage()
            release_free_memory()
        except Exception:
            log.exception("connection %s failed", peer)
            refuse(sock, "internal server error (details in the server log)", self.session_settings.error_format)
        finally:
            if acquired:
                self._slots.release()

    def _serve(self, sock: socket.socket, peer: str, opening: Opening) -> SessionReport:
        """Run the connection's session (counted among the running ones meanwhile); its report.
        Nothing else refers to the session afterwards: what is left of it is garbage."""
        session = Session(sock, peer, next(self._ids), self.session_settings, opening)
        with self._lock:
            self._sessions.add(session)
        self.telemetry.session_started()
        session_started(session.report.session_id)
        self._changed_now()
        try:
            return session.run()
        finally:
            with self._lock:
                self._sessions.discard(session)

    def stop(self) -> None:
        """Stop accepting; running scans finish (within the grace period), waiting connections
        are refused."""
        if not self._stop.is_set():
            log.info("stop requested: no new connections; running scans finish within %g s", self.settings.grace_s)
        super().stop()
        with self._lock:
            opening = list(self._opening)
        for sock in opening:  # wakes their threads, which refuse them
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def abort(self) -> None:
        """Stop accepting and cancel every running scan now."""
        self.stop()
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.cancel("the server is shutting down")

    def active_sessions(self) -> int:
        """Connections being served or waiting."""
        return len(self.running_threads())

    def scans_running(self) -> int:
        """Connections holding a worker."""
        with self._lock:
            return len(self._sessions)
