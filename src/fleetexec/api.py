"""`FleetSession`, the one engine, and `run` / `run_one`, a session used once.

Every path (the CLI, scripts, the `--persist` agent) runs through
`FleetSession`: it resolves the hosts with the one precedence rule, hands the
job to a backend and collects what comes back. Backends move data; the
session decides what a lost or interrupted host means.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from .backends import Backend, Job, Output
from .exceptions import ConfigError
from .host import Host
from .options import Options
from .resolve import identity_notes, resolve
from .results import Collector, FleetResult, HostResult, OnResult, Status
from .transfer import SAFE_COMMAND, Transfer, get_transfer, put_transfer

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


def _claim_directories(directory: str, names: list[str]) -> None:
    """`get`: LOCALDIR made if missing, and one distinct directory name per host."""
    from .outdir import file_stem

    seen: dict[str, str] = {}
    for name in names:
        try:
            stem = file_stem(name)
        except ValueError as error:
            raise ConfigError(f"get: {error}") from None
        earlier = seen.setdefault(stem.casefold(), name)
        if earlier != name:
            raise ConfigError(f"get: hosts {earlier!r} and {name!r} differ only in case and "
                              "would share a directory on a case-insensitive file system")
    try:
        os.mkdir(directory, 0o777)
    except FileExistsError:
        pass
    except OSError as error:
        raise ConfigError(f"get: cannot create {directory}: {error.strerror or error}") from None


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
        # Remarks for the user (the CLI prints them): what the ssh config asks and fleetexec
        # does not do, default identity files that are skipped.
        self.notes: list[str] = []
        self.hosts = resolve(hosts, self.options, self.notes)
        self.notes.extend(identity_notes(self.hosts, self.options))
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

    def put(self, local_paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
            remote: str, *, recursive: bool = False, preserve: bool = False,
            checksum: bool = False, on_result: OnResult | None = None) -> FleetResult:
        """Copy local files (directories with `recursive`) to `remote` on every host, over SFTP.

        `remote` is a directory that exists (each file goes into it), or, for
        one source, the new name. Each file is written to a temporary name
        and renamed into place, so a cut transfer never leaves a half file
        under the real name. `preserve` keeps modes and mtimes; `checksum`
        compares SHA-256 (the host's by `sha256sum`) before the rename; sizes
        are always checked. The command deadline (`command_timeout`) bounds
        each host's transfer. A host's stdout is a one-line summary; a file
        error is `failed` with the path in `error`. Rules: `fleetexec.transfer`.

        >>> fleet.put(["app.conf"], "/etc/app/", preserve=True).raise_on_failure()
        """
        return self.transfer(put_transfer(local_paths, remote, recursive=recursive,
                                          preserve=preserve, checksum=checksum),
                             on_result=on_result)

    def get(self, remote: str, local_dir: str | os.PathLike[str], *, recursive: bool = False,
            preserve: bool = False, checksum: bool = False, force: bool = False,
            on_result: OnResult | None = None) -> FleetResult:
        """Copy `remote` (a directory with `recursive`) from every host to `local_dir/<host>/`.

        `get("/etc/hosts", "out")` writes `out/web1/hosts`, `out/web2/hosts`, ...
        An existing local file fails that host unless `force`; no symlink
        below `local_dir` is ever followed; `local_dir` is created if missing.
        Otherwise as `put` (rules: `fleetexec.transfer`).

        >>> fleet.get("/var/log/app.log", "logs", checksum=True)
        """
        return self.transfer(get_transfer(remote, local_dir, recursive=recursive,
                                          preserve=preserve, checksum=checksum, force=force),
                             on_result=on_result)

    def transfer(self, transfer: Transfer, *, on_result: OnResult | None = None) -> FleetResult:
        """Do `transfer` (see `put` and `get`) on every host; return when all have finished."""
        if self.options.sudo:
            raise ConfigError("put/get do not run through sudo: files move as the login user")
        if transfer.direction == "get":
            _claim_directories(transfer.destination, [h.name for h in self.hosts])
        begin = time.monotonic()
        collector = Collector([h.name for h in self.hosts], on_result)
        try:
            for result in self._results(SAFE_COMMAND, None, transfer=transfer):
                collector.add(result)
        except KeyboardInterrupt:
            self.cancel()
        self._fill_pending(collector)
        return collector.result(round(time.monotonic() - begin, 6), self._cancelled)

    def cancel(self) -> None:
        """Stop the current run (from any thread); its unfinished hosts end `interrupted`."""
        self._cancelled = True
        self.backend.cancel()

    def close(self) -> None:
        """Close every kept connection and release the backend's processes."""
        self.backend.close()

    def _results(self, command: str, on_output: OnOutput | None,
                 stdin: bytes | None = None, *,
                 transfer: Transfer | None = None) -> Iterator[HostResult]:
        """Every host's result, batch after batch; hosts after too many failures are skipped."""
        if not isinstance(command, str) or not command.strip():
            raise ConfigError("the command is empty")
        self._cancelled = False
        job = Job(command, self.options, self._keep, stream_output=on_output is not None,
                  stdin=stdin, transfer=transfer)
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
