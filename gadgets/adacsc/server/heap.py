"""Keeping a long-running server's memory flat: each scan's cyclic garbage freed as the scan ends,
and freed heap memory handed back to the system.

A scan's objects refer to each other in cycles (its session, outbox and chain hold callbacks into
one another; a chain holds its node threads, whose targets are the chain's methods; the standard
library's XML iterparse and ctypes create a class per call), so reference counting does not free
them. Python's cyclic collector moves them to its oldest generation during the scan, and collects
that generation only once it has grown by a quarter of the objects alive since start-up: with
torch imported, thousands of scans later. Meanwhile they hold tens of KB each, and the RSS rises
by KB per scan until the next full collection (issue 19, benchmarks/bench_soak.py).
`freeze_start_up` moves the objects alive once the server has started (modules, torch, models)
out of the collector's sight (gc.freeze), so that `collect_scan_garbage`, a full collection after
each scan, only looks at what the scans made (under a millisecond, measured with 200 reports
kept). Only for a process that runs nothing but the server: frozen objects left in a cycle are never freed.

A scan also allocates and frees tens of MB through malloc (numpy and torch buffers,
gadgetron-python messages) on several threads, so glibc spreads it over per-thread arenas; the
pages that end up free inside an arena stay resident. `malloc_trim(0)` returns those free pages
of every arena. It is glibc's; elsewhere `release_free_memory` does nothing."""

import ctypes
import ctypes.util
import gc
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


def freeze_start_up() -> None:
    """Free the start-up's garbage, then exempt every object alive now from cyclic collection."""
    gc.collect()
    gc.freeze()
    log.debug("%d start-up objects frozen out of cyclic garbage collection", gc.get_freeze_count())


def collect_scan_garbage() -> int:
    """Free the cyclic garbage of the scans that have ended; how many objects were unreachable."""
    return gc.collect()


def release_free_memory() -> bool:
    """Return the free pages of every malloc arena to the system; false where unsupported."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
