"""Cooperative cancellation of long computations (a scan whose client is gone, whose deadline
passed, or whose server is stopping).

Python threads cannot be stopped from outside, so long loops ask. Whoever runs work on a thread
binds a check to it (`bind`); the FISTA loop reads the bound check (`bound_check`) between
iterations unless it is given one, and raises `Cancelled` when it says stop. Nothing is bound by
default: the check costs nothing in training and tests.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

__all__ = ["Cancelled", "bind", "bound_check"]

_CHECK: ContextVar[Callable[[], bool] | None] = ContextVar("adacsc_cancel_check", default=None)


class Cancelled(RuntimeError):
    """The computation was asked to stop before it finished."""


def bind(check: Callable[[], bool] | None) -> None:
    """Make `check` the stop test of the computations run on this thread (its context); None
    removes it."""
    _CHECK.set(check)


def bound_check() -> Callable[[], bool] | None:
    """The stop test bound to this thread, or None."""
    return _CHECK.get()
