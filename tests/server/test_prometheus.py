"""A real Prometheus (Debian package `prometheus`) scrapes `adacsc serve`'s metrics on loopback
while ten scans run (one refused, one failed); its HTTP API must then give counters equal to
what the test did and one latency observation per slice and stage."""

import json
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from support.metrics_scenario import STAGES, run_ten_scans
from support.server import threaded_server
from adacsc.server.endpoints import serve_endpoints
from adacsc.server.telemetry import REFUSALS

PROMETHEUS = shutil.which("prometheus")
pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(PROMETHEUS is None, reason="the prometheus binary is absent (Debian package "
                                                            "`prometheus`; .ci/run installs it)")]
SCRAPE_S = 0.2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api(port: int, query: str) -> dict[tuple, float]:
    """An instant query: labels (without __name__) -> value."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as reply:
        answer = json.load(reply)
    assert answer["status"] == "success", answer
    return {tuple(sorted((k, v) for k, v in r["metric"].items() if k not in ("__name__", "instance", "job"))):
            float(r["value"][1]) for r in answer["data"]["result"]}


def start_prometheus(tmp_path: Path, target_port: int) -> tuple[subprocess.Popen, int, Path]:
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""global:
  scrape_interval: {int(SCRAPE_S * 1000)}ms
  scrape_timeout: {int(SCRAPE_S * 1000)}ms
scrape_configs:
  - job_name: adacsc
    static_configs:
      - targets: ["127.0.0.1:{target_port}"]
""")
    log_path = tmp_path / "prometheus.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                    f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                                   stdout=log, stderr=subprocess.STDOUT)
    return process, port, log_path


def test_prometheus_scrapes_exact_counters_while_ten_scans_run(tmp_path: Path) -> None:
    with threaded_server(workers=1, max_waiting=1) as running, \
            serve_endpoints(running.server, "127.0.0.1", 0, None) as (http,):
        prometheus, port, log_path = start_prometheus(tmp_path, http.port)
        try:
            # Prometheus has stored a scrape once it fetches the next: the scans are seen from the start
            assert http.wait_for_scrapes(2, 60), log_path.read_text()[-2000:]
            assert api(port, "up") == {(): 1.0}, log_path.read_text()[-2000:]
            expected = run_ten_scans(running.port, tmp_path, running.server.telemetry.registry.get_sample_value,
                                     running.server.wait_until)
            running.report(9)
            wanted = {
                "adacsc_sessions_started_total": {(): expected.started},
                "adacsc_sessions_finished_total": {(): expected.finished},
                "adacsc_sessions_failed_total": {(("reason", "dropped"),): 0, (("reason", "error"),): expected.failed},
                "adacsc_sessions_refused_total": {(("reason", reason),): expected.refused_busy if reason == "busy"
                                                  else 0 for reason in REFUSALS},
                "adacsc_readouts_total": {(): expected.readouts},
                "adacsc_noise_readouts_total": {(): expected.noise_readouts},
                "adacsc_images_sent_total": {(): expected.images},
                "adacsc_slice_latency_seconds_count": {(): expected.slices},
                "adacsc_stage_latency_seconds_count": {(("stage", stage),): expected.slices for stage in STAGES},
                "adacsc_active_scans": {(): 0},
                "adacsc_waiting_connections": {(): 0},
                "adacsc_scan_budget_bytes_in_use": {(): 0},
            }
            # a scrape that began after the last scan, stored before the one after it began
            assert http.wait_for_scrapes(http.scrapes + 3, 30)
            found = {name: api(port, name) for name in wanted}
            assert found == wanted
            # the scans were seen while they ran: a scrape caught a busy worker
            seen_active = api(port, "max_over_time(adacsc_active_scans[5m])")
            assert seen_active == {(): 1.0}
            stages = api(port, "sum by (stage) (adacsc_stage_latency_seconds_sum)")
            assert set(stages) == {(("stage", stage),) for stage in STAGES} and all(v > 0 for v in stages.values())
        finally:
            prometheus.terminate()
            prometheus.wait(30)
