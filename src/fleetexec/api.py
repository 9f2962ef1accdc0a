"""`fleetexec.run` and `FleetSession`: the Python entry points, thin layers over the executor."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Literal

from .exceptions import ConfigError
from .executor import WorkerPool, execute, plan
from .host import Host
from .results import FleetResult, OnResult
from .ssh.options import DEFAULT_KNOWN_HOSTS, Secret, SessionOptions, expand

__all__ = ["FleetSession", "HostKeyPolicy", "run"]

HostKeyPolicy = Literal["strict", "accept-new"]

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_OUTPUT = 1024 * 1024


def run(
    hosts: Iterable[Host | str],
    command: str,
    *,
    user: str | None = None,
    port: int | None = None,
    key_files: Sequence[str] = (),
    known_hosts: Sequence[str] = (),
    system_known_hosts: bool = True,
    host_key_policy: HostKeyPolicy = "strict",
    require_strict_kex: bool = False,
    parallel: int | None = None,
    processes: int | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    timeout: float = DEFAULT_TIMEOUT,
    max_output: int = DEFAULT_MAX_OUTPUT,
    use_agent: bool = False,
    password: str | None = None,
    passphrase: str | None = None,
    on_result: OnResult | None = None,
) -> FleetResult:
    """Run `command` on every host, in parallel, and return every host's result.

    `hosts` are `Host` records (from `load_inventory(...).select(...)`) or
    strings such as `"deploy@web[01-20]:2222"`. `user`, `port` and `key_files`
    apply to hosts that do not set their own. Host keys are checked strictly
    against `known_hosts` files (plus `~/.ssh/known_hosts` and
    `/etc/ssh/ssh_known_hosts` unless `system_known_hosts=False`);
    `host_key_policy="accept-new"` records keys of hosts never seen before in
    the host's own known_hosts file, else the first of `known_hosts`, else
    `~/.ssh/known_hosts`, and still refuses changed keys. `require_strict_kex`
    refuses servers without the Terrapin countermeasure (`protocol_error`,
    before any credential is sent). `connect_timeout`
    bounds TCP connect + handshake + auth; `timeout` bounds the command from
    exec (0 = none). `on_result` is called in this process as each host
    finishes. A failure on a host is a `HostResult`, never an exception.

    >>> result = fleetexec.run(["web1", "web2"], "df -h /", key_files=["~/.ssh/id_ed25519"])
    >>> for name, r in result.items():
    ...     print(name, r.status, r.stdout_text)
    """
    _check_command(command)
    resolved, options = _prepare(
        hosts, user=user, port=port, key_files=key_files, known_hosts=known_hosts,
        system_known_hosts=system_known_hosts, host_key_policy=host_key_policy,
        require_strict_kex=require_strict_kex, connect_timeout=connect_timeout, timeout=timeout,
        max_output=max_output, use_agent=use_agent, password=password, passphrase=passphrase)
    return execute(resolved, command, options, parallel=parallel, processes=processes,
                   on_result=on_result)


class FleetSession:
    """Keep every host's authenticated connection open across several commands.

    Takes the same options as `run` (but no command). The first `run()`
    connects; later ones reuse each host's connection in the same worker
    process, skipping the handshake. A connection that died in between is
    replaced transparently; host keys are verified whenever one is made.

    >>> with fleetexec.FleetSession(inventory.select("web"), timeout=30) as fleet:
    ...     before = fleet.run("cat /etc/app/version")
    ...     fleet.run("systemctl restart app")
    """

    def __init__(
        self,
        hosts: Iterable[Host | str],
        *,
        user: str | None = None,
        port: int | None = None,
        key_files: Sequence[str] = (),
        known_hosts: Sequence[str] = (),
        system_known_hosts: bool = True,
        host_key_policy: HostKeyPolicy = "strict",
        require_strict_kex: bool = False,
        parallel: int | None = None,
        processes: int | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        timeout: float = DEFAULT_TIMEOUT,
        max_output: int = DEFAULT_MAX_OUTPUT,
        use_agent: bool = False,
        password: str | None = None,
        passphrase: str | None = None,
    ) -> None:
        self.hosts, self._options = _prepare(
            hosts, user=user, port=port, key_files=key_files, known_hosts=known_hosts,
            system_known_hosts=system_known_hosts, host_key_policy=host_key_policy,
            require_strict_kex=require_strict_kex, connect_timeout=connect_timeout,
            timeout=timeout, max_output=max_output, use_agent=use_agent, password=password,
            passphrase=passphrase)
        self._sizing = plan(max(1, len(self.hosts)), parallel, processes)
        self._pool: WorkerPool | None = None

    def run(self, command: str, *, on_result: OnResult | None = None) -> FleetResult:
        """Run `command` on every host of the session; see `fleetexec.run`."""
        _check_command(command)
        if self._pool is None or self._pool.closed:  # first run, or after Ctrl-C
            self._pool = WorkerPool(self._options, self._sizing, reuse=True)
        return self._pool.run(self.hosts, command, on_result)

    def close(self) -> None:
        """Close every connection and stop the worker processes."""
        if self._pool is not None:
            self._pool.close(graceful=True)
            self._pool = None

    def __enter__(self) -> FleetSession:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _check_command(command: object) -> None:
    if not isinstance(command, str) or not command.strip():
        raise ConfigError("the command is empty")


def _prepare(
    hosts: Iterable[Host | str], *, user: str | None, port: int | None,
    key_files: Sequence[str], known_hosts: Sequence[str], system_known_hosts: bool,
    host_key_policy: str, require_strict_kex: bool, connect_timeout: float, timeout: float,
    max_output: int, use_agent: bool, password: str | None, passphrase: str | None,
) -> tuple[list[Host], SessionOptions]:
    """Validate the options and resolve the hosts; every path made absolute here,
    because workers run with the forkserver's working directory and HOME."""
    if host_key_policy not in ("strict", "accept-new"):
        raise ConfigError(
            f"host_key_policy must be 'strict' or 'accept-new', not {host_key_policy!r}"
        )
    if not connect_timeout > 0:
        raise ConfigError("connect_timeout must be > 0")
    if not timeout >= 0:
        raise ConfigError("timeout must be >= 0 (0 = no deadline)")
    if max_output < 0:
        raise ConfigError("max_output must be >= 0")
    resolved = _resolve_hosts(hosts, user, port, key_files)
    files = (*(DEFAULT_KNOWN_HOSTS if system_known_hosts else ()), *known_hosts)
    options = SessionOptions(
        connect_timeout=connect_timeout,
        command_timeout=timeout,
        host_key_policy=host_key_policy,
        require_strict_kex=require_strict_kex,
        known_hosts_files=tuple(expand(p) for p in files),
        accept_new_file=expand(known_hosts[0] if known_hosts else "~/.ssh/known_hosts"),
        use_agent=use_agent,
        agent_socket=os.environ.get("SSH_AUTH_SOCK") if use_agent else None,
        password=Secret(password) if password is not None else None,
        passphrase=Secret(passphrase) if passphrase is not None else None,
        max_output=max_output,
        preload_key_files=tuple(dict.fromkeys(p for h in resolved for p in h.key_files)),
    )
    return resolved, options


def _resolve_hosts(
    hosts: Iterable[Host | str], user: str | None, port: int | None, key_files: Sequence[str],
) -> list[Host]:
    from .inventory import hosts_from_targets

    keys = tuple(expand(p) for p in key_files)
    resolved: list[Host] = []
    for item in [hosts] if isinstance(hosts, str | Host) else hosts:
        if isinstance(item, str):
            found = hosts_from_targets([item])
            if port is not None:
                found = [h if ":" in item else replace(h, port=port) for h in found]
        elif isinstance(item, Host):
            found = [item]
        else:
            raise ConfigError(f"not a host: {item!r}")
        for host in found:
            resolved.append(replace(
                host,
                user=host.user or user,
                key_files=tuple(expand(p) for p in host.key_files) or keys,
                known_hosts_file=expand(host.known_hosts_file) if host.known_hosts_file else None,
            ))
    return resolved
