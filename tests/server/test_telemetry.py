"""The server's Prometheus metrics (read from its registry and over HTTP) and its /ready and
/live probes, in process. The same scenario against a real Prometheus: test_prometheus.py."""

import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adacsc.client import send_scan
from adacsc.server import Server, ServerSettings, SessionSettings
from adacsc.server.endpoints import serve_endpoints
from adacsc.simulation.small_scan import write_small_scan
from support.metrics_scenario import STAGES, run_ten_scans
from support.server import FRONTEND, threaded_server

pytestmark = pytest.mark.timeout(180)


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, from the Prometheus text format."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_every_metric_equals_what_ten_scans_did(tmp_path: Path) -> None:
    with threaded_server(workers=1, max_waiting=1) as running:
        registry = running.server.telemetry.registry
        with serve_endpoints(running.server, "127.0.0.1", 0, None) as (http,):
            expected = run_ten_scans(running.port, tmp_path, registry.get_sample_value, running.server.wait_until)
            running.report(9)
            status, text = get(http.port, "/metrics")
    assert status == 200
    found = samples(text)

    def value(name: str, **labels: str) -> float:
        return found[(name, tuple(sorted(labels.items())))]

    assert value("adacsc_sessions_started_total") == expected.started
    assert value("adacsc_sessions_finished_total") == expected.finished
    assert value("adacsc_sessions_failed_total", reason="error") == expected.failed
    assert value("adacsc_sessions_failed_total", reason="dropped") == 0
    assert value("adacsc_sessions_refused_total", reason="busy") == expected.refused_busy
    for reason in ("wait_timeout", "crowded", "header_timeout", "shutting_down"):
        assert value("adacsc_sessions_refused_total", reason=reason) == 0
    assert value("adacsc_readouts_total") == expected.readouts
    assert value("adacsc_noise_readouts_total") == expected.noise_readouts
    assert value("adacsc_images_sent_total") == expected.images
    assert value("adacsc_active_scans") == 0 and value("adacsc_waiting_connections") == 0
    assert value("adacsc_scan_budget_bytes_in_use") == 0
    for stage in STAGES:  # one observation per slice and stage
        assert value("adacsc_stage_latency_seconds_count", stage=stage) == expected.slices, stage
        assert value("adacsc_stage_latency_seconds_sum", stage=stage) > 0
    assert ("adacsc_stage_latency_seconds_count", (("stage", "noise_adjust"),)) not in found
    assert value("adacsc_slice_latency_seconds_count") == expected.slices
    # a slice's whole latency is at least that of its slowest stage
    assert value("adacsc_slice_latency_seconds_sum") >= value("adacsc_stage_latency_seconds_sum", stage="csc")


def test_the_budget_in_use_is_the_running_scans(tmp_path: Path) -> None:
    scan = write_small_scan(tmp_path / "scan.h5", lines=16, slices=2, noise=8)
    with threaded_server(workers=1) as running:
        telemetry = running.server.telemetry
        seen: list[float] = []
        client = threading.Thread(target=send_scan, args=(scan, None),
                                  kwargs={"port": running.port, "config_name": FRONTEND, "pace": "40"})
        client.start()
        while client.is_alive():
            seen.append(telemetry.registry.get_sample_value("adacsc_scan_budget_bytes_in_use"))
            client.join(0.02)
        running.report(1)
        assert max(seen) > 40 * 16 * 4 * 8  # some readouts of 4 coils x 32 complex64 samples were held
        assert telemetry.registry.get_sample_value("adacsc_scan_budget_bytes_in_use") == 0


def test_ready_only_between_start_and_stop_while_live_throughout() -> None:
    server = Server(ServerSettings(port=0, preload=False, session=SessionSettings(config_dirs=())))
    with serve_endpoints(server, "127.0.0.1", 0, 0) as (http,):
        assert get(http.port, "/ready") == (503, "starting\n")
        assert get(http.port, "/live")[0] == 200
        server.start()
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        assert get(http.port, "/ready") == (200, "ready\n")
        server.stop()
        assert get(http.port, "/ready") == (503, "stopping\n")
        assert get(http.port, "/live")[0] == 200
        thread.join(10)
        assert get(http.port, "/nothing")[0] == 404


def test_metrics_and_probes_on_separate_ports() -> None:
    server = Server(ServerSettings(port=0, preload=False, session=SessionSettings(config_dirs=())))
    with serve_endpoints(server, "127.0.0.1", 0, None) as (both,):
        assert get(both.port, "/metrics")[0] == 200 and get(both.port, "/live")[0] == 200
    with serve_endpoints(server, "127.0.0.1", None, None) as nothing:
        assert nothing == []
    metrics_port = _free_port()
    with serve_endpoints(server, "127.0.0.1", metrics_port, 0) as (metrics, probes):
        assert metrics.port == metrics_port and probes.port != metrics_port
        assert get(metrics.port, "/metrics")[0] == 200 and get(metrics.port, "/ready")[0] == 404
        assert get(probes.port, "/live")[0] == 200 and get(probes.port, "/metrics")[0] == 404


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
