"""Slices of a scan reconstructed in parallel, their images sent in the order the slices came.

Why: one slice at a time leaves cores idle between torch's many small parallel regions, and
OpenMP threads spin while a partner is descheduled when other work shares the cores. Separate
slices share nothing but the read-only solver, so running them side by side, one torch thread
each, keeps every core busy with no barriers (measured figures: README, Benchmarks).

`SlicePool` (one per process, `shared_pool()`, used by every scan of a server) has `cores` (the
torch thread count of the process when it is created, so OMP_NUM_THREADS and the batch workers'
share hold) and runs up to `workers` jobs at once (default: one per core; $ADACSC_SLICE_WORKERS,
1 = one slice at a time with every core). Torch threads are handed out so that the jobs never
hold more than `cores` together: a job starts with the free cores shared among the jobs that can
start (at least one; it waits while every core is held), and between FISTA iterations
(adacsc.core.cancel.set_iteration_hook) a running job gives threads back when jobs are waiting
for a core, or takes the free cores when none is. A lone slice (streaming, a one-slice scan, the
last slice of a scan) thus runs on every core, and slices that arrive together run one thread
each, with no OpenMP barrier between them. Torch's thread count is per thread in ATen's OpenMP
backend, so jobs do not disturb each other.

`OrderedSender` takes a gadget's outputs (finished items, or jobs for the pool) and sends them in
that order from one thread: numbering and order are those of one-at-a-time processing, and
`connection.send` is never called from two threads. It bounds the jobs not yet sent, so a scan
cannot queue unboundedly, and a failed job stops the scan with that job's error.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

import torch

from adacsc import settings
from adacsc.core.cancel import set_iteration_hook

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
        self._held: dict[int, int] = {}  # running job (thread id) -> torch threads it holds

    def submit(self, job: Callable[[], Any]) -> "Future[Any]":
        """Run `job()` on the pool, in the caller's context (so a scan's cancellation check,
        adacsc.core.cancel, reaches its slices); its torch thread count is set when it starts and
        adjusted between FISTA iterations."""
        with self._lock:
            self._not_started += 1
        try:
            future = self._executor.submit(contextvars.copy_context().run, self._run, job)
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

    def _waiting(self) -> int:
        """Jobs that would start now if they had a core (lock held)."""
        return max(0, min(self._not_started, self.workers - len(self._held)))

    def _start(self) -> int:
        with self._lock:
            while self._free < 1:
                self._lock.wait()
            threads = max(1, self._free // max(1, self._waiting()))
            self._not_started -= 1
            self._free -= threads
            self._held[threading.get_ident()] = threads
            return threads

    def _rebalance(self) -> None:
        """In a running job: give threads back while jobs wait, take the free ones otherwise."""
        me = threading.get_ident()
        with self._lock:
            held = self._held[me]
            waiting = self._waiting()
            if waiting:
                target = min(held, max(1, self.cores // (len(self._held) + waiting)))
            else:
                target = held + self._free
            if target == held:
                return
            self._free -= target - held
            self._held[me] = target
            self._lock.notify_all()
        torch.set_num_threads(target)

    def _run(self, job: Callable[[], Any]) -> Any:
        threads = self._start()
        try:
            torch.set_num_threads(threads)
            set_iteration_hook(self._rebalance)
            return job()
        finally:
            set_iteration_hook(None)
            with self._lock:
                self._free += self._held.pop(threading.get_ident())
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
