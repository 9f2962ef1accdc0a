"""`InProcessBackend`: the sessions run on threads in the caller's own process.

No subprocess, no pickling: for debugging (breakpoints and tracebacks work),
for tiny fleets, and where starting processes is not allowed. One core does
all the handshakes, so large fleets are slower than with `ProcessBackend`.
Cancelling stops queued hosts at once; sessions already running end at their
own deadlines in the background.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator, Sequence

from ..host import Host
from ..results import HostResult
from . import Job, Output, Plan, plan
from .worker import Chunk, Event, Finished, HostRunner, Setup, Work

__all__ = ["InProcessBackend"]


class InProcessBackend:
    """Threads in this process, at most `parallel` sessions at once."""

    def __init__(self, sizing: Plan | None = None) -> None:
        self._sizing = sizing
        self._runner: HostRunner | None = None
        self._setup: Setup | None = None
        self._events: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self._runs = 0

    def start(self, hosts: Sequence[Host], job: Job) -> Iterator[HostResult | Output]:
        """Run `job` on `hosts`; yield each result as its host finishes."""
        if self._setup is not None and self._setup.options != job.options:
            self.close()
        if self._runner is None:
            sizing = self._sizing or plan(max(1, len(hosts)), job.options, cores=1)
            self._setup = Setup.for_hosts(job.options, hosts, sizing.parallel,
                                          sizing.handshakes_per_process)
            self._runner = HostRunner(self._setup, self._events.put)  # raises ConfigError
        self._runs += 1
        self._runner.cancel_before(self._runs)
        if job.stdin is not None:
            self._runner.set_stdin(self._runs, job.stdin)
        while not self._events.empty():  # what an abandoned run left behind
            self._events.get_nowait()
        for index, host in enumerate(hosts):
            self._runner.submit(Work(self._runs, index, host, job.command, job.keep_connections,
                                     job.stream_output, job.transfer))
        return self._results(self._runs, [h.name for h in hosts])

    def _results(self, run: int, names: list[str]) -> Iterator[HostResult | Output]:
        done = 0
        while done < len(names) and (event := self._events.get()) is not None:
            if isinstance(event, Chunk) and event.run == run:
                yield Output(names[event.index], event.stream, event.data)
            elif isinstance(event, Finished) and event.run == run:
                done += 1
                yield event.result

    def cancel(self) -> None:
        """Drop queued hosts; the iterator ends now."""
        if self._runner is not None:
            self._runner.cancel_before(self._runs + 1)
        self._events.put(None)

    def close(self) -> None:
        """Wait for running sessions, close kept connections."""
        runner, self._runner, self._setup = self._runner, None, None
        if runner is not None:
            runner.stop()
