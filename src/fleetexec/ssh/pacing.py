"""Slots that pace the work of a worker process: handshakes, and heavy output reads."""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["Turn", "nothing"]


def nothing() -> None:
    pass


class Turn:
    """A handshake slot, taken on creation (when a semaphore is given), released once.

    `on_wait_end` is called only if the slot had to be waited for, so that
    the common case costs no message to the parent.
    """

    def __init__(
        self, semaphore: threading.BoundedSemaphore | None, on_wait_end: Callable[[], object]
    ) -> None:
        self._semaphore = semaphore
        if semaphore is not None and not semaphore.acquire(blocking=False):
            semaphore.acquire()
            on_wait_end()

    @property
    def idle(self) -> bool:
        """True when no slot is held (never taken, or released)."""
        return self._semaphore is None

    def release(self) -> None:
        if self._semaphore is not None:
            self._semaphore.release()
            self._semaphore = None
