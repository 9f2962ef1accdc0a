"""Slots that pace the work of a worker process: handshakes, and heavy output reads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Turn", "nothing"]


def nothing() -> None:
    pass


class Turn:
    """A slot, taken on creation (when a semaphore is given), released once.

    `on_wait_end` is called only if the slot had to be waited for, so that
    the common case costs no message to the parent.

    A handshake holds its slot from the TCP connect until the server's banner
    arrives: that is what a burst overflows (sshd's accept queue and
    MaxStartups). The rest of the handshake only waits on the network, so
    `release` may come from the transport's thread (when the banner came) as
    well as from the session's; and `pause` gives the slot up while sleeping
    between retries.
    """

    def __init__(
        self, semaphore: threading.BoundedSemaphore | None, on_wait_end: Callable[[], object]
    ) -> None:
        self._semaphore = semaphore
        self._lock = threading.Lock()
        self._held = False
        if semaphore is not None:
            if not semaphore.acquire(blocking=False):
                semaphore.acquire()
                on_wait_end()
            self._held = True

    @property
    def idle(self) -> bool:
        """True when no slot is held (never taken, or released)."""
        return not self._held

    def release(self) -> None:
        """Give the slot back; a no-op when none is held. Safe from any thread."""
        with self._lock:
            if not self._held:
                return
            self._held = False
        assert self._semaphore is not None  # noqa: S101 - held implies a semaphore
        self._semaphore.release()

    def pause(self, seconds: float, deadline: float) -> bool:
        """Sleep `seconds` without the slot, then take it again if one was held, waiting
        at most until `deadline` (monotonic clock). False if that wait timed out."""
        with self._lock:
            held, self._held = self._held, False
        if held:
            assert self._semaphore is not None  # noqa: S101
            self._semaphore.release()
        time.sleep(seconds)
        if not held:
            return True
        assert self._semaphore is not None  # noqa: S101
        if not self._semaphore.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return False
        with self._lock:
            self._held = True
        return True
