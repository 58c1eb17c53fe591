"""Readout oversampling removal and accumulation of readouts into k-space buffers.

Combines what Gadgetron's RemoveROOversamplingGadget, AcquisitionAccumulateTriggerGadget and
BucketToBufferGadget do for 2-D Cartesian scans: one `ReconData` per slice and repetition,
emitted when its last readout arrives (ACQ_LAST_IN_SLICE) and, for buffers still open when the
stream ends, at the end (logged as incomplete). Every readout is either used or counted as
dropped with a reason (readouts with NaN or infinite samples are dropped too).

The header's matrix and coils are checked against the operator's limits (adacsc.limits) before
any buffer exists, and every buffer is charged to the scan's budget before it is allocated and
released when it is freed downstream; while the budget is full, the next buffer waits (up to
MEMORY_WAIT_S) for the gadgets downstream to free theirs.
"""

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import ismrmrd
import numpy as np
from gadgetron.types.recon_data import ReconBit, ReconBuffer, ReconData, SamplingDescription

from adacsc.core import cancel
from adacsc.gadgets.properties import Property, PropertySpec, parse_bool, read_properties
from adacsc.io import header as hdr
from adacsc.limits import ScanBudget, ScanLimits, check_encoding
from adacsc.mr.oversampling import remove_readout_oversampling

log = logging.getLogger(__name__)

MEMORY_WAIT_S = 30.0
"""how long a new buffer waits for the scan's budget to have room before the scan fails"""

SPEC = PropertySpec("readout_buffer", (
    Property("remove_oversampling", parse_bool, True,
             "crop the readout to the recon field of view when encoded x exceeds recon x"),
))


@dataclass
class _Buffer:
    """The readouts of one slice (and repetition) being accumulated."""

    data: np.ndarray  # [RO, E1, CHA]
    headers: list[ismrmrd.AcquisitionHeader | None]
    lines: int = 0


@dataclass
class Tally:
    """What happened to every readout of the stream."""

    used: int = 0
    dropped: Counter = field(default_factory=Counter)

    def drop(self, reason: str, acquisition: ismrmrd.Acquisition) -> None:
        """Count a dropped readout and log why (first occurrence of each reason as a warning)."""
        if not self.dropped[reason]:
            log.warning("dropping readout %d: %s", acquisition.scan_counter, reason)
        self.dropped[reason] += 1

    def report(self) -> None:
        """Log the account of all readouts."""
        dropped = sum(self.dropped.values())
        details = "; ".join(f"{n} {reason}" for reason, n in self.dropped.items())
        (log.warning if dropped else log.info)(
            "readouts used: %d, dropped: %d%s", self.used, dropped, f" ({details})" if details else "")


class Accumulator:
    """Sorts readouts into per-slice buffers and turns complete buffers into ReconData."""

    def __init__(self, header: Any, remove_oversampling: bool, budget: ScanBudget | None = None) -> None:
        self.limits = ScanLimits.from_environment()
        check_encoding(header, self.limits)
        self.budget = budget if budget is not None else ScanBudget(self.limits.max_scan_bytes)
        self.encoding = hdr.encoding(header)
        encoded_x, recon_x = self.encoding.encoded_matrix[0], self.encoding.recon_matrix[0]
        self.crop_factor = recon_x / encoded_x if remove_oversampling and encoded_x > recon_x else 1.0
        self.lines = self.encoding.encoded_matrix[1]
        self.buffers: dict[tuple[int, int], _Buffer] = {}
        self.tally = Tally()
        self.channels: int | None = None

    def add(self, acquisition: ismrmrd.Acquisition) -> ReconData | None:
        """File one readout; returns a ReconData when it completes its slice."""
        reason = self._rejection(acquisition)
        if reason:
            self.tally.drop(reason, acquisition)
            return None
        data = acquisition.data
        key = (acquisition.idx.slice, acquisition.idx.repetition)
        buffer = self.buffers.get(key)
        if buffer is None:
            shape = (data.shape[1], self.lines, data.shape[0])
            buffer = _Buffer(self.budget.allocate(shape, np.complex64, f"the k-space buffer of slice {key[0]} "
                                                  f"repetition {key[1]} ({shape[0]} samples x {shape[1]} lines x "
                                                  f"{shape[2]} channels)", cancel.stop_or_after(MEMORY_WAIT_S)),
                             [None] * self.lines)
            self.buffers[key] = buffer
        if buffer.data.shape[0] != data.shape[1]:
            self.tally.drop(f"readout length {data.shape[1]} differs from the slice's {buffer.data.shape[0]}", acquisition)
            return None
        line = acquisition.idx.kspace_encode_step_1
        if buffer.headers[line] is None:
            buffer.lines += 1
        buffer.data[:, line, :] = data.T
        buffer.headers[line] = acquisition.getHead()
        self.tally.used += 1
        if acquisition.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE):
            return self._emit(key)
        return None

    def _rejection(self, acquisition: ismrmrd.Acquisition) -> str | None:
        """Why a readout cannot be used, or None."""
        if acquisition.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            return "noise readout reached the buffer (no noise adjustment in front)"
        if acquisition.active_channels == 0 or acquisition.number_of_samples == 0:
            return "readout without channels or samples"
        if acquisition.active_channels > self.limits.max_channels:
            return (f"{acquisition.active_channels} channels exceed the operator limit of {self.limits.max_channels} "
                    f"(${self.limits.variable('max_channels')})")
        if self.channels is None:
            self.channels = acquisition.active_channels
        elif acquisition.active_channels != self.channels:
            return f"{acquisition.active_channels} channels where the scan has {self.channels}"
        if not 0 <= acquisition.idx.kspace_encode_step_1 < self.lines:
            return f"phase-encode index outside the encoded matrix (0..{self.lines - 1})"
        if not np.isfinite(acquisition.data).all():
            return "NaN or infinite samples"
        return None

    def _emit(self, key: tuple[int, int]) -> ReconData:
        buffer = self.buffers.pop(key)
        if buffer.lines < self.lines:
            log.info("slice %d repetition %d: %d of %d phase-encode lines acquired", key[0], key[1],
                     buffer.lines, self.lines)
        if self.crop_factor != 1.0:
            readout = int(round(buffer.data.shape[0] * self.crop_factor))
            nbytes = 8 * readout * int(np.prod(buffer.data.shape[1:]))
            with self.budget.reserve(4 * buffer.data.nbytes, f"the oversampling removal of slice {key[0]} "
                                                             f"repetition {key[1]}"):
                self.budget.charge(nbytes, f"the cropped k-space of slice {key[0]} repetition {key[1]}")
                cropped = remove_readout_oversampling(np.moveaxis(buffer.data, 0, -1), readout)
                buffer.data = self.budget.hold(np.ascontiguousarray(np.moveaxis(cropped, -1, 0)), nbytes)
        return _recon_data(buffer, self.encoding, self.crop_factor)

    def flush(self) -> list[ReconData]:
        """At the end of the stream: emit buffers whose slice never completed."""
        for key, buffer in self.buffers.items():
            log.warning("stream ended before slice %d repetition %d was complete (%d of %d lines): "
                        "reconstructing what was acquired", key[0], key[1], buffer.lines, self.lines)
        return [self._emit(key) for key in list(self.buffers)]


def _recon_data(buffer: _Buffer, encoding: hdr.Encoding, crop_factor: float) -> ReconData:
    """Wrap a filled buffer in Gadgetron's ReconData layout [RO, E1, E2, CHA, N, S, LOC]."""
    readout, lines, channels = buffer.data.shape
    data = np.ascontiguousarray(buffer.data.reshape(readout, lines, 1, channels, 1, 1, 1), dtype=np.complex64)
    headers = np.empty((lines, 1, 1, 1, 1), dtype=object)
    for line, acquired in enumerate(buffer.headers):
        headers[line, 0, 0, 0, 0] = acquired if acquired is not None else ismrmrd.AcquisitionHeader()
    sampling = SamplingDescription()
    fov_x, fov_y, fov_z = encoding.encoded_fov_mm
    sampling.encoded_FOV[:] = (fov_x * crop_factor, fov_y, fov_z)
    sampling.recon_FOV[:] = encoding.recon_fov_mm
    sampling.encoded_matrix[:] = (readout, lines, 1)
    sampling.recon_matrix[:] = encoding.recon_matrix
    e1_min, e1_centre, e1_max = encoding.e1_limits
    sampling.sampling_limits[0].min, sampling.sampling_limits[0].center, sampling.sampling_limits[0].max = \
        0, readout // 2, readout - 1
    sampling.sampling_limits[1].min, sampling.sampling_limits[1].center, sampling.sampling_limits[1].max = \
        e1_min, e1_centre, e1_max
    return ReconData([ReconBit(ReconBuffer(data, None, None, headers, sampling))])


def readout_buffer(connection: Any) -> None:
    """Gadget: Acquisitions in, one ReconData per completed slice out; other items pass on."""
    props = read_properties(connection, SPEC)
    accumulator = Accumulator(connection.header, props["remove_oversampling"], getattr(connection, "budget", None))
    connection.filter(ismrmrd.Acquisition)
    for item in connection:
        complete = accumulator.add(item)
        if complete is not None:
            connection.send(complete)
    for complete in accumulator.flush():
        connection.send(complete)
    accumulator.tally.report()
