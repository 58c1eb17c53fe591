"""Ten scans against one server with one worker and room for one waiting connection, for the
metrics tests: eight reconstructed (one of them after waiting for the worker), one refused (the
worker is busy and the waiting room full) and one failed (it names a chain that does not exist),
with the counts every metric must then show."""

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from adacsc.client import SendResult, send_scan
from adacsc.simulation.small_scan import write_small_scan

CHAIN = "adacsc_lowfield"
FAST = {"mode": "scalar", "iterations": "2"}
"""the default chain, CSC included, at test speed"""
SLICES = 2
STAGES = ("readout_buffer", "coil_combination", "csc")
"""the nodes whose outputs are slices; noise_adjust passes readouts on and is not timed"""


@dataclass(frozen=True)
class Expected:
    """What the metrics must say after `run_ten_scans`."""

    started: int
    finished: int
    failed: int
    refused_busy: int
    readouts: int
    noise_readouts: int
    images: int
    slices: int


def run_ten_scans(port: int, tmp_path: Path, gauge: Callable[[str], float],
                  wait_until: Callable[[Callable[[], bool], float], bool]) -> Expected:
    """The scenario against a server with one worker and one waiting place (`gauge(name)` reads
    one of its gauges now; `wait_until(predicate, timeout)` is the server's, which tests the
    predicate whenever a connection or scan starts or ends). Asserts what each client saw;
    returns the expected metrics."""
    noise, lines = 8, 16
    scan = write_small_scan(tmp_path / "scan.h5", lines=lines, slices=SLICES, noise=noise)
    per_scan = noise + SLICES * lines
    concurrent: dict[str, SendResult] = {}
    first = threading.Thread(target=lambda: concurrent.update(first=send_scan(
        scan, None, port=port, config_name=CHAIN, overrides=FAST, pace="20", timeout=60)))
    first.start()
    assert wait_until(lambda: gauge("adacsc_active_scans") == 1, 30), "the first scan never ran"
    second = threading.Thread(target=lambda: concurrent.update(second=send_scan(
        scan, None, port=port, config_name=CHAIN, overrides=FAST, timeout=60)))
    second.start()
    assert wait_until(lambda: gauge("adacsc_waiting_connections") == 1, 30), "the second scan never waited"
    refused = send_scan(scan, None, port=port, config_name=CHAIN, overrides=FAST, timeout=30)
    assert not refused.ok and any("server busy" in error for error in refused.errors), refused.errors
    first.join(60)
    second.join(60)
    results = [concurrent["first"], concurrent["second"]]
    failed = send_scan(scan, None, port=port, config_name="no_such_chain", timeout=30)
    assert not failed.ok and any("no_such_chain" in error for error in failed.errors), failed.errors
    for _ in range(6):
        results.append(send_scan(scan, None, port=port, config_name=CHAIN, overrides=FAST, timeout=60))
    assert all(result.ok for result in results), [result.errors for result in results]
    assert all(result.acquisitions == per_scan for result in results)
    return Expected(started=9, finished=8, failed=1, refused_busy=1, readouts=8 * per_scan,
                    noise_readouts=8 * noise, images=sum(sum(r.images.values()) for r in results),
                    slices=8 * SLICES)
