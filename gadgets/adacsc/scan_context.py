"""What one scan needs besides its data and its settings, built by the host that runs it and passed
to every gadget of the scan: the operator's limits, the scan's memory budget, its stop test and
where its warnings go.

The hosts build it: the chain runner (`adacsc recon`, batches), the streaming server's session
(limits from the server's settings, the budget that also counts the bytes received, the client as
the warnings' reader), `adacsc external` (its abort as the stop test) and, for a node that
Gadgetron starts with `<execute>`, the gadget's module-level entry (`from_environment`: the
operator sets the limits in the node's environment). Gadgets read nothing else.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from adacsc.limits import ScanBudget, ScanLimits

__all__ = ["ScanContext"]


@dataclass(frozen=True)
class ScanContext:
    """The per-scan context (module docstring). The budget defaults to one of the limits' size."""

    limits: ScanLimits = field(default_factory=ScanLimits)
    budget: ScanBudget | None = None
    stop: Callable[[], bool] | None = None
    """true once the scan should stop (client gone, deadline passed, server stopping); None: never"""
    warn: Callable[[str], None] | None = None
    """told every warning the scan's gadgets log (the server passes them to its client); None: logged only"""

    def __post_init__(self) -> None:
        if self.budget is None:
            object.__setattr__(self, "budget", ScanBudget(self.limits.max_scan_bytes))

    @classmethod
    def from_environment(cls, stop: Callable[[], bool] | None = None) -> ScanContext:
        """A scan under the limits set in the process environment (adacsc.limits), with its own budget."""
        return cls(limits=ScanLimits.from_environment(), stop=stop)

    def stopping(self) -> bool:
        """Whether the scan should stop now."""
        return self.stop is not None and bool(self.stop())

    def or_stop_when(self, stop: Callable[[], bool]) -> ScanContext:
        """This context that also stops once `stop()` says so (a chain adds its own cancellation)."""
        mine = self.stop
        combined = stop if mine is None else (lambda: stop() or bool(mine()))
        return ScanContext(self.limits, self.budget, combined, self.warn)

    def stop_or_after(self, seconds: float) -> Callable[[], bool]:
        """A stop test for a bounded wait: true once the scan should stop, or `seconds` from now."""
        give_up = time.monotonic() + seconds
        return lambda: self.stopping() or time.monotonic() > give_up

    @contextmanager
    def relaying_warnings(self) -> Iterator[None]:
        """While the block runs, warnings that adacsc code logs on this thread go to `warn` as well."""
        if self.warn is None:
            yield
            return
        handler = _Relay(self.warn, threading.get_ident())
        logger = logging.getLogger("adacsc")
        logger.addHandler(handler)
        try:
            yield
        finally:
            logger.removeHandler(handler)


class _Relay(logging.Handler):
    """Passes the warnings logged on one thread to a scan's `warn`."""

    def __init__(self, warn: Callable[[str], None], thread: int) -> None:
        super().__init__(logging.WARNING)
        self._warn = warn
        self._thread = thread
        self._relaying = False

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self._thread or self._relaying:
            return
        self._relaying = True  # `warn` may log itself
        try:
            self._warn(record.getMessage())
        finally:
            self._relaying = False
