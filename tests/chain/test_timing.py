"""adacsc.chain.timing: one latency per slice and stage, from the slice's last item in to its first
slice-level item out, through a real chain."""

from pathlib import Path

import ismrmrd
import numpy as np

from adacsc.chain.config import load_chain
from adacsc.chain.runner import Chain
from adacsc.chain.timing import SliceClock, slice_of
from adacsc.io.dataset import InputScan
from adacsc.simulation.small_scan import write_small_scan
from support.server import FRONTEND


class Recorder:
    def __init__(self) -> None:
        self.stages: dict[str, list[float]] = {}
        self.slices: list[float] = []

    def stage_latency(self, stage: str, seconds: float) -> None:
        self.stages.setdefault(stage, []).append(seconds)

    def slice_latency(self, seconds: float) -> None:
        self.slices.append(seconds)


def test_a_chain_reports_one_latency_per_slice_and_stage(tmp_path: Path) -> None:
    scan = write_small_scan(tmp_path / "scan.h5", lines=16, slices=3, noise=8)
    recorder = Recorder()
    outputs = []
    with InputScan(scan) as data:
        chain = Chain(load_chain(FRONTEND), data.header_bytes(), outputs.append, strict=False,
                      observer=recorder).start()
        for acquisition in data.acquisitions():
            chain.push(acquisition)
        chain.close()
    assert sum(isinstance(item, ismrmrd.Image) for item in outputs) == 3  # (and the noise report waveform)
    assert sorted(recorder.stages) == ["coil_combination", "readout_buffer"]  # noise_adjust sends readouts
    assert all(len(times) == 3 and min(times) >= 0 for times in recorder.stages.values())
    assert len(recorder.slices) == 3
    for index in range(3):  # the whole chain takes at least its stages' time for each slice
        assert recorder.slices[index] >= recorder.stages["coil_combination"][index]


def test_only_the_first_output_of_a_slice_is_timed_and_noise_is_not_a_slice() -> None:
    seen = []
    clock = SliceClock(seen.append)
    noise = ismrmrd.Acquisition.from_array(np.zeros((1, 4), np.complex64))
    noise.setFlag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    assert slice_of(noise) is None
    readout = ismrmrd.Acquisition.from_array(np.zeros((1, 4), np.complex64))
    readout.idx.slice = 2
    clock.entered(readout)
    image = ismrmrd.Image.from_array(np.zeros((1, 1, 4, 4), np.float32), transpose=False)
    image.slice = 2
    clock.left(readout)  # a readout leaving is not a slice output
    assert seen == []
    clock.left(image)
    clock.left(image)  # a second series of the same slice
    assert len(seen) == 1 and seen[0] >= 0
    other = ismrmrd.Image.from_array(np.zeros((1, 1, 4, 4), np.float32), transpose=False)
    other.slice = 5
    clock.left(other)  # never entered: nothing to time
    assert len(seen) == 1
