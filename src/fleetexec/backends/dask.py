"""`DaskBackend`: a run cut into shards, each run by a local backend in a Dask worker.

Past one machine, the hosts go to a Dask cluster in shards of plain picklable
data (`Shard`: hosts with every setting resolved, the job). `run_shard` runs in
a Dask worker and fans its hosts out over a local backend there: a
`ProcessBackend` by default. Dask workers are daemonic processes, which only
stops *multiprocessing* children; `ProcessBackend` starts its workers with
`subprocess` (`python -P -m fleetexec.backends`), so it works unchanged there.
`local=InProcessBackend` keeps a shard on the worker's own threads instead.

Results come back per host, not per shard: the shard puts each `HostResult`,
as a dict of plain values, into a `distributed.Queue` of the run, which the
caller drains as they arrive.

At most once: Dask reschedules a task whose worker died (up to
`distributed.scheduler.allowed-failures` times, 3 by default), whatever
`retries` says, and the scheduler's setting is not ours to change. So each
shard has a ticket: one item in a queue of its own, taken atomically by the
scheduler before any host starts. A second attempt finds no ticket and raises
`SecondAttempt` without touching a host; the caller then reports the shard's
hosts that had not reported as `error` ("worker lost mid-run; ..."), as it does
when Dask gives up on the task itself (`KilledWorker`).
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import ConfigError
from ..host import Host
from ..results import HostResult, Status
from . import Backend, Job, Output, Plan, plan
from .process import ProcessBackend

__all__ = ["DaskBackend", "SecondAttempt", "Shard", "run_shard"]

LOST = "worker lost mid-run; the command may or may not have run"
_POLL = 0.05  # the caller polls the run's queue and futures this often when idle
CONNECT_TIMEOUT = 10.0  # seconds to reach a scheduler given by address
_WATCH = 0.5  # a running shard looks at its run's stop event this often


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ConfigError("the Dask backend needs the distributed package: "
                          "pip install 'fleetexec[dask]'") from None
    return distributed


class SecondAttempt(RuntimeError):
    """A shard started before, on a worker that died: it is not run again."""


@dataclass(frozen=True)
class Shard:
    """One Dask task's share of a run: plain data, pickled to the worker."""

    run: str  # names the run's queues and events on the scheduler
    number: int
    first: int  # the run's index of hosts[0]
    hosts: tuple[Host, ...]
    job: Job
    local: Callable[[Plan], Backend]
    size: int  # the run's shard size, which sizes the local backend of every shard

    def name(self, what: str) -> str:
        return f"fleetexec-{self.run}-{what}"


# Local backends kept between shards in a Dask worker process, so a shard does not pay
# for starting worker processes: one per shard running at once, by kind and sizing (a
# local backend keeps the sizing of its first run). The oldest past _KEEP are closed.
_idle: list[tuple[tuple[Callable[[Plan], Backend], Plan], Backend]] = []
_idle_lock = threading.Lock()
_KEEP = 4


def _borrow(key: tuple[Callable[[Plan], Backend], Plan]) -> Backend:
    with _idle_lock:
        for i, (kind, backend) in enumerate(_idle):
            if kind == key:
                del _idle[i]
                return backend
    return key[0](key[1])


def _give_back(key: tuple[Callable[[Plan], Backend], Plan], backend: Backend) -> None:
    with _idle_lock:
        _idle.append((key, backend))
        evicted = [b for _, b in _idle[:-_KEEP]]
        del _idle[:-_KEEP]
    for old in evicted:  # close() waits for its processes: not on the shard's time
        threading.Thread(target=old.close, daemon=True).start()


def run_shard(shard: Shard) -> int:
    """Run in a Dask worker: run `shard`'s hosts on a local backend, send each result
    to the run's queue as it comes; returns how many were sent."""
    distributed = _distributed()
    client = distributed.get_client()
    ticket = distributed.Queue(shard.name(f"ticket-{shard.number}"), client=client)
    try:
        claimed = ticket.get(batch=True)  # atomic on the scheduler: one attempt gets it
    finally:
        ticket.close()
    if not claimed:
        raise SecondAttempt(f"shard {shard.number} started before on a worker that died")
    results = distributed.Queue(shard.name("results"), client=client)
    key = (shard.local, plan(shard.size, shard.job.options))
    backend = _borrow(key)
    running, lock = [True], threading.Lock()

    def watch() -> None:
        # Dask does not interrupt a running task: the caller's cancel() sets the run's
        # stop event, looked at here (polled: a waiting event_wait errs when a cluster
        # shuts down).
        stop = distributed.Event(shard.name("stop"), client=client)
        while running[0]:
            try:
                stopped = stop.is_set()
            except OSError:  # the scheduler is gone; the shard's next put fails too
                return
            if stopped:
                with lock:  # never cancel a backend already lent to another shard
                    if running[0]:
                        backend.cancel()
                return
            time.sleep(_WATCH)

    threading.Thread(target=watch, daemon=True, name="fleetexec-shard-watch").start()
    index = {h.name: shard.first + i for i, h in enumerate(shard.hosts)}
    sent, complete = 0, False
    try:
        for event in backend.start(shard.hosts, shard.job):
            if isinstance(event, Output):  # only with job.stream_output
                results.put([index[event.host], event.stream, event.data])
            else:
                results.put([index[event.host], _pack(event)])
            sent += 1
        complete = True
    finally:
        with lock:
            running[0] = False
            if not complete:  # nobody would hear of the hosts still running
                backend.cancel()
        results.close()
        _give_back(key, backend)
    return sent


def _pack(result: HostResult) -> dict[str, Any]:
    """msgpack-able values only: the scheduler's queues carry nothing else."""
    data = dataclasses.asdict(result)
    data["status"] = result.status.value
    return data


def _unpack(data: dict[str, Any]) -> HostResult:
    return HostResult(**{**data, "status": Status(data["status"])})


@dataclass
class _Run:
    """The caller's bookkeeping for one run."""

    id: str
    hosts: Sequence[Host]
    shard_size: int
    futures: dict[int, Any]  # shard number -> distributed.Future, until it ends
    results: Any  # distributed.Queue
    tickets: list[Any]
    done: set[int] = field(default_factory=set)
    stopped: bool = False


class DaskBackend:
    """Runs each shard of `shard_size` hosts as one Dask task, on a local backend there.

    `scheduler` is a `distributed.Client` (left open by `close`) or a scheduler
    address (`tcp://HOST:8786`; connected at the first run, within `timeout` s,
    `CONNECT_TIMEOUT` by default). `local` is the backend class a shard runs on
    in its worker (`ProcessBackend`, or `InProcessBackend`: threads only), given
    a `Plan` for `shard_size` hosts on that worker's cores.
    Passwords and passphrases are not sent to the workers unless `send_secrets`
    and the scheduler is reached over TLS: workers use their own key files and
    known_hosts, at the paths the options name. Connections are not kept
    between runs: a host's next shard may run on another worker.
    """

    def __init__(self, scheduler: Any, *, shard_size: int = 250,
                 local: Callable[[Plan], Backend] = ProcessBackend,
                 timeout: float | None = None,
                 send_secrets: bool = False) -> None:
        self._distributed = _distributed()
        if shard_size < 1:
            raise ConfigError(f"shard_size must be at least 1, not {shard_size}")
        self._scheduler = scheduler
        self._client: Any = scheduler if isinstance(scheduler, self._distributed.Client) else None
        self.shard_size, self._local = shard_size, local
        self._timeout = timeout or CONNECT_TIMEOUT
        self._send_secrets = send_secrets
        self._run: _Run | None = None
        self._stops: list[Any] = []
        self._cancelled = threading.Event()
        self.notes: list[str] = []  # the CLI prints these after the run

    def _connect(self) -> Any:
        if self._client is None:
            try:
                self._client = self._distributed.Client(
                    self._scheduler, timeout=self._timeout, set_as_default=False)
            except (OSError, TimeoutError, ValueError) as error:
                raise ConfigError(f"cannot reach the Dask scheduler at {self._scheduler}: "
                                  f"{error}") from None
        return self._client

    def start(self, hosts: Sequence[Host], job: Job) -> Iterator[HostResult | Output]:
        """Submit one task per shard; yield each host's result as it arrives."""
        if job.transfer is not None:  # its local paths name files on this machine
            raise ConfigError("file transfers (put/get) cannot run on a Dask cluster")
        if not hosts:
            return iter(())
        client = self._connect()
        self._cancelled.clear()
        job = dataclasses.replace(job, keep_connections=False, options=self._options(job))
        run_id = uuid.uuid4().hex
        size = self.shard_size
        sizing = min(size, len(hosts))
        shards = [Shard(run_id, n, first, tuple(hosts[first:first + size]), job, self._local,
                        sizing) for n, first in enumerate(range(0, len(hosts), size))]
        queue = self._distributed.Queue
        results = queue(shards[0].name("results"), client=client)
        tickets = [queue(s.name(f"ticket-{s.number}"), client=client) for s in shards]
        for ticket in tickets:
            ticket.put(1)
        # retries=0 covers exceptions only; the tickets cover a worker dying mid-task.
        futures = {s.number: client.submit(run_shard, s, key=s.name(f"shard-{s.number}"),
                                           pure=False, retries=0) for s in shards}
        self._run = _Run(run_id, hosts, size, futures, results, tickets)
        return self._results(self._run)

    def _options(self, job: Job) -> Any:
        options = job.options
        if not options.secrets():
            return options
        address = str(self._connect().scheduler.address)
        if self._send_secrets and address.startswith("tls://"):
            return options
        if self._send_secrets:
            raise ConfigError("send_secrets needs a scheduler reached over TLS (tls://...), "
                              f"not {address}")
        self.notes = ["the password/passphrase/sudo password was not sent to the Dask "
                      "workers; they use their own keys (and sudo -n)"]
        return options.replace(password=None, passphrase=None, sudo_password=None)

    def _results(self, run: _Run) -> Iterator[HostResult | Output]:
        try:
            while len(run.done) < len(run.hosts) and not self._cancelled.is_set():
                # Futures first: a shard that ended has put all it sent, so the drain
                # below still finds its results before its silent hosts are lost.
                ended = [n for n, f in run.futures.items() if f.done()]
                for index, *data in self._drain(run, wait=not ended):
                    if index in run.done:
                        continue  # from a shard already given up on
                    if len(data) == 2:
                        yield Output(run.hosts[index].name, data[0], data[1])
                    else:
                        run.done.add(index)
                        yield _unpack(data[0])
                for number in ended:
                    yield from self._lose(run, number, self._why(run.futures.pop(number)))
        finally:
            self._release(run)

    def _drain(self, run: _Run, wait: bool) -> list[Any]:
        # Polled: a queue get that times out is logged as an error by the scheduler.
        items = list(run.results.get(batch=True))
        if not items and wait:
            self._cancelled.wait(_POLL)
        return items

    def _why(self, future: Any) -> str:
        if future.status == "finished":
            return "the Dask shard ended without a result for this host"
        if future.status == "error":
            error = future.exception()
            if isinstance(error, ConfigError):  # its local backend could not start
                return f"on the Dask worker: {error}"
            if not isinstance(error, (SecondAttempt, self._distributed.KilledWorker)):
                return f"the Dask shard failed ({type(error).__name__}: {error}); " \
                       "the command may or may not have run"
        return LOST

    def _lose(self, run: _Run, shard: int, message: str) -> Iterator[HostResult]:
        first = shard * run.shard_size
        for index in range(first, min(first + run.shard_size, len(run.hosts))):
            if index not in run.done:
                run.done.add(index)
                yield HostResult(run.hosts[index].name, Status.ERROR, error=message)

    def _release(self, run: _Run) -> None:
        if self._run is run:
            self._run = None
        if len(run.done) < len(run.hosts):  # left early (a shard still ending is left be)
            self._stop(run)
        for handle in (run.results, *run.tickets):
            handle.close()

    def _stop(self, run: _Run) -> None:
        if run.stopped:
            return
        run.stopped = True
        stop = self._distributed.Event(f"fleetexec-{run.id}-stop", client=self._client)
        stop.set()  # Dask does not interrupt a running task: its shard's watcher sees this
        self._stops.append(stop)
        self._client.cancel(list(run.futures.values()))

    def cancel(self) -> None:
        """Stop the run: every shard's future is cancelled and its local backend stopped."""
        self._cancelled.set()
        if (run := self._run) is not None:
            self._stop(run)

    def close(self) -> None:
        """Forget the run's events; close the client if this backend opened it."""
        if self._client is None:
            return
        for stop in self._stops:
            stop.clear()
        self._stops = []
        if self._client is not self._scheduler:
            self._client.close()
            self._client = None
