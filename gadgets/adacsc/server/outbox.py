"""The bounded queue between a session's producers (the chain's last node, the session's own
reports) and its writer thread."""

import threading
import time
from collections.abc import Callable


class Outbox:
    """Bounded (by bytes) queue of encoded messages for the writer thread, and the token that
    says who writes to the socket: a producer may send a small message itself when nothing is
    queued and nobody is sending (one thread hand-off less per slice), else it queues. Each
    message may carry bytes charged to the scan's budget: the writer releases them once it has
    sent the message, `abort` when it discards it."""

    def __init__(self, capacity: int, release: Callable[[int], None] = lambda nbytes: None) -> None:
        self._capacity = capacity
        self._release = release
        self._items: list[tuple[str, bytes, int]] = []
        self._bytes = 0
        self._finished = False
        self._aborted = False
        self._busy = False
        self._cond = threading.Condition()

    def put(self, kind: str, data: bytes, timeout: float, charged: int = 0) -> bool:
        """Queue a message; False (the caller keeps its charge) when the outbox was aborted or
        stayed full for `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._aborted and self._items and self._bytes + len(data) > self._capacity:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            if self._aborted:
                return False
            self._items.append((kind, data, charged))
            self._bytes += len(data)
            self._cond.notify_all()
            return True

    def claim(self) -> bool:
        """True when nothing is queued and nobody is sending: the caller sends now, then release()."""
        with self._cond:
            if self._aborted or self._items or self._busy:
                return False
            self._busy = True
            return True

    def release(self) -> None:
        """The socket is free again."""
        with self._cond:
            self._busy = False
            self._cond.notify_all()

    def take(self) -> list[tuple[str, bytes, int]] | None:
        """Everything queued, once nobody else is sending (the caller then sends and calls
        release()); waits for something; None once finished and empty, or aborted."""
        with self._cond:
            while not self._aborted and (self._busy or (not self._items and not self._finished)):
                self._cond.wait()
            if self._aborted or not self._items:
                return None
            items, self._items, self._bytes = self._items, [], 0
            self._busy = True
            self._cond.notify_all()
            return items

    def finish(self) -> None:
        """No more messages: the writer ends once it has sent what is queued."""
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def abort(self) -> None:
        """Discard everything; later puts fail at once."""
        with self._cond:
            self._aborted = True
            discarded, self._items, self._bytes = self._items, [], 0
            self._cond.notify_all()
        self._release(sum(charged for _, _, charged in discarded))
