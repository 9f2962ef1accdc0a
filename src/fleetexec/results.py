"""Result records and the callback aggregator. Pure stdlib, no I/O.

`HostResult` is what one host produced, `FleetResult` the whole run (an
immutable mapping in inventory order), `Collector` the aggregator that the
executor feeds as each host finishes.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from .exceptions import FleetFailure

__all__ = ["Collector", "FleetResult", "HostResult", "Status"]


class Status(str, enum.Enum):
    """What happened on one host. Only `OK` means the command ran and exited 0.

    Ran, but did not succeed: `FAILED` (non-zero exit), `KILLED` (by a signal),
    `NO_EXIT_STATUS` (the server never said). Never got to run, or lost it:
    `UNREACHABLE`, `AUTH_FAILED`, `HOSTKEY_UNKNOWN`, `HOSTKEY_CHANGED`,
    `PROTOCOL_ERROR`, `CONNECTION_LOST`, `ERROR`. `TIMEOUT`: a deadline
    passed. `INTERRUPTED`: the run was stopped (Ctrl-C) before this host ended.
    `SKIPPED`: never started, because earlier batches failed too often
    (`max_fail`, `fail_fast`); it does not count as a failure.
    """

    OK = "ok"
    FAILED = "failed"
    KILLED = "killed"
    NO_EXIT_STATUS = "no_exit_status"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    AUTH_FAILED = "auth_failed"
    HOSTKEY_UNKNOWN = "hostkey_unknown"
    HOSTKEY_CHANGED = "hostkey_changed"
    PROTOCOL_ERROR = "protocol_error"
    CONNECTION_LOST = "connection_lost"
    INTERRUPTED = "interrupted"
    ERROR = "error"
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value

    @property
    def ran(self) -> bool:
        """True when the command ran to an end the server reported."""
        return self in (Status.OK, Status.FAILED, Status.KILLED, Status.NO_EXIT_STATUS)


# Exit codes, in order of precedence: the first that applies to any host wins.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_TIMEOUT = 4
EXIT_INTERRUPTED = 130

_EXIT_BY_STATUS = {
    Status.OK: EXIT_OK,
    Status.FAILED: EXIT_FAILED,
    Status.KILLED: EXIT_FAILED,
    Status.NO_EXIT_STATUS: EXIT_FAILED,
    Status.TIMEOUT: EXIT_TIMEOUT,
    Status.INTERRUPTED: EXIT_INTERRUPTED,
    Status.SKIPPED: EXIT_OK,  # the failures that caused the skipping set the exit code
}
_EXIT_PRECEDENCE = (EXIT_INTERRUPTED, EXIT_UNREACHABLE, EXIT_TIMEOUT, EXIT_FAILED, EXIT_OK)


def exit_code_for(statuses: Iterable[Status]) -> int:
    """The process exit code for a run whose hosts ended with `statuses`.

    0 all ok; 1 some command failed, was killed or gave no exit status; 3 some
    host could not be reached, verified, authenticated or kept; 4 some host
    timed out; 130 interrupted. Precedence when several apply: 130, 3, 4, 1.
    (2 is for usage and inventory errors, when nothing ran.)
    """
    found = {_EXIT_BY_STATUS.get(status, EXIT_UNREACHABLE) for status in statuses}
    return next((code for code in _EXIT_PRECEDENCE if code in found), EXIT_OK)


@dataclass(frozen=True, slots=True)
class HostResult:
    """What one host produced.

    `stdout`/`stderr` are the raw bytes received (at most the run's cap each;
    `stdout_truncated`/`stderr_truncated` say more arrived and was dropped).
    `exit_code` is `None` unless the server reported one; `signal` names the
    signal that killed the command (`"KILL"`), if any. `error` is a one-line,
    secret-free explanation when the status is not ok/failed.
    """

    host: str
    status: Status
    exit_code: int | None = None
    signal: str | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    started: float = 0.0
    duration: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the command ran and exited 0."""
        return self.status is Status.OK

    @property
    def truncated(self) -> bool:
        """True when either stream was cut at the output cap."""
        return self.stdout_truncated or self.stderr_truncated

    @property
    def stdout_text(self) -> str:
        """stdout decoded as UTF-8, invalid bytes replaced (not sanitised for a terminal)."""
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self) -> str:
        """stderr decoded as UTF-8, invalid bytes replaced (not sanitised for a terminal)."""
        return self.stderr.decode("utf-8", "replace")


@dataclass(frozen=True)
class FleetResult(Mapping[str, HostResult]):
    """Every host's `HostResult`, keyed by host name, in inventory order.

    >>> result = fleetexec.run(["web1", "web2"], "uptime")
    >>> result.succeeded.keys(), result.failed.keys()
    >>> result.raise_on_failure()   # FleetFailure if any host did not succeed
    """

    results: Mapping[str, HostResult]
    wall_time: float = 0.0
    interrupted: bool = field(default=False)

    def __getitem__(self, host: str) -> HostResult:
        return self.results[host]

    def __iter__(self) -> Iterator[str]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    @property
    def succeeded(self) -> dict[str, HostResult]:
        """Hosts whose command ran and exited 0."""
        return {name: r for name, r in self.results.items() if r.ok}

    @property
    def failed(self) -> dict[str, HostResult]:
        """Hosts that did not succeed, for whatever reason (skipped hosts aside)."""
        return {name: r for name, r in self.results.items()
                if not r.ok and r.status is not Status.SKIPPED}

    @property
    def skipped(self) -> dict[str, HostResult]:
        """Hosts never started because earlier batches failed (`max_fail`, `fail_fast`)."""
        return {name: r for name, r in self.results.items() if r.status is Status.SKIPPED}

    @property
    def ok(self) -> bool:
        """True when every host succeeded (and there was at least one)."""
        return bool(self.results) and all(r.ok for r in self.results.values())

    def counts(self) -> dict[Status, int]:
        """Number of hosts per status, in `Status` order, zero counts left out."""
        counts = {status: 0 for status in Status}
        for result in self.results.values():
            counts[result.status] += 1
        return {status: n for status, n in counts.items() if n}

    @property
    def exit_code(self) -> int:
        """The documented process exit code for this run (see `exit_code_for`)."""
        return exit_code_for(r.status for r in self.results.values())

    def gathered(self) -> list[tuple[list[str], HostResult]]:
        """Hosts with identical status, exit code and output, folded into groups.

        Returns `(host names, one representative result)` pairs, largest group
        first, ties in inventory order — the clubak / `clush -b` view.
        """
        groups: dict[tuple[object, ...], list[str]] = {}
        for name, r in self.results.items():
            key = (r.status, r.exit_code, r.signal, r.stdout, r.stderr, r.error, r.truncated)
            groups.setdefault(key, []).append(name)
        ordered = sorted(groups.values(), key=len, reverse=True)
        return [(names, self.results[names[0]]) for names in ordered]

    def raise_on_failure(self) -> FleetResult:
        """Raise `FleetFailure` if any host did not succeed; else return self."""
        if not self.ok:
            raise FleetFailure(self)
        return self


OnResult = Callable[[HostResult], object]
_SHARED_BY_HASH = 4096  # shorter outputs are deduplicated by hash
_END = 512  # bytes at each end that, with the length, group larger ones
_ALIKE_MAX = 8  # distinct outputs kept per group for comparison


class Collector:
    """The callback aggregator: collects results as hosts finish. Never raises.

    The executor calls `add()` from its result thread; a raising `on_result`
    callback is reported on stderr once and then ignored, because an
    exception there would kill the pool's result handling and hang the run.
    """

    def __init__(self, host_names: Iterable[str], on_result: OnResult | None = None) -> None:
        self._order = list(dict.fromkeys(host_names))
        self._known = set(self._order)
        self._results: dict[str, HostResult] = {}
        self._outputs: dict[bytes, bytes] = {}
        self._large: dict[tuple[int, bytes, bytes], list[bytes]] = {}
        self._on_result = on_result
        self.callback_error: str | None = None

    def add(self, result: HostResult) -> bool:
        """Record `result`; False (and ignored) if that host already has one."""
        if result.host in self._results or result.host not in self._known:
            return False
        # Fleets mostly print the same thing: keep one copy of each distinct output.
        stdout, stderr = self._shared(result.stdout), self._shared(result.stderr)
        if stdout is not result.stdout or stderr is not result.stderr:
            result = dataclasses.replace(result, stdout=stdout, stderr=stderr)
        self._results[result.host] = result
        if self._on_result is not None and self.callback_error is None:
            try:
                self._on_result(result)
            except Exception:  # a user callback must not take the run down
                self.callback_error = traceback.format_exc(limit=3)
                print(f"fleetexec: on_result callback raised, now ignored:\n"
                      f"{self.callback_error}", file=sys.stderr)
        return True

    def _shared(self, data: bytes) -> bytes:
        """The copy of `data` kept already, if any (else `data`, now kept).

        A large output is not hashed whole (a megabyte costs more to hash than to
        compare): its length and ends find the outputs it may equal.
        """
        if len(data) < _SHARED_BY_HASH:
            return self._outputs.setdefault(data, data)
        alike = self._large.setdefault((len(data), data[:_END], data[-_END:]), [])
        for kept in alike:
            if kept == data:
                return kept
        if len(alike) < _ALIKE_MAX:
            alike.append(data)
        return data

    def has(self, host: str) -> bool:
        """True when `host` already has a result."""
        return host in self._results

    @property
    def complete(self) -> bool:
        """True once every host has a result (cheap: checked after every message)."""
        return len(self._results) == len(self._order)

    @property
    def pending(self) -> list[str]:
        """Hosts still without a result, in inventory order."""
        return [name for name in self._order if name not in self._results]

    def result(self, wall_time: float, interrupted: bool = False) -> FleetResult:
        """The `FleetResult` of everything added so far, in inventory order."""
        ordered = {n: self._results[n] for n in self._order if n in self._results}
        return FleetResult(ordered, wall_time=wall_time, interrupted=interrupted)
