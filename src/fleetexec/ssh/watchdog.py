"""Wall-clock deadlines for blocking paramiko calls, one thread per worker.

paramiko's own timers restart on every byte (banner), apply per key (auth) or
per read (channels), and `recv_exit_status()` has none. So a deadline here
shuts the session's socket down (`hang_up`) when it passes: whatever paramiko is blocked
in then fails at once, and the session sees `alarm.fired`.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time

from paramiko import Channel

from .transport import hang_up

__all__ = ["Alarm", "Watchdog"]


class Alarm:
    """One armed deadline. `fired` is True once the watchdog acted on it."""

    __slots__ = ("cancelled", "deadline", "fired", "sock")

    def __init__(self, deadline: float, sock: socket.socket | Channel) -> None:
        self.deadline = deadline
        self.sock = sock
        self.fired = False
        self.cancelled = False

    def cancel(self) -> None:
        """Disarm; a no-op if the alarm already fired."""
        self.cancelled = True


class Watchdog:
    """Shuts sockets down at their deadlines (monotonic clock)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Alarm]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="fleetexec-watchdog",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the watchdog's thread (its sessions are over): a long-lived program that
        runs many in-process fleets must not collect one idle thread per run."""
        with self._wake:
            self._stopped = True
            self._wake.notify()
        self._thread.join()

    def arm(self, deadline: float, sock: socket.socket | Channel) -> Alarm:
        """Shut `sock` down at `deadline` (a `time.monotonic()` value) unless cancelled."""
        alarm = Alarm(deadline, sock)
        with self._wake:
            heapq.heappush(self._heap, (deadline, next(self._order), alarm))
            if self._heap[0][2] is alarm:
                self._wake.notify()
        return alarm

    def _loop(self) -> None:
        with self._wake:
            while not self._stopped:
                while self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wake.wait()
                    continue
                delay = self._heap[0][0] - time.monotonic()
                if delay > 0:
                    self._wake.wait(delay)
                    continue
                alarm = heapq.heappop(self._heap)[2]
                alarm.fired = True
                hang_up(alarm.sock)  # a no-op if the session already ended on its own
