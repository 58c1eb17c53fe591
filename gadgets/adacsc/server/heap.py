"""Handing freed heap memory back to the system after each scan.

A scan allocates and frees tens of MB through malloc (numpy and torch buffers, gadgetron-python
messages) on several threads, so glibc spreads it over per-thread arenas; the pages that end up
free inside an arena stay resident, and over thousands of scans they add up to several KB per
scan of RSS that is never used again (issue 19, benchmarks/bench_soak.py). `malloc_trim(0)`
returns those free pages of every arena. It is glibc's; elsewhere this does nothing."""

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


_TRIM = _load_trim()


def release_free_memory() -> bool:
    """Return the free pages of every malloc arena to the system; false where unsupported."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
