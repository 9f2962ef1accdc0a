"""`FleetSession`, the one engine, and `run` / `run_one`, a session used once.

Every path (the CLI, scripts, the `--persist` agent) runs through
`FleetSession`: it resolves the hosts with the one precedence rule, hands the
job to a backend and collects what comes back. Backends move data; the
session decides what a lost or interrupted host means.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from .backends import Backend, Job, Output
from .exceptions import ConfigError
from .host import Host
from .options import Options
from .resolve import resolve
from .results import Collector, FleetResult, HostResult, OnResult, Status

__all__ = ["FleetSession", "run", "run_one"]

Hosts = Iterable[Host | str] | Host | str
OnOutput = Callable[[Output], object]


def _count(value: int | str | None, total: int) -> int | None:
    """`N` or `N%` of `total` (a percentage rounds up, at least 1)."""
    if value is None:
        return None
    if isinstance(value, str):
        return max(1, math.ceil(total * float(value.rstrip("%")) / 100))
    return value


def _options(options: Options | None, overrides: dict[str, Any]) -> Options:
    if "timeout" in overrides:  # 0.1's name, kept for one release
        warnings.warn("timeout= is now command_timeout=", DeprecationWarning, stacklevel=3)
        overrides["command_timeout"] = overrides.pop("timeout")
    return (options or Options()).replace(**overrides)


def run(hosts: Hosts, command: str, options: Options | None = None, *,
        on_result: OnResult | None = None, backend: Backend | None = None,
        **overrides: Any) -> FleetResult:
    """Run `command` on every host, in parallel, and return every host's result.

    `hosts` are `Host` records (from `load_inventory(...).select(...)`) or
    targets such as `"deploy@web[01-20]:2222"`. Settings come from `options`
    and keyword overrides of its fields (`user=`, `command_timeout=`, ...);
    see `Options`. `on_result` is called in this process as each host
    finishes. A failure on a host is a `HostResult`, never an exception.
    No `if __name__ == "__main__":` guard is needed.

    >>> result = fleetexec.run(["web1", "web2"], "df -h /", key_files=["~/.ssh/id_ed25519"])
    >>> for name, r in result.items():
    ...     print(name, r.status, r.stdout_text)
    """
    with FleetSession(hosts, _options(options, overrides), backend=backend,
                      keep_connections=False) as session:
        return session.run(command, on_result=on_result)


def run_one(host: Host | str, command: str, options: Options | None = None, *,
            backend: Backend | None = None, **overrides: Any) -> HostResult:
    """Run `command` on one host and return its `HostResult`.

    >>> fleetexec.run_one("deploy@web1", "uptime").stdout_text
    """
    if not isinstance(host, str | Host):
        raise ConfigError(f"run_one takes one host, not {host!r}")
    result = run([host], command, _options(options, overrides), backend=backend)
    if len(result) != 1:
        raise ConfigError(f"run_one takes one host, but {host!r} names {len(result)}")
    return next(iter(result.values()))


class FleetSession:
    """The engine: run commands on a fixed set of hosts, keeping connections open between them.

    The first command connects; later ones reuse each host's connection
    (a connection that died in between is replaced; host keys are verified
    whenever one is made). `backend` chooses where sessions run (default:
    worker processes of our own; see `fleetexec.backends`).

    >>> with fleetexec.FleetSession(inventory.select("web"), command_timeout=30) as fleet:
    ...     before = fleet.run("cat /etc/app/version")
    ...     for result in fleet.stream("systemctl restart app"):
    ...         print(result.host, result.status)
    """

    def __init__(self, hosts: Hosts, options: Options | None = None, *,
                 backend: Backend | None = None, keep_connections: bool = True,
                 **overrides: Any) -> None:
        self.options = _options(options, overrides).absolute()
        self.hosts = resolve(hosts, self.options)
        if backend is None:
            from .backends.process import ProcessBackend

            backend = ProcessBackend()
        self.backend = backend
        self._keep = keep_connections
        self._cancelled = False

    def run(self, command: str, *, on_result: OnResult | None = None,
            on_output: OnOutput | None = None, stdin: bytes | None = None) -> FleetResult:
        """Run `command` on every host; return when all have finished (see `fleetexec.run`).

        `on_result` sees each `HostResult` as its host finishes, `on_output`
        each chunk of output as it arrives (`Output(host, stream, data)`).
        `stdin` is sent to every host's command (which then gets end of file).
        Ctrl-C stops the run: hosts not finished are `interrupted` and the
        result has `interrupted=True`.
        """
        begin = time.monotonic()
        collector = Collector([h.name for h in self.hosts], on_result)
        try:
            for result in self._results(command, on_output, stdin):
                collector.add(result)
        except KeyboardInterrupt:
            self.cancel()
        self._fill_pending(collector)
        return collector.result(round(time.monotonic() - begin, 6), self._cancelled)

    def stream(self, command: str, *, on_output: OnOutput | None = None,
               stdin: bytes | None = None) -> Iterator[HostResult]:
        """Run `command`; yield each host's `HostResult` as it finishes.

        Leaving the loop early cancels the hosts not yet finished.

        >>> for result in fleet.stream("uptime"):
        ...     print(result.host, result.stdout_text.strip())
        """
        collector = Collector([h.name for h in self.hosts])
        finished = False
        try:
            for result in self._results(command, on_output, stdin):
                if collector.add(result):
                    yield result
            finished = True
        finally:
            if not finished:
                self.cancel()
        missing = Collector(collector.pending)
        self._fill_pending(missing)
        yield from missing.result(0.0).values()

    def cancel(self) -> None:
        """Stop the current run (from any thread); its unfinished hosts end `interrupted`."""
        self._cancelled = True
        self.backend.cancel()

    def close(self) -> None:
        """Close every kept connection and release the backend's processes."""
        self.backend.close()

    def _results(self, command: str, on_output: OnOutput | None,
                 stdin: bytes | None = None) -> Iterator[HostResult]:
        """Every host's result, batch after batch; hosts after too many failures are skipped."""
        if not isinstance(command, str) or not command.strip():
            raise ConfigError("the command is empty")
        self._cancelled = False
        job = Job(command, self.options, self._keep, stream_output=on_output is not None,
                  stdin=stdin)
        total = len(self.hosts)
        size = _count(self.options.batch, total) or total
        limit = 0 if self.options.fail_fast else _count(self.options.max_fail, total)
        failures = 0
        for first in range(0, total, max(1, size)):
            batch = self.hosts[first:first + size]
            if limit is not None and failures > limit:
                reason = (f"not started: {failures} host(s) had failed, more than the "
                          f"{'--fail-fast' if self.options.fail_fast else '--max-fail'} limit "
                          f"of {limit}")
                yield from (HostResult(h.name, Status.SKIPPED, error=reason) for h in batch)
                continue
            for event in self.backend.start(batch, job):
                if isinstance(event, Output):
                    if on_output is not None:
                        on_output(event)
                    continue
                failures += not event.ok
                yield event
            if self._cancelled:
                return

    def _fill_pending(self, collector: Collector) -> None:
        # The one place a host without a result gets one: the run was stopped, or
        # the backend ended without it (a backend bug: say so rather than hide it).
        for name in collector.pending:
            if self._cancelled:
                collector.add(HostResult(name, Status.INTERRUPTED,
                                         error="interrupted before it finished"))
            else:
                collector.add(HostResult(name, Status.ERROR, error="the backend ended "
                                         "without a result for this host"))

    def __enter__(self) -> FleetSession:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
