"""The Prometheus metrics of `adacsc serve` (prometheus-client), all in one registry per server.

  adacsc_sessions_started_total                 scans that got a worker
  adacsc_sessions_finished_total                scans that ended without an error
  adacsc_sessions_failed_total{reason}          scans that ended with one: error | dropped (client gone)
  adacsc_sessions_refused_total{reason}         connections refused before a scan started: busy (workers
                                                and waiting room full) | wait_timeout | crowded (too many
                                                connections sending their header) | header_timeout |
                                                shutting_down
  adacsc_active_scans                           scans being reconstructed now (the autoscaling metric)
  adacsc_waiting_connections                    connections waiting for a worker
  adacsc_scan_budget_bytes_in_use               bytes the running scans have received and allocated
  adacsc_readouts_total, adacsc_noise_readouts_total, adacsc_images_sent_total
  adacsc_stage_latency_seconds{stage}           per slice and chain node (adacsc.chain.timing)
  adacsc_slice_latency_seconds                  per slice: last readout in to first image out

Counters of a scan's readouts and images are added when the scan ends, from its report, so that
they always equal what the sessions report. The server calls this module; the core, the gadgets
and the chain know nothing of it (the chain reports latencies to a `ChainObserver`).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from adacsc.server.session import SessionReport

__all__ = ["Telemetry", "CONTENT_TYPE"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""seconds: from a buffer hand-off (milliseconds) to a large CSC slice on a loaded CPU (minutes)"""
REFUSALS = ("busy", "wait_timeout", "crowded", "header_timeout", "shutting_down")


class Telemetry:
    """The server's metrics; the gauges read the server's state when scraped."""

    def __init__(self, active: Callable[[], int], waiting: Callable[[], int], budget_bytes: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._started = Counter("adacsc_sessions_started", "Scans that got a worker", registry=r)
        self._finished = Counter("adacsc_sessions_finished", "Scans that ended without an error", registry=r)
        self._failed = Counter("adacsc_sessions_failed", "Scans that ended with an error or lost their client",
                               ["reason"], registry=r)
        self._refused = Counter("adacsc_sessions_refused", "Connections refused before their scan started",
                                ["reason"], registry=r)
        for reason in REFUSALS:
            self._refused.labels(reason)
        for reason in ("error", "dropped"):
            self._failed.labels(reason)
        self._readouts = Counter("adacsc_readouts", "Acquisitions received (noise readouts included)", registry=r)
        self._noise = Counter("adacsc_noise_readouts", "Noise readouts received", registry=r)
        self._images = Counter("adacsc_images_sent", "Images sent to clients", registry=r)
        Gauge("adacsc_active_scans", "Scans being reconstructed now", registry=r).set_function(active)
        Gauge("adacsc_waiting_connections", "Connections waiting for a worker", registry=r).set_function(waiting)
        Gauge("adacsc_scan_budget_bytes_in_use", "Bytes the running scans have received and allocated",
              registry=r).set_function(budget_bytes)
        self._stage = Histogram("adacsc_stage_latency_seconds", "Per slice: from its last item entering a chain "
                                "node to its first slice-level output", ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self._slice = Histogram("adacsc_slice_latency_seconds", "Per slice: from its last readout received to its "
                                "first image sent", buckets=LATENCY_BUCKETS, registry=r)

    # ---- what the server reports ---------------------------------------------------------------

    def refused(self, reason: str) -> None:
        """A connection was refused before its scan started (one of REFUSALS)."""
        self._refused.labels(reason).inc()

    def session_started(self) -> None:
        self._started.inc()

    def session_ended(self, report: SessionReport) -> None:
        """A scan ended: finished or failed, and what it received and sent."""
        if report.ok:
            self._finished.inc()
        else:
            self._failed.labels("dropped" if report.dropped is not None else "error").inc()
        self._readouts.inc(report.acquisitions)
        self._noise.inc(report.noise_readouts)
        self._images.inc(sum(report.images_sent.values()))

    # ---- what the chain reports (adacsc.chain.timing.ChainObserver) -------------------------------

    def stage_latency(self, stage: str, seconds: float) -> None:
        self._stage.labels(stage).observe(seconds)

    def slice_latency(self, seconds: float) -> None:
        self._slice.observe(seconds)

    # ---- exposition --------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The metrics in Prometheus's text format."""
        return generate_latest(self.registry)
