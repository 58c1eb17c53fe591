"""The per-scan context (adacsc.scan_context): what its host puts in it is what the gadgets use,
whatever the process environment says; its stop test, bounded waits and warning relay."""

import logging
import threading
import time
from pathlib import Path

import pytest

from adacsc.chain.config import load_chain
from adacsc.chain.runner import Chain, NodeFailure
from adacsc.io.dataset import InputScan
from adacsc.limits import GiB, ScanBudget, ScanLimits
from adacsc.scan_context import ScanContext
from adacsc.simulation.small_scan import write_small_scan
from support.server import FRONTEND

LIMIT_VARIABLES = ("ADACSC_MAX_MATRIX", "ADACSC_MAX_CHANNELS", "ADACSC_MAX_ITERATIONS", "ADACSC_MAX_SCAN_GB")


@pytest.fixture
def no_limits_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in LIMIT_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _run(scan: Path, chain_name: str, context: ScanContext | None, **overrides: str) -> list[object]:
    outputs: list[object] = []
    chain = load_chain(chain_name).with_overrides(overrides) if overrides else load_chain(chain_name)
    with InputScan(scan) as data:
        running = Chain(chain, data.header_bytes(), outputs.append, strict=False, scan=context).start()
        for acquisition in data.acquisitions():
            running.push(acquisition)
        running.close()
    return outputs


def test_the_matrix_limit_of_the_context_is_what_the_buffer_enforces(tmp_path, no_limits_in_the_environment):
    scan = write_small_scan(tmp_path / "scan.h5", coils=2, lines=16, slices=1, noise=4)
    with pytest.raises(NodeFailure, match=r"readout_buffer.*matrixSize.x = 32 exceeds the operator limit of 16"):
        _run(scan, FRONTEND, ScanContext(ScanLimits(max_matrix=16)))


def test_the_iteration_limit_of_the_context_is_what_the_csc_gadget_enforces(tmp_path, no_limits_in_the_environment):
    scan = write_small_scan(tmp_path / "scan.h5", coils=2, lines=16, slices=1, noise=4)
    with pytest.raises(NodeFailure, match=r"csc: property iterations='50': exceeds the operator limit of 10"):
        _run(scan, "adacsc_lowfield", ScanContext(ScanLimits(max_iterations=10)), iterations="50")


def test_gadgets_ignore_limits_in_the_environment_when_their_host_gives_a_context(tmp_path, monkeypatch):
    scan = write_small_scan(tmp_path / "scan.h5", coils=2, lines=16, slices=1, noise=4)
    monkeypatch.setenv("ADACSC_MAX_MATRIX", "16")
    monkeypatch.setenv("ADACSC_MAX_SCAN_GB", "0.000001")
    outputs = _run(scan, FRONTEND, ScanContext())
    assert sum(type(item).__name__ == "Image" for item in outputs) == 1


def test_the_budget_of_the_context_is_what_the_gadgets_charge(tmp_path, no_limits_in_the_environment):
    scan = write_small_scan(tmp_path / "scan.h5", coils=2, lines=16, slices=1, noise=4)
    budget = ScanBudget(1 * GiB)
    _run(scan, FRONTEND, ScanContext(budget=budget))
    one_buffer = 8 * 32 * 16 * 2  # complex64 readouts x lines x coils
    assert budget.peak >= one_buffer
    with pytest.raises(NodeFailure, match="exceeds the scan limit of 1000 bytes"):
        _run(scan, FRONTEND, ScanContext(budget=ScanBudget(1000)))


def test_without_a_context_the_chain_takes_the_limits_of_the_environment(tmp_path, monkeypatch):
    """Offline replay: the chain runner is the host and reads the operator's variables."""
    scan = write_small_scan(tmp_path / "scan.h5", coils=2, lines=16, slices=1, noise=4)
    monkeypatch.setenv("ADACSC_MAX_MATRIX", "16")
    with pytest.raises(NodeFailure, match="exceeds the operator limit of 16"):
        _run(scan, FRONTEND, None)


def test_from_environment_reads_the_operator_variables(monkeypatch):
    monkeypatch.setenv("ADACSC_MAX_ITERATIONS", "7")
    monkeypatch.setenv("ADACSC_MAX_SCAN_GB", "2")
    context = ScanContext.from_environment()
    assert context.limits.max_iterations == 7 and context.budget.limit == 2 * GiB
    assert context.limits.max_matrix == ScanLimits().max_matrix


def test_each_context_has_its_own_budget_of_the_limits_size():
    first, second = ScanContext(ScanLimits(max_scan_bytes=5000)), ScanContext(ScanLimits(max_scan_bytes=5000))
    assert first.budget is not second.budget and first.budget.limit == 5000
    first.budget.charge(4000, "a buffer")
    assert second.budget.used == 0


def test_a_chain_stops_its_scan_when_cancelled_or_when_its_host_says_so(tmp_path):
    scan = write_small_scan(tmp_path / "scan.h5", coils=2, lines=16, slices=1, noise=4)
    with InputScan(scan) as data:
        header = data.header_bytes()
    host_says_stop = threading.Event()
    context = ScanContext(stop=host_says_stop.is_set)
    chain = Chain(load_chain(FRONTEND), header, lambda item: None, scan=context)
    assert not chain.scan.stopping() and chain.scan.budget is context.budget
    host_says_stop.set()
    assert chain.scan.stopping()
    host_says_stop.clear()
    chain.cancel("the client is gone")
    assert chain.scan.stopping() and not context.stopping()


def test_a_bounded_wait_ends_when_the_scan_stops_or_the_time_is_up():
    stop = threading.Event()
    context = ScanContext(stop=stop.is_set)
    wait = context.stop_or_after(60)
    assert not wait()
    stop.set()
    assert wait()
    expired = ScanContext().stop_or_after(0.01)
    time.sleep(0.02)  # the deadline itself is under test
    assert expired()


def test_warnings_logged_on_the_scans_thread_reach_its_reader_and_no_one_elses():
    heard: list[str] = []
    logger = logging.getLogger("adacsc.gadgets.test")
    before = list(logging.getLogger("adacsc").handlers)
    context = ScanContext(warn=heard.append)
    with context.relaying_warnings():
        logger.warning("slice %d: odd", 3)
        logger.info("not a warning")
        other = threading.Thread(target=logger.warning, args=("another scan's warning",))
        other.start()
        other.join()
    logger.warning("after the scan")
    assert heard == ["slice 3: odd"]
    assert logging.getLogger("adacsc").handlers == before


def test_a_chain_relays_its_gadgets_warnings_to_the_context(tmp_path, no_limits_in_the_environment):
    scan = write_small_scan(tmp_path / "scan.h5", coils=2, lines=16, slices=1, noise=4)
    heard: list[str] = []
    outputs: list[object] = []
    with InputScan(scan) as data:
        chain = Chain(load_chain(FRONTEND), data.header_bytes(), outputs.append, strict=False,
                      scan=ScanContext(warn=heard.append)).start()
        for acquisition in list(data.acquisitions())[:12]:  # the stream ends before the slice is complete
            chain.push(acquisition)
        chain.close()
    assert any("stream ended before" in text for text in heard), heard
