"""adacsc.simulation.small_scan: the small synthetic scan the streaming tests and the server
benchmarks share, checked against its own description (header, readout order and flags, noise)."""

from pathlib import Path

import ismrmrd
import numpy as np
import pytest

from adacsc.io.dataset import InputScan
from adacsc.io.header import parse_header
from adacsc.mr.fft import ifftc
from adacsc.simulation.small_scan import write_small_scan


def test_header_readouts_and_flags_follow_the_description(tmp_path: Path) -> None:
    path = write_small_scan(tmp_path / "scan.h5", coils=3, lines=8, slices=2, noise=5, tr_ms=5.0)
    with InputScan(path) as scan:
        header = parse_header(scan.header_bytes())
        readouts = list(scan.acquisitions())
    encoding = header.encoding[0]
    assert (encoding.encodedSpace.matrixSize.x, encoding.encodedSpace.matrixSize.y) == (16, 8)
    assert (encoding.reconSpace.matrixSize.x, encoding.reconSpace.matrixSize.y) == (8, 8)
    assert header.acquisitionSystemInformation.receiverChannels == 3
    assert encoding.encodingLimits.slice.maximum == 1
    noise, imaging = readouts[:5], readouts[5:]
    assert all(r.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) for r in noise) and len(imaging) == 16
    assert [(r.idx.slice, r.idx.kspace_encode_step_1) for r in imaging] == [(s, k) for s in range(2) for k in range(8)]
    assert [r.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE) for r in imaging] == ([False] * 7 + [True]) * 2
    assert imaging[-1].is_flag_set(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    assert [r.scan_counter for r in readouts] == list(range(1, 22))
    assert np.diff([r.acquisition_time_stamp for r in imaging]).tolist() == [2] * 15  # 5 ms = 2 ticks
    assert all(r.data.shape == (3, 16) and r.center_sample == 8 for r in readouts)


def test_noise_readouts_are_unit_white_noise_and_kspace_noise_can_be_off(tmp_path: Path) -> None:
    noisy = write_small_scan(tmp_path / "noisy.h5", coils=2, lines=8, slices=1, noise=400, seed=1)
    with InputScan(noisy) as scan:
        samples = np.concatenate([r.data for r in scan.acquisitions()
                                  if r.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)], axis=1)
    assert np.cov(samples) == pytest.approx(np.eye(2), abs=0.05)
    clean = write_small_scan(tmp_path / "clean.h5", coils=2, lines=8, slices=1, noise=0, kspace_noise=0.0)
    with InputScan(clean) as scan:
        kspace = np.stack([r.data for r in scan.acquisitions()], axis=1)  # [coils, lines, samples]
    image = ifftc(kspace)
    assert np.abs(image[1]).max() == pytest.approx(1.2 * 5, rel=1e-5)  # coil 1's gain x slice 0's scale
    assert np.abs(image[0])[0, 0] == pytest.approx(0.0, abs=1e-5)  # the ellipse is off the corner
