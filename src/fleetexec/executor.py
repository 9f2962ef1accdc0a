"""The worker pool: the only module that knows about processes and threads.

A multiprocessing Pool of a few long-lived worker processes (about one per
core: CPU for handshakes); each worker runs many sessions at once on threads
(waiting on the network is free), so sessions in flight do not depend on the
process count. Hosts flow to workers through one queue and results come back,
one message per host, as each finishes. The parent never imports paramiko.
"""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.pool
import os
import queue
import resource
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .exceptions import ConfigError
from .host import Host
from .results import Collector, FleetResult, HostResult, OnResult, Status
from .ssh.options import SessionOptions

__all__ = ["DEFAULT_PARALLEL", "Plan", "execute", "plan"]

DEFAULT_PARALLEL = 256
HANDSHAKES_IN_FLIGHT = 128  # more at once overflowed one sshd's accept queue and lost hosts
_FDS_PER_SESSION = 3  # the socket, plus the pipe behind paramiko's Channel.fileno()
_FDS_RESERVED = 64
_GRACE = 5.0  # the parent gives up on a host this long after its own deadlines
_POLL = 0.25


@dataclass(frozen=True)
class Plan:
    """How many processes and sessions a run uses, and why."""

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


def _init_worker(options: SessionOptions, jobs: Any, results: Any, parent_pid: int) -> None:
    # The parent owns Ctrl-C: it stops the run and terminates the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker.update(options=options, jobs=jobs, results=results)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()


def _exit_with_parent(parent_pid: int) -> None:
    # With forkserver our parent is the server, not the run: watch the run itself.
    while True:
        time.sleep(1.0)
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            os._exit(1)


def _serve(threads: int) -> None:
    """A worker's one long task: run hosts from the queue on `threads` threads."""
    from .ssh.session import WorkerContext, run_on_host

    results, jobs, pid = _worker["results"], _worker["jobs"], os.getpid()
    try:
        context = WorkerContext(_worker["options"])
    except ConfigError as error:
        results.put(("config_error", pid, str(error)))
        return
    results.put(("ready", pid, None))

    def loop() -> None:
        while (job := jobs.get()) is not None:
            index, host = job
            results.put(("start", index, pid))
            results.put(("done", index, run_on_host(host, context)))

    workers = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()


# ---- parent side --------------------------------------------------------------


def execute(
    hosts: Sequence[Host], options: SessionOptions, *, parallel: int | None = None,
    processes: int | None = None, on_result: OnResult | None = None,
) -> FleetResult:
    """Run `options.command` on every host; results reach `on_result` as hosts finish.

    Raises `ConfigError` (before any host is contacted) when a worker cannot
    load the configured keys. Ctrl-C stops the run: hosts not finished are
    reported `INTERRUPTED` and the result has `interrupted=True`.
    """
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        # A worker is re-importing the caller's script (spawn/forkserver do that).
        raise RuntimeError(
            "fleetexec.run() called while a worker process imported your main module: "
            "put the call under `if __name__ == '__main__':`"
        )
    names = [h.name for h in hosts]
    if len(set(names)) != len(names):
        raise ConfigError("the same host name appears twice in one run")
    begin = time.monotonic()
    collector = Collector(names, on_result)
    if not hosts:
        return collector.result(0.0)
    sizing = plan(len(hosts), parallel, processes)
    options = _with_handshake_cap(options, sizing.handshakes_per_process)
    context = multiprocessing.get_context("forkserver")  # forking a threaded parent is unsafe
    context.set_forkserver_preload(["fleetexec.ssh.session"])
    jobs, results = context.Queue(), context.Queue()
    for index, host in enumerate(hosts):
        jobs.put((index, host))
    run = _Run(hosts, options, collector, results, jobs, sizing)
    pool = context.Pool(sizing.processes, _init_worker, (options, jobs, results, os.getpid()))
    try:
        run.start(pool)
        run.wait()
    except KeyboardInterrupt:
        run.interrupt()
    finally:
        pool.terminate()
        pool.join()
        for q in (jobs, results):
            q.close()
            q.cancel_join_thread()
    if run.config_error:
        raise ConfigError(run.config_error)
    return collector.result(round(time.monotonic() - begin, 6), interrupted=run.interrupted)


def _with_handshake_cap(options: SessionOptions, handshakes: int) -> SessionOptions:
    from dataclasses import replace

    return replace(options, handshakes_in_flight=handshakes)


def _pick(own: float | None, default: float) -> float:
    return own if own is not None else default


class _Run:
    """The parent's bookkeeping for one run: who started where, who is overdue."""

    def __init__(
        self, hosts: Sequence[Host], options: SessionOptions, collector: Collector, results: Any,
        jobs: Any, sizing: Plan,
    ) -> None:
        self.hosts, self.options, self.collector = hosts, options, collector
        self.results, self.jobs = results, jobs
        self.sizing = sizing
        self.started: dict[int, tuple[int, float]] = {}  # host index -> (worker pid, when)
        self.workers: set[int] = set()
        self.ever_ready = False
        self.early_deaths = 0
        self.serving: list[multiprocessing.pool.AsyncResult[None]] = []
        self.config_error: str | None = None
        self.interrupted = False
        self.pool: multiprocessing.pool.Pool | None = None

    def start(self, pool: multiprocessing.pool.Pool) -> None:
        self.pool = pool
        for _ in range(self.sizing.processes):
            self._add_server()

    def _add_server(self) -> None:
        assert self.pool is not None  # noqa: S101
        for _ in range(self.sizing.threads_per_process):
            self.jobs.put(None)  # one stop sentinel per thread of this server
        self.serving.append(self.pool.apply_async(_serve, (self.sizing.threads_per_process,)))

    def wait(self) -> None:
        last_check = time.monotonic()
        while self.collector.pending and self.config_error is None:
            try:
                kind, key, value = self.results.get(timeout=_POLL)
                self._handle(kind, key, value)
            except queue.Empty:
                pass
            if time.monotonic() - last_check >= _POLL:
                last_check = time.monotonic()
                self._check_workers()
                self._check_overdue()

    def _handle(self, kind: str, key: int, value: Any) -> None:
        if kind == "ready":
            self.workers.add(key)
            self.ever_ready = True
        elif kind == "config_error":
            self.config_error = value
        elif kind == "start":
            self.started[key] = (value, time.monotonic())
        elif kind == "done":
            self.started.pop(key, None)
            self.collector.add(value)

    def _check_workers(self) -> None:
        assert self.pool is not None  # noqa: S101
        alive = {child.pid for child in multiprocessing.active_children()}
        if not self.ever_ready and self.early_deaths < 1_000:
            # Pool has no public view of its processes; start-up deaths show only here.
            spawned = {p.pid for p in self.pool._pool}  # type: ignore[attr-defined]
            self.early_deaths += len(spawned - alive)
            if self.early_deaths >= 2 * self.sizing.processes:
                self.config_error = ("worker processes die while starting; if you call "
                                     "fleetexec.run() from a script, guard it with "
                                     "`if __name__ == '__main__':`")
                return
        for pid in self.workers - alive:
            self.workers.discard(pid)
            for index, (owner, _) in list(self.started.items()):
                if owner == pid:
                    self._give_up(index, Status.ERROR, "its worker process died mid-run")
            self._add_server()  # the pool starts a replacement process; give it work
        for task in self.serving:
            if task.ready() and not task.successful() and self.config_error is None:
                try:
                    task.get()
                except Exception as error:  # a bug in the worker: say so, do not hang
                    self.config_error = f"worker failed: {type(error).__name__}: {error}"
        if all(task.ready() for task in self.serving):
            for name in self.collector.pending:  # nobody left to run them
                self.collector.add(
                    HostResult(name, Status.ERROR, error="lost with a worker process")
                )

    def _check_overdue(self) -> None:
        now = time.monotonic()
        for index, (_, since) in list(self.started.items()):
            host = self.hosts[index]
            budget = self._budget(host)
            if budget is not None and now - since > budget:
                self._give_up(index, Status.TIMEOUT, f"no result {budget:g}s after start "
                              "(deadlines plus grace); the session was abandoned")

    def _budget(self, host: Host) -> float | None:
        options = self.options
        command = _pick(host.command_timeout, options.command_timeout)
        if not command:
            return None
        return _pick(host.connect_timeout, options.connect_timeout) + command + _GRACE

    def _give_up(self, index: int, status: Status, message: str) -> None:
        self.started.pop(index, None)
        self.collector.add(HostResult(self.hosts[index].name, status, error=message))

    def interrupt(self) -> None:
        self.interrupted = True
        running = {self.hosts[index].name for index in self.started}
        for name in self.collector.pending:
            self.collector.add(HostResult(
                name, Status.INTERRUPTED,
                error="interrupted while running" if name in running
                else "interrupted before it started",
            ))
