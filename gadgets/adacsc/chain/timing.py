"""Per-slice latencies of a running chain, for whoever observes it (the server's metrics).

A stage's latency for one slice is the time from the last item of that slice entering the stage
to the first slice-level item (a ReconData, ImageArray or Image) of that slice leaving it. Readouts
leaving a stage are not slice-level, so a pass-through stage like noise_adjust is not timed. For
the readout buffer that is the time from the slice's last readout to its buffer; for coil
combination, from the buffer to the combined image; for CSC, from the combined image to the first
reconstructed image, waiting for a slice worker included. The whole chain is timed the same way:
from the slice's last readout pushed in to its first image out, which is what a client measures
(`adacsc send`). A slice is (slice, repetition); each yields one observation per stage.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

import ismrmrd
import numpy as np
from gadgetron.types import ImageArray, ReconData

__all__ = ["ChainObserver", "SliceClock", "slice_of"]


class ChainObserver(Protocol):
    """What a chain reports while it runs (adacsc.server.telemetry implements it)."""

    def stage_latency(self, stage: str, seconds: float) -> None: ...

    def slice_latency(self, seconds: float) -> None: ...


def slice_of(item: object) -> tuple[int, int] | None:
    """(slice, repetition) of an item, or None where it has none (noise readouts, waveforms)."""
    if isinstance(item, ismrmrd.Acquisition):
        if item.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            return None
        return int(item.idx.slice), int(item.idx.repetition)
    if isinstance(item, ismrmrd.Image):
        return int(item.slice), int(item.repetition)
    if isinstance(item, ImageArray) and item.headers is not None and np.size(item.headers):
        image = np.asarray(item.headers).flat[0]
        return int(image.slice), int(image.repetition)
    if isinstance(item, ReconData) and item.bits and np.size(item.bits[0].data.headers):
        acquisition = np.asarray(item.bits[0].data.headers).flat[0]
        return int(acquisition.idx.slice), int(acquisition.idx.repetition)
    return None


class SliceClock:
    """When each slice last entered one stage, and the time to its first slice-level output
    (passed to `observe`). Thread-safe: a stage may send from another thread (the slice pool)."""

    def __init__(self, observe: Callable[[float], None]) -> None:
        self._observe = observe
        self._entered: dict[tuple[int, int], float] = {}
        self._lock = threading.Lock()

    def entered(self, item: object) -> None:
        """An item reached the stage."""
        key = slice_of(item)
        if key is not None:
            with self._lock:
                self._entered[key] = time.perf_counter()

    def left(self, item: object) -> None:
        """An item left the stage: the first slice-level one of a slice is timed."""
        if isinstance(item, (ismrmrd.Acquisition, ismrmrd.Waveform)):
            return
        key = slice_of(item)
        with self._lock:
            started = self._entered.pop(key, None) if key is not None else None
        if started is not None:
            self._observe(time.perf_counter() - started)
