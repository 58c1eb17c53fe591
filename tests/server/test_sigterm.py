"""`adacsc serve` as a process: gadgets imported at start, SIGTERM finishes the running scan."""

import signal
import socket
import threading
from pathlib import Path

import pytest

from adacsc.client import send_scan
from adacsc.server.notify import SESSION
from adacsc.simulation.small_scan import write_small_scan
from support.server import FRONTEND, start_server_process

pytestmark = pytest.mark.timeout(180)


def test_sigterm_stops_accepting_and_finishes_the_running_scan(tmp_path: Path) -> None:
    scan = write_small_scan(tmp_path / "scan.h5", lines=16, slices=2, noise=8)
    dictionaries = tmp_path / "dictionaries"
    dictionaries.mkdir()
    process, port, log_path, notes = start_server_process(tmp_path, "--workers", "2", "--dictionary-dir",
                                                          str(dictionaries))
    try:
        assert "imported" in log_path.read_text() and "adacsc.gadgets.coil_combination" in log_path.read_text()
        outcome = {}
        client = threading.Thread(target=lambda: outcome.update(result=send_scan(
            scan, tmp_path / "out.h5", port=port, config_name=FRONTEND, pace="20", timeout=60)))
        client.start()
        notes.wait(SESSION, "started", process=process)  # the scan is under way (paced: about 2 s in all)
        process.send_signal(signal.SIGTERM)
        notes.wait("STOPPING", "1", process=process)  # the listener is closed
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        assert client.is_alive(), "the scan should still be running"
        client.join(60)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    result = outcome["result"]
    assert result.ok and result.images == {"image_1": 2}
    log = log_path.read_text()
    assert f"dictionary folders for client-named dictionaries: {dictionaries}" in log
    assert "session 1 " in log and "ok" in log.split("session 1 ")[-1]
    assert "SIGTERM received" in log and "finished in" in log and "server stopped after" in log
