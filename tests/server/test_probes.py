"""`adacsc serve` as a process, as Kubernetes sees it: /ready is 503 until the warm-up solve has
run and from SIGTERM on; /live answers throughout; the scan running at SIGTERM is not lost."""

import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from adacsc.client import send_scan
from adacsc.server.notify import HTTP_PORT, PORT, SESSION
from adacsc.simulation.small_scan import write_small_scan
from support.server import FRONTEND, Notifications

pytestmark = pytest.mark.timeout(240)


def status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status
    except urllib.error.HTTPError as err:
        return err.code


def test_ready_after_the_warm_up_and_not_while_draining(tmp_path: Path) -> None:
    scan = write_small_scan(tmp_path / "scan.h5", lines=16, slices=2, noise=8)
    log_path = tmp_path / "server.log"
    notes = Notifications()
    with open(log_path, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "adacsc", "serve", "--port", "0", "--metrics-port", "0",
                                    "--workers", "1", "--slice-workers", "1", "--grace", "60"],
                                   stdout=out, stderr=subprocess.STDOUT, env=notes.environment())
    try:
        http = int(notes.wait(HTTP_PORT, process=process))
        assert status(http, "/live") == 200
        assert status(http, "/ready") == 503  # the warm-up solve runs before the server listens
        port = int(notes.wait(PORT, timeout=180, process=process))
        assert status(http, "/ready") == 200
        log = log_path.read_text()
        assert re.search(r"warm-up solve: chain adacsc_lowfield, 1 slice\(s\) of lowfield_0055T_FSE\.h5, 3 outputs",
                         log), log

        outcome = {}
        client = threading.Thread(target=lambda: outcome.update(result=send_scan(
            scan, tmp_path / "out.h5", port=port, config_name=FRONTEND, pace="15", timeout=60)))
        client.start()
        notes.wait(SESSION, "started", process=process)
        process.send_signal(signal.SIGTERM)
        notes.wait("STOPPING", process=process)
        assert status(http, "/ready") == 503
        draining = client.is_alive()
        assert status(http, "/live") == 200
        client.join(60)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert draining, "the scan should still have been running during the drain"
    result = outcome["result"]
    assert result.ok and result.images == {"image_1": 2}  # no scan lost
    assert "SIGTERM received" in log_path.read_text()
