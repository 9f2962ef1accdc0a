"""`ProcessBackend`: a few worker processes of our own, each running many sessions.

About one process per core (CPU for handshakes), each running many sessions
on threads (waiting on the network is free). Workers are plain child
processes started with a safe path (`python -P -m ...`, cwd `/`), so the
caller needs no `if __name__ == "__main__":` guard, nothing in the current
directory can shadow a module, and no process-wide multiprocessing state is
touched. A host always goes to the same worker in a session that keeps
connections, so it meets its kept connection there.

Lost hosts have one path, `_Run.lose`: a worker that exits loses the hosts
it held (`error`), a worker that stops answering has its hosts given up at
their deadlines plus a grace (`timeout`).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from ..exceptions import ConfigError
from ..host import Host
from ..results import HostResult, Status
from . import Job, Output, Plan, plan, raisable_open_files
from .worker import (
    Channel,
    Chunk,
    Finished,
    Ready,
    Setup,
    SetupFailed,
    Skip,
    Started,
    Stdin,
    Stop,
    Taken,
    Work,
    command_line,
)

__all__ = ["ProcessBackend"]

_GRACE = 5.0  # the parent gives up on a host this long after its own deadlines
_POLL = 0.25
_STOP_WAIT = 5.0


@dataclass(frozen=True, slots=True)
class _Exited:
    """A worker's socket closed: the process ended (or is ending)."""


_Events = queue.SimpleQueue[tuple["_Worker", object]]


class _Worker:
    """One worker process (a slot) and the thread that turns its messages into events."""

    def __init__(self, slot: int, channel: Channel, process: subprocess.Popen[bytes] | None,
                 events: _Events) -> None:
        self.slot, self.channel, self.process = slot, channel, process
        self.pid: int | None = process.pid if process is not None else None
        self.exited = threading.Event()
        threading.Thread(target=self._pump, args=(events,), daemon=True).start()

    @classmethod
    def start(cls, slots: Sequence[int], setup: Setup, events: _Events) -> list[_Worker]:
        """One process for the first slot, which forks the others once its imports are done."""
        import fleetexec

        pairs = [socket.socketpair() for _ in slots]
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(fleetexec.__file__)))
        env = dict(os.environ)
        # The child imports the same fleetexec as this process, wherever it came from.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root,
                                                          env.get("PYTHONPATH")]))
        # glibc gives a process with hundreds of threads up to 8 malloc arenas per core, each
        # keeping memory freed by the output that passed through it: 1000 hosts × 10 MiB
        # peaked at 251 MiB per worker, 202-220 with 1 or 2 arenas, CPU unchanged. A worker
        # runs Python under the GIL, so its threads seldom allocate at the same time.
        env.setdefault("MALLOC_ARENA_MAX", "2")
        child_fds = [child.fileno() for _, child in pairs]
        try:
            process = subprocess.Popen(  # noqa: S603 - our interpreter, our module
                command_line(child_fds), pass_fds=child_fds, cwd="/", env=env,
                stdin=subprocess.DEVNULL)
        finally:
            for _, child in pairs:
                child.close()
        workers = [cls(slot, Channel(parent), process if i == 0 else None, events)
                   for i, (slot, (parent, _)) in enumerate(zip(slots, pairs, strict=True))]
        for worker in workers:
            worker.send(setup)
        return workers

    def _pump(self, events: _Events) -> None:
        while (message := self.channel.receive()) is not None:
            events.put((self, message))
        self.exited.set()
        events.put((self, _Exited()))

    def send(self, message: object) -> bool:
        """False when the worker is gone (its exit event is on its way)."""
        try:
            self.channel.send(message)
        except OSError:
            return False
        return True

    def kill(self) -> None:
        """End the process now. A forked worker also exits by itself once its socket closes."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
        elif self.pid is not None and not self.exited.is_set():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)  # our own worker, still connected
        self.channel.close()


@dataclass
class _Run:
    """The parent's bookkeeping for one run: where each host went, who is overdue."""

    number: int
    hosts: Sequence[Host]
    slot_of: list[int]
    done: set[int] = field(default_factory=set)
    taken: set[int] = field(default_factory=set)
    started: dict[int, tuple[float, float]] = field(default_factory=dict)  # monotonic, wall

    def finish(self, index: int) -> bool:
        if index in self.done:
            return False
        self.done.add(index)
        self.started.pop(index, None)
        return True

    def lose(self, indexes: Sequence[int], status: Status, message: str) -> list[HostResult]:
        """The one way a host without a result from its worker gets one."""
        lost = []
        for index in indexes:
            since, wall = self.started.get(index, (time.monotonic(), time.time()))
            if self.finish(index):
                lost.append(HostResult(self.hosts[index].name, status, error=message,
                                       started=wall, duration=round(time.monotonic() - since, 6)))
        return lost

    def overdue(self, now: float) -> list[HostResult]:
        lost = []
        for index, (since, _) in list(self.started.items()):
            host = self.hosts[index]
            if not host.command_timeout:
                continue
            budget = (host.connect_timeout or 0) + host.command_timeout + _GRACE
            if now - since > budget:
                lost += self.lose([index], Status.TIMEOUT, f"no result {budget:g}s after start "
                                  "(deadlines plus grace); the session was abandoned")
        return lost


class ProcessBackend:
    """The default backend: worker processes started on first use, kept while options hold."""

    def __init__(self, sizing: Plan | None = None, *, soft_cancel: bool = False) -> None:
        """`soft_cancel`: cancelling drops the run's queued hosts but lets running
        sessions end at their deadlines, keeping the workers and their connections
        (the agent serves several clients on the same workers)."""
        self._sizing = sizing
        self._soft_cancel = soft_cancel
        self._workers: dict[int, _Worker] = {}
        self._setup: Setup | None = None
        self._events: _Events = queue.SimpleQueue()
        self._runs = 0
        self._cancelled = threading.Event()

    def start(self, hosts: Sequence[Host], job: Job) -> Iterator[HostResult | Output]:
        """Run `job` on `hosts`; yield each result as its host finishes."""
        self._cancelled.clear()
        self._ensure_workers(hosts, job)
        self._runs += 1
        slots = sorted(self._workers)
        run = _Run(self._runs, hosts, [
            slots[zlib.crc32(h.name.encode()) % len(slots) if job.keep_connections
                  else i % len(slots)] for i, h in enumerate(hosts)])
        for slot in slots:
            self._workers[slot].send(Skip(self._runs))  # drop what an earlier run left queued
            if job.stdin is not None:
                self._workers[slot].send(Stdin(self._runs, job.stdin))
        for index, host in enumerate(hosts):
            self._workers[run.slot_of[index]].send(
                Work(run.number, index, host, job.command, job.keep_connections,
                     job.stream_output, job.transfer))
        return self._results(run)

    def _results(self, run: _Run) -> Iterator[HostResult | Output]:
        last_check = time.monotonic()
        while len(run.done) < len(run.hosts) and not self._cancelled.is_set():
            try:
                worker, message = self._events.get(timeout=_POLL)
            except queue.Empty:
                pass
            else:
                if self._workers.get(worker.slot) is worker:  # not one ended earlier
                    yield from self._handle(run, worker, message)
            if time.monotonic() - last_check >= _POLL:
                last_check = time.monotonic()
                yield from run.overdue(last_check)

    def _handle(self, run: _Run, worker: _Worker, message: object,
                ) -> Iterator[HostResult | Output]:
        if isinstance(message, _Exited):
            del self._workers[worker.slot]
            worker.kill()
            mine = [i for i, s in enumerate(run.slot_of) if s == worker.slot and i not in run.done]
            yield from run.lose([i for i in mine if i in run.taken], Status.ERROR,
                                "its worker process died mid-run")
            yield from run.lose(mine, Status.ERROR,
                                "its worker process died before the host started")
        elif isinstance(message, SetupFailed):
            self.close()
            raise ConfigError(message.message)
        elif isinstance(message, Ready):
            worker.pid = message.pid
        elif getattr(message, "run", None) != run.number:
            return  # a late message about a host an earlier run gave up on
        elif isinstance(message, Taken):
            run.taken.add(message.index)
            run.started[message.index] = (time.monotonic(), time.time())
        elif isinstance(message, Started):
            run.started[message.index] = (time.monotonic(), time.time())
        elif isinstance(message, Chunk) and message.index not in run.done:
            yield Output(run.hosts[message.index].name, message.stream, message.data)
        elif isinstance(message, Finished) and run.finish(message.index):
            yield message.result

    def _ensure_workers(self, hosts: Sequence[Host], job: Job) -> None:
        options = job.options
        if self._setup is not None and self._setup.options != options:
            self.close()  # new settings: new workers (keys and known_hosts reloaded)
        if self._setup is None:
            # Our workers raise their own soft open-files limit as far as the hard one.
            sizing = self._sizing or plan(max(1, len(hosts)), options,
                                          open_files=raisable_open_files())
            self._setup = Setup.for_hosts(options, hosts, sizing.threads_per_process,
                                          sizing.handshakes_per_process)
            self._count = sizing.processes
        for slot, worker in list(self._workers.items()):
            if worker.exited.is_set():  # died between runs
                worker.kill()
                del self._workers[slot]
        missing = [slot for slot in range(self._count) if slot not in self._workers]
        if missing:
            for worker in _Worker.start(missing, self._setup, self._events):
                self._workers[worker.slot] = worker

    def cancel(self) -> None:
        """Stop the run now: every worker is ended (kept connections go with them),
        or, with `soft_cancel`, only the run's queued hosts are dropped."""
        self._cancelled.set()
        if self._soft_cancel:
            for worker in list(self._workers.values()):
                worker.send(Skip(self._runs + 1))
        else:
            self._kill_all()

    def close(self) -> None:
        """Close kept connections, stop the workers, wait for them."""
        workers, self._workers, self._setup = self._workers, {}, None
        for worker in workers.values():
            worker.send(Stop())
        deadline = time.monotonic() + _STOP_WAIT
        for worker in workers.values():  # the first waits for its forks before it exits
            with contextlib.suppress(subprocess.TimeoutExpired):
                if worker.process is not None:
                    worker.process.wait(max(0.0, deadline - time.monotonic()))
                else:
                    worker.exited.wait(max(0.0, deadline - time.monotonic()))
        for worker in workers.values():
            worker.kill()

    def _kill_all(self) -> None:
        workers, self._workers, self._setup = self._workers, {}, None
        for worker in workers.values():
            worker.kill()

