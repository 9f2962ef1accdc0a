"""Backends: where the sessions of a run execute. They move plain data; they decide no policy.

A backend takes resolved hosts and a `Job` and yields one `HostResult` per
host as each finishes; precedence, host-key trust and exit codes are decided
before (resolve, the ssh layer) and after (`FleetSession`, the CLI).

- `ProcessBackend`: worker processes of our own, many sessions each (the default);
- `InProcessBackend`: threads in the caller, no subprocesses (debugging, tiny fleets);
- `fleetexec.agent.AgentBackend`: the `--persist` agent behind a Unix socket;
- `fleetexec.testing.ScriptedBackend`: `MockHost` scripts, no sockets, for unit tests.

A distributed backend fits the same protocol: cut the hosts into shards,
run each shard on a local backend elsewhere, yield results as they come back.
"""

from __future__ import annotations

import math
import os
import resource
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from ..host import Host
from ..options import Options, builtin
from ..results import HostResult
from ..transfer import Transfer

__all__ = ["Backend", "Job", "Output", "Plan", "plan", "raisable_open_files", "raise_open_files"]


@dataclass(frozen=True)
class Job:
    """What to do on every host: the command and the run's settings (paths absolute)."""

    command: str
    options: Options
    keep_connections: bool = False  # a session that will run again keeps them open
    stream_output: bool = False  # also yield `Output` chunks as they arrive
    stdin: bytes | None = None  # sent to every host's command, then end of file
    # Files to move instead of running `command` (`fleetexec.transfer`); a backend that
    # cannot do transfers must refuse such a job (ConfigError), never run `command`.
    transfer: Transfer | None = None


@dataclass(frozen=True, slots=True)
class Output:
    """A chunk of a host's output as it arrived (only for jobs with `stream_output`)."""

    host: str
    stream: Literal["stdout", "stderr"]
    data: bytes


@runtime_checkable
class Backend(Protocol):
    """Runs jobs; `FleetSession` is its only caller."""

    def start(self, hosts: Sequence[Host], job: Job) -> Iterator[HostResult | Output]:
        """Run `job` on `hosts` (unique names); yield each host's result as it finishes.

        Yields exactly one result per host unless cancelled; a host the
        backend lost (a dead worker, a dead agent) is yielded as an `error`
        result saying so. With `job.stream_output`, a host's `Output` chunks
        come before its result. Raises `ConfigError` if the job cannot start.
        """
        ...

    def cancel(self) -> None:
        """Stop the current run now, from any thread; `start`'s iterator then ends."""
        ...

    def close(self) -> None:
        """Release everything (kept connections, processes). Idempotent."""
        ...


HANDSHAKES_IN_FLIGHT = 128  # more at once overflowed one sshd's accept queue and lost hosts
FDS_RESERVED = 64  # files a worker process needs besides one socket per session


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


def plan(hosts: int, options: Options, *, cores: int | None = None,
         open_files: int | None = None) -> Plan:
    """Size a run of `hosts`: about one process per core, sessions capped by open files.

    `open_files` is the limit each process runs under (default: this process's soft
    RLIMIT_NOFILE); processes of our own may raise theirs to `raisable_open_files()`.
    """
    wanted = max(1, min(options.parallel or builtin("parallel"), hosts))
    cores = cores or os.cpu_count() or 1
    procs = min(options.processes or max(1, min(cores, math.ceil(hosts / 32))), wanted)
    if open_files is None:
        open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    fd_cap = max(1, open_files - FDS_RESERVED)
    threads = max(1, min(math.ceil(wanted / procs), fd_cap))  # one socket per session
    handshakes = max(1, min(threads, math.ceil(HANDSHAKES_IN_FLIGHT / procs)))
    return Plan(procs, threads, handshakes)


def raisable_open_files() -> int:
    """The open-files limit a process of ours can give itself: the hard limit (capped)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return _OPEN_FILES_MAX if hard == resource.RLIM_INFINITY else min(hard, _OPEN_FILES_MAX)


def raise_open_files(needed: int) -> None:
    """Raise this process's soft open-files limit to `needed` (at most the hard limit).

    Only for processes of our own (workers): the caller's limits are never changed.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass  # stays as it was; the sessions were sized for the hard limit, see plan


_OPEN_FILES_MAX = 1 << 20  # Linux's default fs.nr_open
