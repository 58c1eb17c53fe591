"""A scan's memory is bounded by its budget (issue 19, items 1-2): every allocation charged
before it is made and released when freed; the CSC grid refused from the header."""

import gc
import threading
import tracemalloc
from pathlib import Path

import ismrmrd
import numpy as np
import pytest

from adacsc.client import send_scan
from adacsc.io.header_builder import build_header, cartesian_readout, write_ismrmrd
from adacsc.limits import LimitError, ScanBudget
from support.server import FRONTEND, threaded_server

pytestmark = pytest.mark.timeout(180)
MiB = 1 << 20


def test_allocations_are_charged_before_and_released_when_freed():
    budget = ScanBudget(10 * MiB)
    array = budget.allocate((MiB,), np.complex64, "a buffer")
    assert budget.used == 8 * MiB
    with pytest.raises(LimitError, match="a second buffer needs 8388608 bytes"):
        budget.allocate((MiB,), np.complex64, "a second buffer")
    view = array[::2]
    del array
    gc.collect()
    assert budget.used == 8 * MiB  # a view keeps the buffer alive, and charged
    del view
    gc.collect()
    assert budget.used == 0 and budget.peak == 8 * MiB
    with budget.reserve(6 * MiB, "working memory"):
        assert budget.used == 6 * MiB
    assert budget.used == 0


def test_a_charge_with_a_stop_test_waits_for_memory_to_be_freed():
    budget = ScanBudget(10 * MiB)
    first = budget.allocate((MiB,), np.complex64, "the first buffer")
    freed = threading.Event()
    holder = [first]
    del first
    threading.Timer(0.2, lambda: (freed.set(), holder.clear())).start()
    second = budget.allocate((MiB,), np.complex64, "the second buffer", stop=lambda: False)
    assert freed.is_set() and budget.used == 8 * MiB
    with pytest.raises(LimitError, match="stopped waiting"):
        budget.charge(4 * MiB, "more", stop=lambda: True)
    with pytest.raises(LimitError, match="exceeds the scan limit"):
        budget.charge(11 * MiB, "too much for any wait", stop=lambda: False)
    del second


def _one_readout_per_slice(path: Path, matrix: int, slices: int) -> Path:
    """A header of `matrix` x `matrix` and one readout per slice: tiny input, large output."""
    header = build_header(field_T=0.055, coil_names=["c0"], encoded_matrix=(matrix, matrix, 1),
                          encoded_fov_mm=(200, 200, 5), recon_matrix=(matrix, matrix, 1), recon_fov_mm=(200, 200, 5),
                          n_lines=matrix, n_slices=slices, measurement_id=f"one_readout_{matrix}_{slices}")
    readouts = [cartesian_readout(np.ones((1, matrix), np.complex64), line=matrix // 2, slice_index=s,
                                  sample_time_us=10.0, flags=[ismrmrd.ACQ_LAST_IN_SLICE]) for s in range(slices)]
    return write_ismrmrd(path, header, readouts)


def test_amplified_output_stays_within_the_scan_budget(tmp_path):
    """One readout per slice of a 1024 x 1024 header: every slice becomes an 8 MiB buffer, an
    FFT and an 8 MiB image. With a 128 MiB budget the scan completes (buffers wait for the
    images downstream to be sent and freed) and the memory the scan's arrays took at once
    stays within the budget and a margin for uncharged copies."""
    scan = _one_readout_per_slice(tmp_path / "amplify.h5", 1024, 24)
    budget = 128 * MiB
    with threaded_server(workers=1, max_scan_bytes=budget) as running:
        tracemalloc.start()
        try:
            result = send_scan(scan, tmp_path / "out.h5", port=running.port, config_name=FRONTEND,
                               overrides={"output": "images"}, timeout=120)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result.ok, result.errors
    assert result.images == {"image_1": 24}
    # the client's copies of the images it writes count here too: two images' worth of margin
    print(f"traced peak {peak / MiB:.0f} MiB")
    assert peak < budget + 32 * MiB, peak / MiB


def test_the_csc_grid_is_refused_from_the_header_naming_the_property(tmp_path):
    scan = _one_readout_per_slice(tmp_path / "grid.h5", 1024, 2)
    with threaded_server(workers=1, max_scan_bytes=2 << 30) as running:
        result = send_scan(scan, tmp_path / "out.h5", port=running.port, config_name="adacsc_lowfield",
                           overrides={"super_resolution": "4"}, timeout=60)
    assert not result.ok
    errors = " ".join(result.errors + result.texts)
    assert "csc.super_resolution = 4" in errors and "4096x4096 grid" in errors and "GiB" in errors, errors
