"""The server hands the freed pages of the malloc heap back after each scan (issue 19, item 13):
free memory pinned below a live allocation stays resident until `release_free_memory`."""

import ctypes
import ctypes.util
from pathlib import Path

import pytest

from adacsc.server.heap import release_free_memory

MiB = 1 << 20


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists() or not ctypes.util.find_library("c"),
                    reason="needs Linux /proc and a C library")
def test_freed_heap_pages_are_given_back():
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    chunk = 64 * 1024  # below malloc's mmap threshold: these come from the heap
    blocks = [libc.malloc(chunk) for _ in range(1024)]
    assert all(blocks)
    for block in blocks:
        ctypes.memset(block, 1, chunk)
    for block in blocks[:-1]:  # the last one stays: the heap cannot shrink from its top
        libc.free(block)
    try:
        held = _rss()
        if not release_free_memory():
            pytest.skip("no malloc_trim in this C library")
        assert held - _rss() > 32 * MiB
    finally:
        libc.free(blocks[-1])
