"""`adacsc serve` exits within its grace period and a second after SIGTERM, even while cancelled
scans still have slices winding down on the slice pool (issue 19, item 15).

The server's own figure (its log: from its SIGTERM handler to the call that ends the process) is
held to grace + 1 s exactly. The test's wall clock from sending SIGTERM to the process being reaped
adds the signal's delivery and the process's teardown, which a loaded machine (shared CI cores)
stretches by tenths of a second; it is held to that figure plus a second, which still catches an
exit that waits for the cancelled slices (seconds, the issue's 7.6-8.3 s at a 5 s grace)."""

import re
import signal
import threading
import time
from pathlib import Path

import pytest

from adacsc.client import send_scan
from adacsc.server.notify import SESSION
from adacsc.simulation.small_scan import write_small_scan
from support.server import start_server_process

pytestmark = pytest.mark.timeout(180)

EXIT_LINE = re.compile(r"exiting (\d+\.\d+) s after the stop request")


def test_the_server_exits_within_grace_plus_one_second(tmp_path: Path) -> None:
    scan = write_small_scan(tmp_path / "scan.h5", lines=64, slices=4, noise=8)
    grace = 2.0
    process, port, log_path, notes = start_server_process(tmp_path, "--workers", "2", "--grace", str(grace),
                                                          "--metrics-port", "0")  # its endpoint stops too
    clients = [threading.Thread(target=send_scan, args=(scan, tmp_path / f"o{i}.h5"), daemon=True,
                                kwargs=dict(port=port, config_name="adacsc_lowfield", overrides={"iterations": "500"},
                                            timeout=120)) for i in range(3)]
    try:
        for client in clients:
            client.start()
        notes.wait(SESSION, "started", count=2, process=process)  # both workers busy, the third scan waits
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        elapsed = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = log_path.read_text()
    assert process.returncode == 0 and "grace period of 2 s over: cancelling 2 running scan(s)" in log
    exit_line = EXIT_LINE.search(log)
    assert exit_line, log[-3000:]
    own = float(exit_line[1])
    assert grace <= own < grace + 1.0, (own, log[-3000:])
    assert elapsed < own + 1.0, (elapsed, own, log[-3000:])
