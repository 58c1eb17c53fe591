"""What a long loop does between its iterations: stop when asked (a scan whose client is gone,
whose deadline passed, or whose server is stopping), and run the hook its runner set (the slice
pool changes the torch thread count of a running solve there).

Python threads cannot be stopped from outside, so long loops ask. Whoever runs work binds a
stop test (`bind`) and may set a hook (`set_iteration_hook`); both live in the context, so they
follow a scan into the slice-pool jobs that run in a copy of its context, and a hook set inside
one job stays in that job. The FISTA loop calls `between_iterations(...)`'s step before every
iteration. Nothing is bound by default: the step costs nothing in training and tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar

__all__ = ["Cancelled", "bind", "bound_check", "stop_or_after", "set_iteration_hook", "between_iterations"]

_CHECK: ContextVar[Callable[[], bool] | None] = ContextVar("adacsc_cancel_check", default=None)
_HOOK: ContextVar[Callable[[], None] | None] = ContextVar("adacsc_iteration_hook", default=None)


class Cancelled(RuntimeError):
    """The computation was asked to stop before it finished."""


def bind(check: Callable[[], bool] | None) -> None:
    """Make `check` the stop test of the computations run in this context; None removes it."""
    _CHECK.set(check)


def bound_check() -> Callable[[], bool] | None:
    """The stop test bound to this context, or None."""
    return _CHECK.get()


def stop_or_after(seconds: float) -> Callable[[], bool]:
    """A stop test for a bounded wait: true once the bound test says stop, or `seconds` from now."""
    check = _CHECK.get()
    give_up = time.monotonic() + seconds
    return lambda: bool(check is not None and check()) or time.monotonic() > give_up


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
        if hook is not None and it:
            hook()

    return step
