"""Accumulating a scan's readouts into one k-space buffer per image, keyed on every ISMRMRD counter.

One buffer per (slice, contrast, phase, repetition, set): those give separate images. Segments are
merged (a segment is a subset of lines). Averages stay apart inside the buffer, as Gadgetron's
BucketToBuffer does with N_dimension=average: data [RO, E1, E2, CHA, A] with the header of every
acquired (line, partition, average), so the coil combination can take each line's mean over the
averages that were acquired (or keep them apart) and knows how many went into each line.

A buffer is complete when ACQ_LAST_IN_SLICE comes with the last average the header declares
(encodingLimits.average) or has come in each of them, whichever loop order the scan used (averages
innermost: the slice's last readout is of the last average; outermost: each pass ends the slice);
the slice's last readout in the last declared contrast also completes its other contrasts; buffers
still open when the stream ends are returned by `flush` (with a warning when lines or averages are
missing).
Calibration-only readouts fill a separate calibration buffer [RO, E1, E2, CHA] of the same image.

Every readout is accounted for in the `Tally` (adacsc.io.readouts); each buffer is charged to the
scan's budget (a callable) before it is allocated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import ismrmrd
import numpy as np

from adacsc.io.header import Encoding
from adacsc.io.readouts import (
    CALIBRATION,
    USED_FOR_CALIBRATION,
    Grid,
    Tally,
    Unplaceable,
    classify,
)

log = logging.getLogger(__name__)

_INDICES = ("slice", "contrast", "phase", "repetition", "set")


@dataclass(frozen=True, order=True)
class ImageKey:
    """The counters that give a separate image (average and segment do not)."""

    slice: int = 0
    contrast: int = 0
    phase: int = 0
    repetition: int = 0
    set: int = 0

    @classmethod
    def of(cls, acquisition: ismrmrd.Acquisition) -> ImageKey:
        return cls(*(int(getattr(acquisition.idx, name)) for name in _INDICES))

    def describe(self) -> str:
        """'slice 0 repetition 1', plus every other counter that is not 0."""
        parts = [f"slice {self.slice}", f"repetition {self.repetition}"]
        parts += [f"{name} {getattr(self, name)}" for name in ("contrast", "phase", "set") if getattr(self, name)]
        return " ".join(parts)


@dataclass
class Filled:
    """One image's k-space: data [RO, E1, E2, CHA, A] and headers [E1, E2, A] (None where not
    acquired); the calibration-only lines in the same layout without A, if any."""

    key: ImageKey
    data: np.ndarray
    headers: np.ndarray
    calibration: np.ndarray | None = None
    calibration_headers: np.ndarray | None = None

    @property
    def acquired(self) -> np.ndarray:
        """bool [E1, E2, A]: which (line, partition, average) holds a readout."""
        return np.vectorize(lambda h: h is not None, otypes=[bool])(self.headers)


@dataclass
class _Buffer:
    key: ImageKey
    samples: int | None
    """the length of the image's readouts, set by its first imaging readout"""
    data: np.ndarray
    headers: np.ndarray
    finished_averages: set[int] = field(default_factory=set)
    calibration: np.ndarray | None = None
    calibration_headers: np.ndarray | None = None
    calibration_samples: int | None = None

    def filled(self) -> Filled:
        return Filled(self.key, self.data, self.headers, self.calibration, self.calibration_headers)


class KSpaceAccumulator:
    """Sorts classified, placed readouts into per-image buffers; returns each buffer once complete."""

    def __init__(self, encoding: Encoding, charge: Callable[[int, str], None], max_channels: int,
                 channel_limit_name: str = "the operator limit",
                 allocate: Callable[[tuple[int, ...], str], np.ndarray] | None = None) -> None:
        self.grid = Grid.from_encoding(encoding)
        self.averages = encoding.averages
        self.contrasts = encoding.contrasts
        self.charge = charge
        self.allocate = allocate
        """makes a zeroed complex64 buffer charged to the scan (and released when freed) instead
        of `charge` followed by np.zeros"""
        self.max_channels = max_channels
        self.channel_limit_name = channel_limit_name
        self.buffers: dict[ImageKey, _Buffer] = {}
        self.tally = Tally()
        self.channels: int | None = None

    def add(self, acquisition: ismrmrd.Acquisition) -> Filled | None:
        """File one readout; the image's k-space when this readout completes it."""
        kind, reason = classify(acquisition)
        reason = reason or self._rejection(acquisition)
        if reason:
            self.tally.leave_out(kind, reason, acquisition.scan_counter)
            return None
        key = ImageKey.of(acquisition)
        average = int(acquisition.idx.average)
        try:
            if average >= self.averages:
                raise Unplaceable(f"average {average} beyond the encoding limits (the header declares "
                                  f"{self.averages} average(s))")
            buffer = self.buffers.get(key) or self._new_buffer(key, acquisition)
            if kind == CALIBRATION:
                self._calibrate(buffer, acquisition)
            else:
                self._image(buffer, acquisition, average, kind)
        except Unplaceable as err:
            self.tally.leave_out(kind, str(err), acquisition.scan_counter)
            return None
        if acquisition.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE) and kind != CALIBRATION:
            buffer.finished_averages.add(average)
            if average == self.averages - 1 or len(buffer.finished_averages) >= self.averages:
                return self._take(key)
        return None

    def add_all(self, acquisition: ismrmrd.Acquisition) -> list[Filled]:
        """File one readout; every image it completes: its own and, when it ends the slice in the
        last declared contrast, the slice's other contrasts still open (a scan that flags
        ACQ_LAST_IN_SLICE once, on the last echo of the last line)."""
        filled = self.add(acquisition)
        if filled is None:
            return []
        completed = [filled]
        if self.contrasts > 1 and filled.key.contrast == self.contrasts - 1:
            siblings = [key for key in self.buffers if key.contrast < filled.key.contrast
                        and replace(key, contrast=0) == replace(filled.key, contrast=0)]
            completed = [taken for taken in map(self._take, sorted(siblings)) if taken is not None] + completed
        return completed

    def _rejection(self, acquisition: ismrmrd.Acquisition) -> str | None:
        """Why a readout that belongs in an image cannot be used, or None."""
        if acquisition.active_channels == 0 or acquisition.number_of_samples == 0:
            return "readout without channels or samples"
        if acquisition.active_channels > self.max_channels:
            return (f"{acquisition.active_channels} channels exceed the operator limit of {self.max_channels} "
                    f"({self.channel_limit_name})")
        if self.channels is None:
            self.channels = acquisition.active_channels
        elif acquisition.active_channels != self.channels:
            return f"{acquisition.active_channels} channels where the scan has {self.channels}"
        if not np.isfinite(acquisition.data).all():
            return "NaN or infinite samples"
        return None

    def _new_buffer(self, key: ImageKey, acquisition: ismrmrd.Acquisition) -> _Buffer:
        samples = acquisition.number_of_samples
        readout = self.grid.readout_length(samples)
        shape = (readout, self.grid.lines, self.grid.partitions, acquisition.active_channels, self.averages)
        extent = f"{shape[0]} samples x {shape[1]} lines"
        extent += f" x {shape[2]} partitions" if shape[2] > 1 else ""
        extent += f" x {shape[3]} channels" + (f" x {shape[4]} averages" if shape[4] > 1 else "")
        data = self._zeros(shape, f"the k-space buffer of {key.describe()} ({extent})")
        buffer = _Buffer(key, None, data, np.empty(shape[1:3] + shape[4:], object))
        self.buffers[key] = buffer
        return buffer

    def _zeros(self, shape: tuple[int, ...], what: str) -> np.ndarray:
        """A zeroed complex64 buffer, charged to the scan before it is allocated."""
        if self.allocate is not None:
            return self.allocate(shape, what)
        self.charge(8 * int(np.prod(shape)), what)
        return np.zeros(shape, np.complex64)

    def _image(self, buffer: _Buffer, acquisition: ismrmrd.Acquisition, average: int, kind: str) -> None:
        if buffer.samples is None:
            buffer.samples = acquisition.number_of_samples
        if acquisition.number_of_samples != buffer.samples:
            raise Unplaceable(f"readout length {acquisition.number_of_samples} differs from the slice's "
                              f"{buffer.samples}")
        placed = self.grid.place(acquisition, buffer.data.shape[0])
        slot = (placed.e1, placed.e2, average)
        if buffer.headers[slot] is not None:
            self.tally.leave_out(kind, "replaced by a later readout of the same line and average",
                                 buffer.headers[slot].scan_counter)
        else:
            self.tally.use(kind)
        buffer.data[:, placed.e1, placed.e2, :, average] = placed.samples.T
        buffer.headers[slot] = acquisition.getHead()

    def _calibrate(self, buffer: _Buffer, acquisition: ismrmrd.Acquisition) -> None:
        if buffer.calibration is None:
            shape = buffer.data.shape[:4]
            buffer.calibration = self._zeros(shape, f"the calibration buffer of {buffer.key.describe()}")
            buffer.calibration_headers = np.empty(shape[1:3], object)
            buffer.calibration_samples = acquisition.number_of_samples
        elif acquisition.number_of_samples != buffer.calibration_samples:
            raise Unplaceable(f"calibration readout length {acquisition.number_of_samples} differs from the "
                              f"slice's {buffer.calibration_samples}")
        placed = self.grid.place(acquisition, buffer.calibration.shape[0])
        assert buffer.calibration_headers is not None
        if buffer.calibration_headers[placed.e1, placed.e2] is not None:
            self.tally.leave_out(CALIBRATION, "replaced by a later calibration readout of the same line",
                                 acquisition.scan_counter)
        else:
            self.tally.use(CALIBRATION, USED_FOR_CALIBRATION)
        buffer.calibration[:, placed.e1, placed.e2, :] = placed.samples.T
        buffer.calibration_headers[placed.e1, placed.e2] = acquisition.getHead()

    def _take(self, key: ImageKey) -> Filled | None:
        buffer = self.buffers.pop(key)
        acquired = buffer.filled().acquired
        if not acquired.any():
            log.warning("%s has calibration lines only: no image", key.describe())
            return None
        lines = acquired.any(axis=(1, 2)).sum()
        if lines < self.grid.lines:
            log.info("%s: %d of %d phase-encode lines acquired", key.describe(), lines, self.grid.lines)
        missing = [a for a in range(self.averages) if not acquired[..., a].any()]
        if missing:
            log.warning("%s: averages %s never arrived; reconstructing from the %d that did", key.describe(),
                        ", ".join(map(str, missing)), self.averages - len(missing))
        return buffer.filled()

    def flush(self) -> list[Filled]:
        """At the end of the stream: the buffers never completed, with what they hold."""
        taken = []
        for key, buffer in list(self.buffers.items()):
            if len(buffer.finished_averages) < self.averages:
                log.warning("stream ended before %s was complete (%d of %d lines): reconstructing what was "
                            "acquired", key.describe(), int(buffer.filled().acquired.any(axis=(1, 2)).sum()),
                            self.grid.lines)
            filled = self._take(key)
            if filled is not None:
                taken.append(filled)
        return taken
