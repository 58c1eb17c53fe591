"""Process-wide CPU settings for reconstruction, made inside the process (users set nothing).

Made by the entry points (`configure_process`), never by importing adacsc: the `adacsc` command
line (`adacsc serve`, `adacsc recon`, `adacsc external`, ...) before it loads a command, and the
gadget package (adacsc.gadgets), which a Gadgetron-started gadget process imports first. A library
user who imports adacsc.core gets no change to the process.

- glibc's allocator. Torch takes CPU tensors from malloc. By default glibc serves MB-sized blocks
  with mmap and hands freed memory back to the OS once enough is free at the top of the heap,
  with thresholds that move as the program runs; the solver frees and allocates MB-sized tensors
  every iteration, which then costs thousands of page faults per iteration, more or fewer
  depending on what ran before. Fixed thresholds (mallopt) keep freed blocks for reuse: the same
  behaviour in every process, without MALLOC_* environment variables.
- OpenMP's wait policy. Torch's OpenMP threads spin after each parallel region; when another
  process takes the cores, a spinning thread burns the time its descheduled partner needs (the
  README command ran 7x slower beside one 2-thread job). A shorter spin (GOMP_SPINCOUNT) yields
  sooner under load while back-to-back regions still hand over without sleeping; the value is a
  choice, not yet compared with others on an idle machine. Slices in parallel run one thread each
  and do not spin at all. It must be in the environment before torch loads OpenMP, so it is set
  only when torch is not imported yet, never overriding a value the user set (child processes
  inherit it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

__all__ = ["configure_process", "tune_allocator", "set_openmp_spin", "MMAP_THRESHOLD", "TRIM_THRESHOLD",
           "OPENMP_SPIN_COUNT"]

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2 ** 20
"""blocks below this come from the heap (glibc's largest allowed value on 64-bit)"""
TRIM_THRESHOLD = 512 * 2 ** 20
"""free memory kept at the top of the heap before it is returned to the OS"""
OPENMP_SPIN_COUNT = 10_000
"""GOMP_SPINCOUNT: busy-wait iterations before an idle OpenMP thread sleeps (libgomp's default
is 300000, 'ACTIVE' spins for seconds)"""

_allocator_tuned: bool | None = None


def tune_allocator() -> bool:
    """Fix glibc's mmap and trim thresholds (once); False where there is no glibc."""
    global _allocator_tuned
    if _allocator_tuned is not None:
        return _allocator_tuned
    _allocator_tuned = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.debug("no glibc mallopt: allocator thresholds left as they are")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _allocator_tuned = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD,
                                                                                       TRIM_THRESHOLD))
    return _allocator_tuned


def set_openmp_spin(environ: "dict[str, str] | os._Environ[str]" = os.environ) -> bool:
    """Shorten OpenMP's spin before torch loads; False when torch is loaded or the user chose."""
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return False
    environ["GOMP_SPINCOUNT"] = str(OPENMP_SPIN_COUNT)
    return True


def configure_process() -> None:
    """Both settings above, for this process."""
    tune_allocator()
    set_openmp_spin()
