"""Slices of a scan reconstructed in parallel, their images sent in the order the slices came.

Why: one slice at a time leaves cores idle between torch's many small parallel regions, and
OpenMP threads spin while a partner is descheduled when other work shares the cores. Separate
slices share nothing but the read-only solver, so running them side by side, one torch thread
each, keeps every core busy with no barriers (measured figures: README, Benchmarks).

`SlicePool` (one per process, `shared_pool()`, used by every scan of a server) has `cores` (the
torch thread count of the process when it is created, so OMP_NUM_THREADS and the batch workers'
share hold) and runs up to `workers` jobs at once (default: one per core; $ADACSC_SLICE_WORKERS,
1 = one slice at a time with every core). Each job takes torch threads when it starts: the free
cores shared among the jobs that could start now (itself included), at least one, and waits while
every core is taken. A lone slice (streaming, or a one-slice scan) thus gets every core, and a
queue of slices runs one thread per slice; never more threads than cores in total. Torch's thread
count is per thread in ATen's OpenMP backend, so jobs do not disturb each other.

`OrderedSender` takes a gadget's outputs (finished items, or jobs for the pool) and sends them in
that order from one thread: numbering and order are those of one-at-a-time processing, and
`connection.send` is never called from two threads. It bounds the jobs not yet sent, so a scan
cannot queue unboundedly, and a failed job stops the scan with that job's error.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

import torch

from adacsc import settings

__all__ = ["SlicePool", "OrderedSender", "shared_pool"]

log = logging.getLogger(__name__)

_END = object()


class SlicePool:
    """Threads for slice jobs, handing out torch threads so that they never exceed `cores`."""

    def __init__(self, cores: int, workers: int | None = None) -> None:
        if cores < 1:
            raise ValueError(f"a slice pool needs at least one core, got {cores}")
        if workers is not None and workers < 1:
            raise ValueError(f"a slice pool needs at least one worker, got {workers}")
        self.cores = cores
        self.workers = workers or cores
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="adacsc-slice")
        self._lock = threading.Condition()
        self._free = cores
        self._not_started = 0
        self._running = 0

    def submit(self, job: Callable[[], Any]) -> "Future[Any]":
        """Run `job()` on the pool; its torch thread count is set when it starts."""
        with self._lock:
            self._not_started += 1
        try:
            future = self._executor.submit(self._run, job)
        except BaseException:
            self._forget()
            raise
        future.add_done_callback(lambda done: self._forget() if done.cancelled() else None)
        return future

    def _forget(self) -> None:
        """A job that will never start (cancelled, or not submitted) no longer waits."""
        with self._lock:
            self._not_started -= 1
            self._lock.notify_all()

    def _take_threads(self) -> int:
        with self._lock:
            while self._free < 1:
                self._lock.wait()
            startable = max(1, min(self._not_started, self.workers - self._running))
            threads = max(1, self._free // startable)
            self._not_started -= 1
            self._running += 1
            self._free -= threads
            return threads

    def _run(self, job: Callable[[], Any]) -> Any:
        threads = self._take_threads()
        try:
            torch.set_num_threads(threads)
            return job()
        finally:
            with self._lock:
                self._free += threads
                self._running -= 1
                self._lock.notify_all()


_shared: SlicePool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> SlicePool:
    """The process's slice pool, created at first use with the process's torch thread count."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = SlicePool(max(1, torch.get_num_threads()), settings.slice_workers())
            log.info("slice pool: %d core(s), up to %d slice(s) at once", _shared.cores, _shared.workers)
        return _shared


class OrderedSender:
    """Send finished items and the results of pool jobs in the order they were given.

    Use as a context manager: leaving normally waits until everything is sent and raises the
    first job error; leaving with an exception sends nothing more.
    """

    def __init__(self, send: Callable[[object], None], pool: SlicePool, max_pending: int | None = None) -> None:
        self._send = send
        self._pool = pool
        self._entries: "queue.Queue[Any]" = queue.Queue(maxsize=max_pending or 2 * pool.cores)
        self._error: BaseException | None = None
        self._abort = False
        self._thread = threading.Thread(target=self._drain, name="adacsc-slice-send", daemon=True)
        self._thread.start()

    def __enter__(self) -> "OrderedSender":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._abort = kind is not None
        self._entries.put(_END)
        self._thread.join()
        if kind is None:
            self._check()

    def now(self, item: object) -> None:
        """Send `item` once everything given before it is sent."""
        self._check()
        done: "Future[Any]" = Future()
        done.set_result((item,))
        self._entries.put(done)

    def later(self, job: Callable[[], Iterable[object]]) -> None:
        """Run `job` on the pool and send the items it returns in their turn (blocks while too
        many jobs are waiting to be sent)."""
        self._check()
        self._entries.put(self._pool.submit(job))

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def _drain(self) -> None:
        while True:
            entry = self._entries.get()
            if entry is _END:
                return
            if self._abort or self._error is not None:
                entry.cancel()
                continue
            try:
                for item in entry.result():
                    self._send(item)
            except BaseException as err:  # re-raised in the gadget's thread
                log.error("slice job failed: %s", err)
                self._error = err
