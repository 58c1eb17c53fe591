"""Readout oversampling removal and accumulation of readouts into k-space buffers.

Combines what Gadgetron's RemoveROOversamplingGadget, AcquisitionAccumulateTriggerGadget and
BucketToBufferGadget do for Cartesian scans (2-D multi-slice and 3-D): every readout is classified
and placed by adacsc.io.readouts, and accumulated by adacsc.io.kspace_buffers into one buffer per
slice, contrast, phase, repetition and set, with averages along N and calibration-only lines in
the ReconBit's reference buffer. A buffer is sent as a ReconData when complete and, for buffers
still open when the stream ends, at the end. The scan's tally names every readout class: used for
the image, used for calibration, or left out with the reason.

The header's matrix and coils are checked against the operator's limits (adacsc.limits) before
any buffer exists, and every buffer is charged to the scan's budget before it is allocated and
released when it is freed downstream; while the budget is full, the next buffer waits (up to
MEMORY_WAIT_S) for the gadgets downstream to free theirs.
"""

import logging
from dataclasses import dataclass
from typing import Any

import ismrmrd
import numpy as np
from gadgetron.types.recon_data import ReconBit, ReconBuffer, ReconData, SamplingDescription

from adacsc.gadgets.contract import Connection, Gadget
from adacsc.gadgets.properties import setting
from adacsc.io import header as hdr
from adacsc.io.kspace_buffers import Filled, KSpaceAccumulator
from adacsc.limits import check_encoding
from adacsc.mr.oversampling import remove_readout_oversampling
from adacsc.scan_context import ScanContext

log = logging.getLogger(__name__)

MEMORY_WAIT_S = 30.0
"""how long a new buffer waits for the scan's budget to have room before the scan fails"""

@dataclass(frozen=True)
class Settings:
    """The gadget's properties."""

    remove_oversampling: bool = setting(True, "crop the readout to the recon field of view when encoded x "
                                        "exceeds recon x")


class Accumulator:
    """Sorts readouts into per-image buffers and turns complete buffers into ReconData."""

    def __init__(self, header: Any, remove_oversampling: bool, scan: ScanContext | None = None) -> None:
        self.scan = scan if scan is not None else ScanContext()
        self.limits = self.scan.limits
        check_encoding(header, self.limits)
        self.budget = self.scan.budget
        self.encoding = hdr.encoding(header)
        encoded_x, recon_x = self.encoding.encoded_matrix[0], self.encoding.recon_matrix[0]
        self.crop_factor = recon_x / encoded_x if remove_oversampling and encoded_x > recon_x else 1.0
        self.kspace = KSpaceAccumulator(self.encoding, self.budget.charge, self.limits.max_channels,
                                        f"${self.limits.variable('max_channels')}", self._allocate)
        self.tally = self.kspace.tally

    def add(self, acquisition: ismrmrd.Acquisition) -> ReconData | None:
        """File one readout; returns a ReconData when it completes its image."""
        filled = self.kspace.add(acquisition)
        return None if filled is None else self._recon_data(filled)

    def add_all(self, acquisition: ismrmrd.Acquisition) -> list[ReconData]:
        """File one readout; a ReconData for every image it completes (io.kspace_buffers.add_all)."""
        return [self._recon_data(filled) for filled in self.kspace.add_all(acquisition)]

    def flush(self) -> list[ReconData]:
        """At the end of the stream: emit buffers whose image never completed."""
        return [self._recon_data(filled) for filled in self.kspace.flush()]

    def _allocate(self, shape: tuple[int, ...], what: str) -> np.ndarray:
        """A k-space buffer charged to the scan's budget (waiting while it is full) until freed."""
        return self.budget.allocate(shape, np.complex64, what, self.scan.stop_or_after(MEMORY_WAIT_S))

    def _crop(self, data: np.ndarray) -> np.ndarray:
        """Remove readout oversampling along axis 0 (contiguous, charged to the budget until freed)."""
        if self.crop_factor == 1.0:
            return data
        readout = int(round(data.shape[0] * self.crop_factor))
        nbytes = 8 * readout * int(np.prod(data.shape[1:]))
        with self.budget.reserve(4 * data.nbytes, "the oversampling removal of a k-space buffer"):
            self.budget.charge(nbytes, "a k-space buffer without readout oversampling")
            cropped = remove_readout_oversampling(np.moveaxis(data, 0, -1), readout)
            return self.budget.hold(np.ascontiguousarray(np.moveaxis(cropped, -1, 0)), nbytes)

    def _recon_data(self, filled: Filled) -> ReconData:
        data = self._crop(filled.data)
        reference = None
        if filled.calibration is not None and filled.calibration_headers is not None:
            reference = _recon_buffer(self._crop(filled.calibration)[..., None], filled.calibration_headers[..., None],
                                      self.encoding, self.crop_factor)
        return ReconData([ReconBit(_recon_buffer(data, filled.headers, self.encoding, self.crop_factor), reference)])


def _recon_buffer(data: np.ndarray, acquired: np.ndarray, encoding: hdr.Encoding, crop_factor: float) -> ReconBuffer:
    """Gadgetron's ReconBuffer layout [RO, E1, E2, CHA, N, S, LOC] from data [RO, E1, E2, CHA, N] and
    headers [E1, E2, N] (None where nothing was acquired)."""
    readout, lines, partitions, channels, averages = data.shape
    data = np.ascontiguousarray(data.reshape(readout, lines, partitions, channels, averages, 1, 1),
                                dtype=np.complex64)
    headers = np.empty((lines, partitions, averages, 1, 1), dtype=object)
    for index in np.ndindex(lines, partitions, averages):
        header = acquired[index]
        headers[index + (0, 0)] = header if header is not None else ismrmrd.AcquisitionHeader()
    sampling = SamplingDescription()
    fov_x, fov_y, fov_z = encoding.encoded_fov_mm
    sampling.encoded_FOV[:] = (fov_x * crop_factor, fov_y, fov_z)
    sampling.recon_FOV[:] = encoding.recon_fov_mm
    sampling.encoded_matrix[:] = (readout, lines, partitions)
    sampling.recon_matrix[:] = encoding.recon_matrix
    limits = sampling.sampling_limits
    limits[0].min, limits[0].center, limits[0].max = 0, readout // 2, readout - 1
    for axis, (low, centre, high), size in ((1, encoding.e1_limits, lines), (2, encoding.e2_limits, partitions)):
        offset = size // 2 - centre if size > 1 or axis == 1 else 0
        limits[axis].min, limits[axis].center, limits[axis].max = low + offset, centre + offset, high + offset
    return ReconBuffer(data, None, None, headers, sampling)


def run(connection: Connection, settings: Settings, scan: ScanContext) -> None:
    """Acquisitions in, one ReconData per completed slice out; other items pass on."""
    accumulator = Accumulator(connection.header, settings.remove_oversampling, scan)
    connection.filter(ismrmrd.Acquisition)
    for item in connection:
        for complete in accumulator.add_all(item):
            connection.send(complete)
    for complete in accumulator.flush():
        connection.send(complete)
    accumulator.tally.report()


GADGET = Gadget("readout_buffer", Settings, run)


def readout_buffer(connection: Any) -> None:
    """Gadgetron `<execute>` entry: the gadget under the limits of the node's environment."""
    GADGET.gadgetron_entry(connection)
