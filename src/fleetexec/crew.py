"""Threads kept for the next job: a worker's sessions and connections run on them.

Starting a thread costs the starter a wait for it (Python hands the GIL to the new
thread and back) and ~0.1 ms; a worker would start one per connection and one per
session. A `Crew` starts a thread only when none is idle, and a thread whose job
ended waits for the next one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

__all__ = ["Crew"]


class Crew:
    """Runs each job handed to it on an idle thread of its own, or on a new one."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting on _jobs, not yet promised a job
        self._threads: list[threading.Thread] = []
        self._stopped = False

    def hand(self, job: Callable[[], object]) -> None:
        """Run `job` now, on a thread of the crew (safe from any thread). A job must not
        raise: what it raises is lost (a thread's uncaught exception is only printed)."""
        with self._lock:
            stopped = self._stopped
            spawn = stopped or self._idle == 0
            if not spawn:
                self._idle -= 1
            elif not stopped:
                thread = threading.Thread(target=self._work, daemon=True,
                                          name=f"{self.name}-{len(self._threads)}")
                self._threads.append(thread)
        if stopped:  # a straggler: a thread of its own, which ends with its job
            threading.Thread(target=job, daemon=True, name=f"{self.name}-late").start()
            return
        # A new thread takes its first job from the queue too: a Thread keeps its
        # arguments alive until it ends.
        self._jobs.put(job)
        if spawn:
            thread.start()

    def size(self) -> int:
        """How many threads the crew has started (the most ever busy at once)."""
        with self._lock:
            return len(self._threads)

    def idle(self) -> int:
        """How many threads wait for a job."""
        with self._lock:
            return self._idle

    def stop(self, wait: bool = True) -> None:
        """Let each thread end once its job has (with `wait`, wait for that; again on a
        second call). A job handed later gets a thread of its own."""
        with self._lock:
            first, self._stopped = not self._stopped, True
            threads = list(self._threads)
        if first:
            for _ in threads:
                self._jobs.put(None)
        if wait:
            for thread in threads:
                thread.join()

    def _work(self) -> None:
        job = self._jobs.get()
        while job is not None:
            job()
            # Let go before waiting: an idle thread must not keep a finished job's objects
            # (a result's output, a closed connection) alive.
            job = None
            with self._lock:
                self._idle += 1
            job = self._jobs.get()
