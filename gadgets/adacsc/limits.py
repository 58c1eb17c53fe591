"""Operator limits on what one scan may ask for, checked before anything is allocated.

A scan's header declares its matrix and coils, and its chain properties choose the compute; a
client controls both. The operator bounds them: `adacsc serve` options, or environment variables
(the defaults of those options; a Gadgetron deployment sets them in the node's environment). The
host of a scan puts them in its adacsc.scan_context.ScanContext; the gadgets read them there:

  ADACSC_MAX_MATRIX      largest encoded or recon matrix size along any axis (default 4096)
  ADACSC_MAX_CHANNELS    most receiver channels (default 128)
  ADACSC_MAX_ITERATIONS  most solver iterations a chain property may ask for (default 1000)
  ADACSC_MAX_SCAN_GB     one scan's budget: bytes received plus buffers allocated (default 16)

`check_encoding` validates a header against them; a `ScanBudget` counts what a scan has received
and allocated, so that a header declaring a huge matrix fails with an error naming the field
instead of allocating.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import numpy as np

from adacsc.io.header import encoding, receiver_channels

GiB = 1 << 30
T = TypeVar("T")
WAIT_POLL_S = 0.1
"""how often a charge waiting for memory asks its stop test"""

_ENVIRONMENT = {"max_matrix": "ADACSC_MAX_MATRIX", "max_channels": "ADACSC_MAX_CHANNELS",
                "max_iterations": "ADACSC_MAX_ITERATIONS", "max_scan_bytes": "ADACSC_MAX_SCAN_GB"}


class LimitError(ValueError):
    """A scan asks for more than the operator allows; the message names the field and the limit."""


@dataclass(frozen=True)
class ScanLimits:
    """The operator's bounds for one scan."""

    max_matrix: int = 4096
    max_channels: int = 128
    max_iterations: int = 1000
    max_scan_bytes: int = 16 * GiB

    @classmethod
    def from_environment(cls) -> ScanLimits:
        """The limits set in the environment, defaults elsewhere."""
        values: dict[str, int] = {}
        for item in fields(cls):
            variable = _ENVIRONMENT[item.name]
            text = os.environ.get(variable)
            if not text:
                continue
            try:
                number = float(text)
            except ValueError as err:
                raise LimitError(f"${variable}={text!r} is not a number") from err
            if number <= 0:
                raise LimitError(f"${variable}={text!r} must be positive")
            values[item.name] = int(number * GiB) if item.name == "max_scan_bytes" else int(number)
        return cls(**values)

    def variable(self, name: str) -> str:
        """The environment variable of limit `name`."""
        return _ENVIRONMENT[name]


def check_encoding(header: Any, limits: ScanLimits) -> None:
    """Raise LimitError when the header's first encoding or its coils exceed `limits`: matrix
    sizes per axis, receiver channels and one slice's k-space buffer against the scan budget."""
    declared = encoding(header)
    for space, matrix in (("encodedSpace", declared.encoded_matrix), ("reconSpace", declared.recon_matrix)):
        for axis, size in zip("xyz", matrix):
            if size > limits.max_matrix:
                raise LimitError(f"header {space}.matrixSize.{axis} = {size} exceeds the operator limit of "
                                 f"{limits.max_matrix} (${_ENVIRONMENT['max_matrix']})")
    channels = receiver_channels(header)
    if channels is not None and channels > limits.max_channels:
        raise LimitError(f"header acquisitionSystemInformation.receiverChannels = {channels} exceeds the operator "
                         f"limit of {limits.max_channels} (${_ENVIRONMENT['max_channels']})")
    x, y, z = declared.encoded_matrix
    one_slice = x * y * z * (channels or 1) * 8
    if one_slice > limits.max_scan_bytes:
        raise LimitError(f"header encodedSpace.matrixSize {x}x{y}x{z} with {channels or 1} channel(s) needs "
                         f"{one_slice} bytes per slice, over the scan limit of {limits.max_scan_bytes} bytes")


class ScanBudget:
    """Bytes one scan holds, against one limit: what it has received plus what its gadgets and
    the server allocate for it. Every allocation is charged before it is made and released when
    freed (`allocate`, `hold`: when its owner is garbage-collected; `reserve`: working memory
    for the length of a block). Thread-safe: the connection's thread, the gadgets' threads and
    the slice pool charge the same budget."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._released = threading.Condition()

    def charge(self, nbytes: int, what: str, stop: Callable[[], bool] | None = None) -> None:
        """Count `nbytes` for `what`; LimitError (nothing counted) when the budget would be
        exceeded. With `stop` (a stop test), wait while other charges of the scan may still be
        released (e.g. slices reconstructed in parallel), until `stop()` says to give up."""
        with self._released:
            while self.used + nbytes > self.limit:
                if stop is None or nbytes > self.limit or not self.used:
                    raise LimitError(f"{what} needs {nbytes} bytes; with the {self.used} bytes this scan already "
                                     f"uses, that exceeds the scan limit of {self.limit} bytes")
                if stop():
                    raise LimitError(f"{what} needs {nbytes} bytes; the scan's other work still held {self.used} "
                                     f"of its {self.limit} bytes when it stopped waiting")
                self._released.wait(WAIT_POLL_S)
            self.used += nbytes
            self.peak = max(self.peak, self.used)

    def release(self, nbytes: int) -> None:
        """Give back `nbytes` charged before (their memory was freed)."""
        with self._released:
            self.used = max(0, self.used - nbytes)
            self._released.notify_all()

    def hold(self, owner: T, nbytes: int) -> T:
        """Release `nbytes` (already charged) once `owner` is garbage-collected; returns `owner`."""
        weakref.finalize(owner, self.release, nbytes)
        return owner

    def allocate(self, shape: tuple[int, ...], dtype: Any, what: str,
                 stop: Callable[[], bool] | None = None) -> np.ndarray:
        """A zeroed array, charged before it is allocated (`stop`: see `charge`) and released
        when it is freed."""
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        self.charge(nbytes, what, stop)
        try:
            array = np.zeros(shape, dtype)
        except BaseException:
            self.release(nbytes)
            raise
        return self.hold(array, nbytes)

    @contextmanager
    def reserve(self, nbytes: int, what: str, stop: Callable[[], bool] | None = None) -> Iterator[None]:
        """Charge working memory for the length of a block (`stop`: see `charge`)."""
        self.charge(nbytes, what, stop)
        try:
            yield
        finally:
            self.release(nbytes)
