"""The worker pool: the only module that knows about processes and threads.

A multiprocessing Pool of a few long-lived worker processes (about one per
core: CPU for handshakes); each runs many sessions at once on threads
(waiting on the network is free), so sessions in flight do not depend on the
process count. Each worker owns a slot with its own inbox, so a host always
goes to the same worker and, in a fleet session, finds its connection still
open there. Results come back one message per host, as each finishes. The
parent never imports paramiko.
"""

from __future__ import annotations

import functools
import itertools
import math
import multiprocessing
import multiprocessing.pool
import os
import queue
import resource
import signal
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from .exceptions import ConfigError, FleetError
from .host import Host
from .results import Collector, FleetResult, HostResult, OnResult, Status
from .ssh.options import SessionOptions

__all__ = ["DEFAULT_PARALLEL", "Plan", "WorkerPool", "execute", "plan", "stop_forkserver"]

DEFAULT_PARALLEL = 1024  # waiting is cheap: `sleep 2` on 1000 hosts should take ~2 s
HANDSHAKES_IN_FLIGHT = 128  # more at once overflowed one sshd's accept queue and lost hosts
_FDS_PER_SESSION = 1  # its socket
_FDS_RESERVED = 64
_GRACE = 5.0  # the parent gives up on a host this long after its own deadlines
_POLL = 0.25
_DRAIN_GRACE = 2.0  # after a slot's inbox drained, a job not started by then was lost


@dataclass(frozen=True)
class Plan:
    """How many processes and sessions a run uses."""

    processes: int
    threads_per_process: int
    handshakes_per_process: int

    @property
    def parallel(self) -> int:
        """Sessions in flight at most."""
        return self.processes * self.threads_per_process


def plan(hosts: int, parallel: int | None = None, processes: int | None = None) -> Plan:
    """Size the pool for `hosts`: about one process per core, sessions capped by open files."""
    wanted = max(1, min(parallel or DEFAULT_PARALLEL, hosts))
    cores = os.cpu_count() or 1
    procs = processes or max(1, min(cores, math.ceil(hosts / 32)))
    procs = min(procs, wanted)
    soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    fd_cap = max(1, (soft_limit - _FDS_RESERVED) // _FDS_PER_SESSION)
    threads = max(1, min(math.ceil(wanted / procs), fd_cap))
    handshakes = max(1, min(threads, math.ceil(HANDSHAKES_IN_FLIGHT / procs)))
    return Plan(procs, threads, handshakes)


# ---- worker side --------------------------------------------------------------

_worker: dict[str, Any] = {}


def _init_worker(options: SessionOptions, inboxes: Any, results: Any, parent_pid: int) -> None:
    # The parent owns Ctrl-C: it stops the run and terminates the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker.update(options=options, inboxes=inboxes, results=results)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()


def _exit_with_parent(parent_pid: int) -> None:
    # With forkserver our parent is the server, not the run: watch the run itself.
    while True:
        time.sleep(1.0)
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            os._exit(1)


def _serve(slot: int, threads: int, reuse: bool) -> None:
    """A worker's one long task: run the jobs of `slot`'s inbox on `threads` threads."""
    from .ssh.session import WorkerContext, run_on_host

    results, inbox, pid = _worker["results"], _worker["inboxes"][slot], os.getpid()
    try:
        context = WorkerContext(_worker["options"])
    except ConfigError as error:
        results.put(("config_error", slot, pid, str(error)))
        return
    results.put(("ready", slot, pid, None))

    def loop() -> None:
        while (job := inbox.get()) is not None:
            kind, run_id, index, payload = job
            if kind == "drain":  # every job of this run before it has been taken
                results.put(("drained", slot, run_id, None))
                continue
            host, command = payload
            results.put(("taken", slot, run_id, index))  # no longer in the inbox, can't be lost
            started = functools.partial(results.put, ("start", slot, run_id, index))
            results.put(("done", slot, run_id,
                         run_on_host(host, command, context, reuse, on_start=started)))

    workers = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    context.close_connections()


# ---- parent side --------------------------------------------------------------


def execute(
    hosts: Sequence[Host], command: str, options: SessionOptions, *,
    parallel: int | None = None, processes: int | None = None, on_result: OnResult | None = None,
) -> FleetResult:
    """Run `command` on every host once; results reach `on_result` as hosts finish.

    Raises `ConfigError` (before any host is contacted) when a worker cannot
    load the configured keys. Ctrl-C stops the run: hosts not finished are
    reported `INTERRUPTED` and the result has `interrupted=True`.
    """
    if not hosts:
        return Collector([], on_result).result(0.0)
    pool = WorkerPool(options, plan(len(hosts), parallel, processes), reuse=False)
    try:
        return pool.run(hosts, command, on_result)
    finally:
        pool.close(graceful=False)


class WorkerPool:
    """Long-lived worker processes; with `reuse`, each keeps its hosts' connections open."""

    def __init__(self, options: SessionOptions, sizing: Plan, reuse: bool) -> None:
        if getattr(multiprocessing.current_process(), "_inheriting", False):
            # A worker is re-importing the caller's script (spawn/forkserver do that).
            raise RuntimeError(
                "fleetexec called while a worker process imported your main module: "
                "put the call under `if __name__ == '__main__':`"
            )
        self.sizing = sizing
        self.options = replace(options, handshakes_in_flight=sizing.handshakes_per_process)
        self.reuse = reuse
        context = multiprocessing.get_context("forkserver")  # forking a threaded parent is unsafe
        context.set_forkserver_preload(["fleetexec.ssh.session"])
        self._inboxes = [context.Queue() for _ in range(sizing.processes)]
        self._results = context.Queue()
        self._pool = _CountingPool(sizing.processes, _init_worker,
                                   (self.options, self._inboxes, self._results, os.getpid()),
                                   context=context)
        self._servers: dict[int, multiprocessing.pool.AsyncResult[None]] = {}
        self._pids: dict[int, int] = {}  # slot -> pid of the worker serving it
        self._ever_ready = False
        self._run_ids = itertools.count()
        self.closed = False
        for slot in range(sizing.processes):
            self._start_server(slot)

    def _start_server(self, slot: int) -> None:
        self._servers[slot] = self._pool.apply_async(
            _serve, (slot, self.sizing.threads_per_process, self.reuse))

    def _slot(self, index: int, host: Host) -> int:
        if self.reuse:  # the same host always meets its kept connection, whatever the selection
            return zlib.crc32(host.name.encode()) % self.sizing.processes
        return index % self.sizing.processes

    def run(self, hosts: Sequence[Host], command: str, on_result: OnResult | None = None,
            cancel: threading.Event | None = None) -> FleetResult:
        """Run `command` on `hosts` (unique names) and collect every host's result.

        Ctrl-C, or `cancel` being set from another thread, interrupts the run
        like Ctrl-C: unfinished hosts are `INTERRUPTED` and the workers stop.
        """
        if self.closed:
            raise FleetError("this worker pool is closed")
        names = [h.name for h in hosts]
        if len(set(names)) != len(names):
            raise ConfigError("the same host name appears twice in one run")
        begin = time.monotonic()
        run = _Run(next(self._run_ids), hosts, self.options, Collector(names, on_result))
        for index, host in enumerate(hosts):
            run.sent[index] = slot = self._slot(index, host)
            self._inboxes[slot].put(("job", run.run_id, index, (host, command)))
        for inbox in self._inboxes:
            inbox.put(("drain", run.run_id, 0, None))
        try:
            self._wait(run, cancel)
        except KeyboardInterrupt:
            run.interrupt()
            self.close(graceful=False)  # stops every session still running
        if run.config_error:
            self.close(graceful=False)
            raise ConfigError(run.config_error)
        return run.collector.result(round(time.monotonic() - begin, 6), run.interrupted)

    def _wait(self, run: _Run, cancel: threading.Event | None) -> None:
        last_check = time.monotonic()
        while not run.collector.complete and run.config_error is None:
            if cancel is not None and cancel.is_set():
                raise KeyboardInterrupt
            try:
                kind, slot, key, value = self._results.get(timeout=_POLL)
                self._handle(run, kind, slot, key, value)
            except queue.Empty:
                pass
            if time.monotonic() - last_check >= _POLL:
                last_check = time.monotonic()
                self._check_workers(run)
                run.check_overdue()
                run.check_drained()

    def _handle(self, run: _Run, kind: str, slot: int, key: int, value: Any) -> None:
        if kind == "ready":
            self._pids[slot] = key
            self._ever_ready = True
        elif kind == "config_error":
            run.config_error = value
        elif key != run.run_id:
            return  # a late message from an earlier, abandoned run
        elif kind == "taken":  # the host's deadlines start now...
            run.taken.add(value)
            run.started[value] = (time.monotonic(), time.time())
        elif kind == "start":  # ...or later, when it had to wait for a handshake slot
            run.started[value] = (time.monotonic(), time.time())
        elif kind == "done":
            run.finish(value)
        elif kind == "drained":
            run.drained[slot] = time.monotonic()

    def _check_workers(self, run: _Run) -> None:
        alive = {child.pid for child in multiprocessing.active_children()}
        if not self._ever_ready and self._pool.started >= 3 * self.sizing.processes:
            run.config_error = ("worker processes die while starting; if you call fleetexec "
                                "from a script, guard it with `if __name__ == '__main__':`")
            return
        for slot, pid in list(self._pids.items()):
            if pid not in alive:
                del self._pids[slot]
                run.worker_died(slot)
                self._start_server(slot)  # the pool starts a replacement process
        for slot, server in self._servers.items():
            if server.ready() and not server.successful():
                try:
                    server.get()
                except Exception as error:  # a bug in the worker: report it, do not hang
                    run.abandon_slot(slot, f"internal error in worker: "
                                     f"{type(error).__name__}: {error}")

    def close(self, graceful: bool = True) -> None:
        """Stop the workers; `graceful` lets them close their connections first."""
        if self.closed:
            return
        self.closed = True
        if graceful:
            for inbox in self._inboxes:
                for _ in range(self.sizing.threads_per_process):
                    inbox.put(None)
            deadline = time.monotonic() + 5.0
            for server in self._servers.values():
                server.wait(max(0.0, deadline - time.monotonic()))
        self._pool.terminate()
        self._pool.join()
        for q in (*self._inboxes, self._results):
            q.close()
            q.cancel_join_thread()


def stop_forkserver() -> None:
    """Stop multiprocessing's fork server and wait for it.

    Workers are its children, so only then is their CPU accounted to this
    process and no zombie is left for init to reap. The CLI calls this when
    its run is over; library callers keep the server warm for the next run.
    """
    from multiprocessing import forkserver

    stop = getattr(forkserver._forkserver, "_stop", None)  # no public way to do this in 3.11
    if stop is not None:
        stop()


class _CountingPool(multiprocessing.pool.Pool):
    """A Pool that counts the processes it starts: replacements reveal start-up crashes."""

    started = 0

    def Process(self, ctx: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override] # noqa: N802
        # Pool calls this (its own hook, a staticmethod there) for every worker it starts.
        self.started += 1
        return ctx.Process(*args, **kwargs)


def _pick(own: float | None, default: float) -> float:
    return own if own is not None else default


class _Run:
    """The parent's bookkeeping for one run: where each host went, who is overdue."""

    def __init__(
        self, run_id: int, hosts: Sequence[Host], options: SessionOptions, collector: Collector,
    ) -> None:
        self.run_id, self.hosts, self.options, self.collector = run_id, hosts, options, collector
        self.index_of = {host.name: index for index, host in enumerate(hosts)}
        self.sent: dict[int, int] = {}  # host index -> slot
        self.taken: set[int] = set()  # host indexes a worker thread has dequeued
        self.started: dict[int, tuple[float, float]] = {}  # index -> (monotonic, wall) start
        self.drained: dict[int, float] = {}  # slot -> when its drain marker came back
        self.config_error: str | None = None
        self.interrupted = False

    def finish(self, result: HostResult) -> None:
        self.started.pop(self.index_of.get(result.host, -1), None)
        self.collector.add(result)

    def _give_up(self, index: int, status: Status, message: str) -> None:
        since, wall = self.started.pop(index, (time.monotonic(), 0.0))
        self.collector.add(HostResult(self.hosts[index].name, status, error=message, started=wall,
                                      duration=round(time.monotonic() - since, 6)))

    def worker_died(self, slot: int) -> None:
        for index in [i for i in self.taken if self.sent[i] == slot]:
            if not self.collector.has(self.hosts[index].name):
                self._give_up(index, Status.ERROR, "its worker process died mid-run")

    def abandon_slot(self, slot: int, message: str) -> None:
        for index, owner in self.sent.items():
            if owner == slot and not self.collector.has(self.hosts[index].name):
                self._give_up(index, Status.ERROR, message)

    def check_drained(self) -> None:
        now = time.monotonic()
        for slot, when in self.drained.items():
            if now - when < _DRAIN_GRACE:
                continue
            for index, owner in self.sent.items():
                name = self.hosts[index].name
                if owner == slot and index not in self.taken and not self.collector.has(name):
                    self._give_up(index, Status.ERROR, "lost with a worker process")

    def check_overdue(self) -> None:
        now = time.monotonic()
        for index, (since, _) in list(self.started.items()):
            host = self.hosts[index]
            command = _pick(host.command_timeout, self.options.command_timeout)
            if not command:
                continue
            budget = _pick(host.connect_timeout, self.options.connect_timeout) + command + _GRACE
            if now - since > budget:
                self._give_up(index, Status.TIMEOUT, f"no result {budget:g}s after start "
                              "(deadlines plus grace); the session was abandoned")

    def interrupt(self) -> None:
        self.interrupted = True
        for index in list(self.started):
            self._give_up(index, Status.INTERRUPTED, "interrupted while running")
        for name in self.collector.pending:
            self.collector.add(HostResult(name, Status.INTERRUPTED,
                                          error="interrupted before it started"))
