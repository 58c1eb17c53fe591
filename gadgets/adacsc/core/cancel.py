"""What a long loop does between its iterations: stop when asked (a scan whose client is gone,
whose deadline passed, or whose server is stopping), and run the hook its runner set (the slice
pool changes the torch thread count of a running solve there).

Python threads cannot be stopped from outside, so long loops ask. Whoever runs work binds a
stop test (`bind`) and may set a hook (`set_iteration_hook`); both live in the context, so they
follow a scan into the slice-pool jobs that run in a copy of its context, and a hook set inside
one job stays in that job. The FISTA loop calls `between_iterations(...)`'s step before every
iteration. Nothing is bound by default: the step costs nothing in training and tests.

A command stopped by SIGTERM or Ctrl-C (`stop_by_signal`, the command line's handler) raises
`Terminated` or KeyboardInterrupt in the main thread, and records the stop for the whole process
as well: an exception raised while the main thread happened to be in a finalizer (a weakref
callback, `__del__`) is printed and dropped by Python, so the command would end as if nothing
happened. With the stop recorded, every loop stops at its next iteration, a finished output is not
published (`raise_if_stopped`, adacsc.io.output_file) and the command ends as stopped. The record
stays for the rest of the process, so that the threads still running as it exits stop too; the
command line clears it when a command starts.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from contextvars import ContextVar
from typing import NoReturn

__all__ = ["Cancelled", "bind", "set_iteration_hook", "between_iterations",
           "Terminated", "stop_by_signal", "stop_signal", "clear_stop_signal", "raise_if_stopped"]

_CHECK: ContextVar[Callable[[], bool] | None] = ContextVar("adacsc_cancel_check", default=None)
_HOOK: ContextVar[Callable[[], None] | None] = ContextVar("adacsc_iteration_hook", default=None)


class Cancelled(RuntimeError):
    """The computation was asked to stop before it finished."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as Ctrl-C is, so that a command stops the same way."""


_stop_signal: signal.Signals | None = None
"""the stop signal this process received (see the module docstring), or None"""


def stop_by_signal(signum: int) -> NoReturn:
    """A stop signal's handler: record the stop for the process, then raise it (Terminated for
    SIGTERM, KeyboardInterrupt otherwise) in the thread that runs the handler."""
    global _stop_signal
    _stop_signal = signal.Signals(signum)
    raise Terminated() if _stop_signal == signal.SIGTERM else KeyboardInterrupt()


def stop_signal() -> signal.Signals | None:
    """The stop signal this process received, or None."""
    return _stop_signal


def clear_stop_signal() -> None:
    """Forget a recorded stop (a command starting in a process that ran one before: tests)."""
    global _stop_signal
    _stop_signal = None


def raise_if_stopped() -> None:
    """Raise the recorded stop again (whose first exception may have been lost); nothing if none."""
    if _stop_signal is not None:
        raise Terminated() if _stop_signal == signal.SIGTERM else KeyboardInterrupt()


def bind(check: Callable[[], bool] | None) -> None:
    """Make `check` the stop test of the computations run in this context; None removes it."""
    _CHECK.set(check)


def set_iteration_hook(hook: Callable[[], None] | None) -> None:
    """Have `hook()` called between the iterations of every long loop in this context (None: no
    hook)."""
    _HOOK.set(hook)


def between_iterations(loop: str, should_stop: Callable[[], bool] | None = None) -> Callable[[int, int], None]:
    """The step a loop named `loop` calls before iteration `it` of `total`: raises Cancelled when
    the stop test (`should_stop`, else the bound one) says so, then runs the hook (from the
    second iteration on)."""
    stop = should_stop if should_stop is not None else _CHECK.get()
    hook = _HOOK.get()

    def step(it: int, total: int) -> None:
        if stop is not None and stop():
            raise Cancelled(f"{loop} cancelled after {it} of {total} iterations")
        if _stop_signal is not None:
            raise Cancelled(f"{loop} stopped by {_stop_signal.name} after {it} of {total} iterations")
        if hook is not None and it:
            hook()

    return step
