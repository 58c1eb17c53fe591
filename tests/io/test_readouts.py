"""Readout classification, placement on the encoded grid and accumulation per image
(adacsc.io.readouts, adacsc.io.kspace_buffers), on hand-built readouts with known answers."""

import logging

import ismrmrd
import numpy as np
import pytest

from adacsc.io.header import Encoding
from adacsc.io.kspace_buffers import KSpaceAccumulator
from adacsc.io.readouts import (
    CALIBRATION,
    CALIBRATION_AND_IMAGING,
    IMAGING,
    NAVIGATION,
    USED_FOR_CALIBRATION,
    USED_FOR_IMAGE,
    Grid,
    Unplaceable,
    classify,
)


def readout(samples: int = 16, channels: int = 2, line: int = 0, flags: tuple[int, ...] = (),
            centre: int | None = None, value: complex | None = None, **idx: int) -> ismrmrd.Acquisition:
    data = (np.arange(channels * samples).reshape(channels, samples) + 1j).astype(np.complex64)
    if value is not None:
        data[:] = value
    acquisition = ismrmrd.Acquisition.from_array(data)
    acquisition.center_sample = samples // 2 if centre is None else centre
    acquisition.idx.kspace_encode_step_1 = line
    for name, number in idx.items():
        setattr(acquisition.idx, name, number)
    for flag in flags:
        acquisition.set_flag(flag)
    return acquisition


def encoding(readout_samples: int = 16, lines: int = 8, partitions: int = 1, e1=None, e2=None,
             averages: int = 1) -> Encoding:
    return Encoding((readout_samples, lines, partitions), (readout_samples, lines, partitions), (200.0, 200.0, 5.0),
                    (200.0, 200.0, 5.0), e1 or (0, lines // 2, lines - 1),
                    e2 or (0, partitions // 2, partitions - 1), averages)


@pytest.mark.parametrize("flag, kind", [
    (ismrmrd.ACQ_IS_NOISE_MEASUREMENT, "noise"), (ismrmrd.ACQ_IS_NAVIGATION_DATA, NAVIGATION),
    (ismrmrd.ACQ_IS_PHASECORR_DATA, "phase correction"), (ismrmrd.ACQ_IS_DUMMYSCAN_DATA, "dummy scan"),
    (ismrmrd.ACQ_IS_RTFEEDBACK_DATA, "RT feedback"), (ismrmrd.ACQ_IS_HPFEEDBACK_DATA, "HP feedback"),
    (ismrmrd.ACQ_IS_PARALLEL_CALIBRATION, CALIBRATION),
    (ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING, CALIBRATION_AND_IMAGING), (ismrmrd.ACQ_IS_REVERSE, IMAGING),
])
def test_every_class_is_named(flag: int, kind: str) -> None:
    found, reason = classify(readout(flags=(flag,)))
    assert found == kind
    assert (reason is None) == (kind in (CALIBRATION, CALIBRATION_AND_IMAGING, IMAGING))


def test_a_reversed_readout_is_flipped_and_an_asymmetric_echo_is_placed_by_its_centre() -> None:
    grid = Grid.from_encoding(encoding(readout_samples=16))
    forward = readout(samples=16)
    reversed_ = readout(samples=16, flags=(ismrmrd.ACQ_IS_REVERSE,))
    reversed_.data[:] = forward.data[:, ::-1]
    assert np.array_equal(grid.place(reversed_, 16).samples, forward.data)
    echo = readout(samples=12, centre=4)  # early samples missing: centre 4 of 12 goes to sample 8 of 16
    placed = grid.place(echo, 16).samples
    assert np.array_equal(placed[:, 4:], echo.data) and not placed[:, :4].any()
    with pytest.raises(Unplaceable, match="center_sample 11 does not fit"):
        grid.place(readout(samples=12, centre=11), 16)


def test_partial_fourier_lines_are_placed_by_the_limits_centre() -> None:
    # 6 of 8 lines acquired, indexed 0..5 with the centre at 2: line 2 belongs at matrix centre 4
    grid = Grid.from_encoding(encoding(lines=8, e1=(0, 2, 5)))
    assert grid.place(readout(line=2), 16).e1 == 4 and grid.place(readout(line=0), 16).e1 == 2
    with pytest.raises(Unplaceable, match="kspace_encode_step_1 6 beyond the encoding limits 0..5"):
        grid.place(readout(line=6), 16)
    space = readout(line=1)
    space.encoding_space_ref = 1
    with pytest.raises(Unplaceable, match="encoding space 1"):
        grid.place(space, 16)
    with pytest.raises(Unplaceable, match="kspace_encode_step_2 3 falls outside the encoded matrix of 1"):
        grid.place(readout(line=1, kspace_encode_step_2=3), 16)


def scan(accumulator: KSpaceAccumulator, readouts: list[ismrmrd.Acquisition]) -> list:
    return [filled for filled in map(accumulator.add, readouts) if filled is not None] + accumulator.flush()


@pytest.mark.parametrize("loop", ["inner", "outer"])
def test_averages_are_kept_per_line_and_complete_in_either_loop_order(loop: str) -> None:
    charged = []
    accumulator = KSpaceAccumulator(encoding(lines=4, averages=3), lambda n, what: charged.append((n, what)), 8)
    order = ([(line, a) for line in range(4) for a in range(3)] if loop == "inner"
             else [(line, a) for a in range(3) for line in range(4)])
    readouts = [readout(line=line, average=a, value=a + 1,
                        flags=(ismrmrd.ACQ_LAST_IN_SLICE,) if line == 3 else ()) for line, a in order]
    completed = [accumulator.add(r) for r in readouts]
    assert all(c is None for c in completed[:-1]) and completed[-1] is not None
    filled = completed[-1]
    assert filled.data.shape == (16, 4, 1, 2, 3) and filled.acquired.all()
    assert np.allclose(filled.data[..., 2], 3)
    assert charged == [(8 * 16 * 4 * 2 * 3, "the k-space buffer of slice 0 repetition 0 "
                                            "(16 samples x 4 lines x 2 channels x 3 averages)")]
    assert accumulator.tally.count(USED_FOR_IMAGE) == 12 and accumulator.tally.left_out == 0


def test_averages_innermost_complete_on_the_slices_last_readout_alone() -> None:
    accumulator = KSpaceAccumulator(encoding(lines=2, averages=3), lambda n, what: None, 8)
    readouts = [readout(line=line, average=a, flags=(ismrmrd.ACQ_LAST_IN_SLICE,) if (line, a) == (1, 2) else ())
                for line in range(2) for a in range(3)]
    completed = [accumulator.add(r) for r in readouts]
    assert all(c is None for c in completed[:-1]) and completed[-1].acquired.all()


def test_missing_averages_are_reconstructed_at_the_end_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    accumulator = KSpaceAccumulator(encoding(lines=4, averages=2), lambda n, what: None, 8)
    with caplog.at_level(logging.WARNING):
        filled = scan(accumulator, [readout(line=line, flags=(ismrmrd.ACQ_LAST_IN_SLICE,) if line == 3 else ())
                                    for line in range(4)])
    assert len(filled) == 1 and filled[0].acquired[..., 0].all() and not filled[0].acquired[..., 1].any()
    assert "averages 1 never arrived" in caplog.text


def test_contrasts_and_repetitions_are_separate_images_and_extras_are_left_out_by_name() -> None:
    accumulator = KSpaceAccumulator(encoding(lines=2), lambda n, what: None, 8)
    readouts = [readout(flags=(ismrmrd.ACQ_IS_NAVIGATION_DATA,))]
    for repetition in range(2):
        for line in range(2):
            for contrast in range(2):
                readouts.append(readout(line=line, contrast=contrast, repetition=repetition,
                                        flags=(ismrmrd.ACQ_LAST_IN_SLICE,) if line == 1 else ()))
    readouts.append(readout(line=1, flags=(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION,), repetition=2))
    filled = scan(accumulator, readouts)
    assert [(f.key.contrast, f.key.repetition) for f in filled] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    tally = accumulator.tally
    assert tally.count(USED_FOR_IMAGE) == 8 and tally.count(USED_FOR_CALIBRATION) == 1
    assert tally.count(kind=NAVIGATION) == 1 and tally.left_out == 1
    assert any(line.startswith("1 navigator: left out (navigators are not image data") for line in tally.lines())


def test_a_repeated_line_is_counted_as_replaced_not_hidden() -> None:
    accumulator = KSpaceAccumulator(encoding(lines=2), lambda n, what: None, 8)
    filled = scan(accumulator, [readout(line=0, value=1), readout(line=0, value=2), readout(line=1)])
    assert np.allclose(filled[0].data[:, 0], 2)
    assert accumulator.tally.count(USED_FOR_IMAGE) == 2 and accumulator.tally.left_out == 1
    assert "replaced by a later readout" in " ".join(accumulator.tally.lines())


def test_a_3d_volume_is_charged_before_it_is_allocated() -> None:
    def refuse(nbytes: int, what: str) -> None:
        raise MemoryError(f"{what}: {nbytes}")

    accumulator = KSpaceAccumulator(encoding(lines=4, partitions=8), refuse, 8)
    with pytest.raises(MemoryError, match=r"16 samples x 4 lines x 8 partitions x 2 channels\): 8192"):
        accumulator.add(readout(line=0, kspace_encode_step_2=3))


def test_calibration_lines_first_with_their_own_length_do_not_set_the_image_readout() -> None:
    accumulator = KSpaceAccumulator(encoding(readout_samples=16, lines=2), lambda n, what: None, 8)
    filled = scan(accumulator, [readout(samples=12, centre=6, line=1, flags=(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION,)),
                                readout(samples=16, line=0), readout(samples=16, line=1)])
    assert accumulator.tally.left_out == 0 and filled[0].acquired.all()
    assert np.array_equal(filled[0].calibration[2:14, 1, 0, :].T, readout(samples=12, centre=6).data)


def test_one_last_in_slice_on_the_last_echo_completes_every_contrast_of_the_slice() -> None:
    accumulator = KSpaceAccumulator(Encoding((16, 2, 1), (16, 2, 1), (200.0, 200.0, 5.0), (200.0, 200.0, 5.0),
                                             (0, 1, 1), contrasts=3), lambda n, what: None, 8)
    completed = []
    for line in range(2):
        for contrast in range(3):
            last = (line, contrast) == (1, 2)
            completed.append(accumulator.add_all(readout(line=line, contrast=contrast,
                                                         flags=(ismrmrd.ACQ_LAST_IN_SLICE,) if last else ())))
    assert all(not c for c in completed[:-1])
    assert [f.key.contrast for f in completed[-1]] == [0, 1, 2] and all(f.acquired.all() for f in completed[-1])
    assert not accumulator.buffers
