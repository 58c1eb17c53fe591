"""The HTTP side of `adacsc serve`: Prometheus metrics at /metrics, and the probes an orchestrator
(Kubernetes) asks before sending scans and while a pod drains.

  /ready   200 once the server listens, which is after the gadgets, weights and dictionaries
           have loaded and the warm-up solve has run; 503 before, and from the moment a stop
           (SIGTERM) begins, so that no new scan is routed to a draining server.
  /live    200 while the process serves HTTP (also during start-up and the drain): a process
           that no longer answers is restarted.
  /metrics adacsc.server.telemetry's registry.

Metrics and probes may share one port or use two; each runs a small threaded HTTP server.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from adacsc.server.notify import HTTP_PORT, notify
from adacsc.server.server import Server
from adacsc.server.telemetry import CONTENT_TYPE

__all__ = ["Endpoints", "serve_endpoints"]

log = logging.getLogger(__name__)

PROBES = ("/ready", "/live")
SHUTDOWN_POLL_S = 0.05
"""how often an endpoint's loop looks for a shutdown request: stopping it waits up to this long
(http.server's default, 0.5 s, took half of the second the server has to exit after its grace)"""


def ready(server: Server) -> bool:
    """Whether scans may be sent: listening (so warmed up) and not stopping."""
    return server.address is not None and not server.stopping


class Endpoints(ThreadingHTTPServer):
    """One port serving some of /metrics, /ready and /live for `server`."""

    daemon_threads = True

    def __init__(self, host: str, port: int, server: Server, paths: tuple[str, ...]) -> None:
        self.scan_server = server
        self.paths = paths
        self.scrapes = 0
        """how often /metrics has been served"""
        self._scraped = threading.Condition()
        super().__init__((host, port), _Handler)

    def scraped(self) -> None:
        """/metrics has been served once more."""
        with self._scraped:
            self.scrapes += 1
            self._scraped.notify_all()

    def wait_for_scrapes(self, count: int, timeout: float | None = None) -> bool:
        """Wait until /metrics has been served `count` times in all (at most `timeout` s):
        whether it has. A scraper that has fetched twice has stored the first fetch."""
        with self._scraped:
            return self._scraped.wait_for(lambda: self.scrapes >= count, timeout)

    @property
    def port(self) -> int:
        return self.server_address[1]


class _Handler(BaseHTTPRequestHandler):
    server: Endpoints

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path not in self.server.paths:
            self._reply(404, b"not found\n")
        elif path == "/metrics":
            self._reply(200, self.server.scan_server.telemetry.exposition(), CONTENT_TYPE)
            self.server.scraped()
        elif path == "/live":
            self._reply(200, b"alive\n")
        elif ready(self.server.scan_server):
            self._reply(200, b"ready\n")
        else:
            self._reply(503, b"stopping\n" if self.server.scan_server.stopping else b"starting\n")

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
        log.debug("%s %s", self.address_string(), format % args)


@contextlib.contextmanager
def serve_endpoints(server: Server, host: str, metrics_port: int | None,
                    health_port: int | None) -> Iterator[list[Endpoints]]:
    """Serve /metrics on `metrics_port` and the probes on `health_port` (None: the metrics port;
    both None: nothing) in background threads for the duration of the block."""
    health_port = metrics_port if health_port is None else health_port
    wanted: dict[int, tuple[str, ...]] = {}
    if metrics_port is not None:
        wanted[metrics_port] = ("/metrics",)
    if health_port is not None:
        wanted[health_port] = wanted.get(health_port, ()) + PROBES
    running: list[Endpoints] = []
    try:
        for port, paths in wanted.items():
            endpoints = Endpoints(host, port, server, paths)
            running.append(endpoints)
            threading.Thread(target=endpoints.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL_S},
                             name=f"adacsc-http-{endpoints.port}", daemon=True).start()
            log.info("serving %s on http://%s:%d", ", ".join(paths), host, endpoints.port)
            notify(f"{HTTP_PORT}={endpoints.port}")
        yield running
    finally:
        for endpoints in running:
            endpoints.shutdown()
            endpoints.server_close()
