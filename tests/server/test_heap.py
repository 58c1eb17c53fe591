"""The server keeps its memory flat over many scans (issue 19, item 13): each scan's cyclic
garbage is freed as it ends, and free memory pinned below a live
allocation of the malloc heap is handed back (`release_free_memory`)."""

import ctypes
import ctypes.util
import gc
from pathlib import Path

import pytest

from adacsc.chain.runner import Chain
from adacsc.client import send_scan
from adacsc.server.heap import release_free_memory
from adacsc.server.session import Session
from support.server import FRONTEND, threaded_server

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


def _alive(kind: type) -> list[object]:
    return [obj for obj in gc.get_objects() if type(obj) is kind]


def test_a_finished_scan_leaves_no_garbage_behind(small_scan: Path, tmp_path: Path) -> None:
    """Its session and chain are freed when its connection ends, not thousands of scans later
    at Python's next full collection (their objects refer to each other in cycles)."""
    gc.collect()
    before = {id(obj) for obj in _alive(Session) + _alive(Chain)}
    with threaded_server(collect_garbage=True) as running:
        try:
            for index in range(3):
                assert send_scan(small_scan, tmp_path / f"out{index}.h5", port=running.port, config_name=FRONTEND,
                                 timeout=60).ok
            running.wait_until(lambda: not running.server.running_threads(), what="the connections ended")
            left = [obj for obj in _alive(Session) + _alive(Chain) if id(obj) not in before]
        finally:
            gc.unfreeze()  # the server froze this test process's objects
    assert running.server.sessions_served == 3 and not left, left

