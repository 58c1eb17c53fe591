"""Reused threads for the short-lived work of a scan: a server's connection, its writer and
watchdog, and the chain's node threads.

Why not a new thread each time: a thread that exits leaves memory behind in the C libraries it
used (torch's matmul or FFT, 300-750 B per thread) and in glibc's per-thread malloc arenas, which
`malloc_trim` cannot return; a server making half a dozen threads per scan grew by KBs per scan
over thousands of scans (issue 19, benchmarks/bench_soak.py). Here a finished task's thread waits
for the next one (the most recently used first, so few threads stay busy) and ends after
`idle_s` without work, so a burst of scans leaves no threads for ever.

A task runs as it would on a thread of its own: in a fresh `contextvars` context (nothing bound
by an earlier task is seen), named after the task while it runs, and an exception it lets
escape is logged as the thread's would be. `Task` has `join` and `is_alive`, like a Thread.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Task", "ThreadPool", "start", "shared_pool"]

log = logging.getLogger(__name__)

IDLE_S = 60.0
"""how long a pooled thread waits for a task before it ends"""
IDLE_NAME = "adacsc-idle"


class Task:
    """One unit of work on a pooled thread."""

    def __init__(self, target: Callable[..., Any], args: tuple[Any, ...], name: str) -> None:
        self.name = name
        self._target = target
        self._args = args
        self._done = threading.Event()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the task has finished (at most `timeout` seconds)."""
        self._done.wait(timeout)

    def is_alive(self) -> bool:
        """Whether the task has not finished yet."""
        return not self._done.is_set()

    def _run(self) -> None:
        try:
            self._target(*self._args)
        except BaseException:  # what threading's excepthook would print for a thread of its own
            log.exception("uncaught error in thread %s", self.name)
        finally:
            self._target = self._args = None  # the pool keeps no reference to finished work
            self._done.set()


class _Worker:
    """A pooled thread and the task handed to it (None while idle)."""

    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool
        self.task: Task | None = None
        self.wake = threading.Condition(pool.lock)
        self.thread = threading.Thread(target=self._loop, name=IDLE_NAME, daemon=True)

    def _loop(self) -> None:
        thread = threading.current_thread()
        while True:
            with self.pool.lock:
                if self.task is None:
                    self.wake.wait(self.pool.idle_s)
                task, self.task = self.task, None
                if task is None:  # idle for idle_s: end (the pool no longer hands us work)
                    self.pool.idle.remove(self)
                    self.pool.threads -= 1
                    return
            thread.name = task.name
            contextvars.Context().run(task._run)
            thread.name = IDLE_NAME
            del task
            with self.pool.lock:
                self.pool.idle.append(self)


class ThreadPool:
    """Daemon threads that run tasks one at a time each, and end after `idle_s` without one."""

    def __init__(self, idle_s: float = IDLE_S) -> None:
        self.idle_s = idle_s
        self.lock = threading.Lock()
        self.idle: list[_Worker] = []
        self.threads = 0
        """pooled threads alive, idle or busy"""
        self.started = 0
        """threads this pool has started so far"""

    def start(self, target: Callable[..., Any], *args: Any, name: str) -> Task:
        """Run `target(*args)` on an idle thread (the most recently used), or a new one."""
        task = Task(target, args, name)
        with self.lock:
            if self.idle:
                worker = self.idle.pop()
                worker.task = task
                worker.wake.notify()
                return task
            worker = _Worker(self)
            worker.task = task
            self.threads += 1
            self.started += 1
        try:
            worker.thread.start()
        except BaseException:
            with self.lock:
                self.threads -= 1
            raise
        return task

    def forget_threads(self) -> None:
        """In a forked child: the parent's threads do not exist here; start afresh."""
        self.lock = threading.Lock()
        self.idle = []
        self.threads = 0


_SHARED = ThreadPool()
os.register_at_fork(after_in_child=_SHARED.forget_threads)


def shared_pool() -> ThreadPool:
    """The process's pool."""
    return _SHARED


def start(target: Callable[..., Any], *args: Any, name: str) -> Task:
    """Run `target(*args)` on a thread of the process's pool (see the module docstring)."""
    return _SHARED.start(target, *args, name=name)
