"""The one precedence rule: which value of each per-host setting a host ends up with.

From strongest to weakest:

1. explicit values: what is written on a target (`alice@web1:2222`) and the
   `Options` given by CLI flags or API keywords;
2. the inventory host, then its groups (a child beats its parents), then the
   inventory's defaults (already merged by `inventory.py` into the `Host`);
3. the built-in defaults (`Options` field metadata).

A flag that contradicts what is written on the target itself (`-p 2200` with
`web1:2222`, `-u bob` with `alice@web1`) is a `ConfigError` naming both:
across a fleet, a silent pick would hide a typo. Used by the CLI, the API
and the agent alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from .exceptions import ConfigError
from .host import Host
from .options import Options, builtin, expand

__all__ = ["resolve"]


def resolve(hosts: Iterable[Host | str] | Host | str, options: Options) -> list[Host]:
    """Hosts with the run's settings applied by the precedence rule, paths made absolute.

    Strings are targets such as `"deploy@web[01-20]:2222"`. Raises
    `ConfigError` for a bad target, a contradiction, or a name given twice.
    """
    from .inventory import hosts_from_targets

    items = [hosts] if isinstance(hosts, str | Host) else list(hosts)
    resolved: list[Host] = []
    for item in items:
        if isinstance(item, str):
            found = hosts_from_targets([item])
        elif isinstance(item, Host):
            found = [item]
        else:
            raise ConfigError(f"not a host: {item!r}")
        resolved.extend(_apply(host, options) for host in found)
    names = [h.name for h in resolved]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"host {twice!r} appears twice in one run")
    return resolved


def _apply(host: Host, options: Options) -> Host:
    changes: dict[str, Any] = {}
    for name in ("user", "port", "connect_timeout", "command_timeout"):
        wanted = getattr(options, name)
        if wanted is None:
            continue
        if name in host.explicit and getattr(host, name) != wanted:
            raise ConfigError(f"{host.name}: the target says {name} {getattr(host, name)!r} "
                              f"but the option says {wanted!r}; drop one")
        changes[name] = wanted
    for name in ("connect_timeout", "command_timeout"):
        if changes.get(name, getattr(host, name)) is None:
            changes[name] = builtin(name)
    if changes.get("user", host.user) is None:
        changes["user"] = _local_user()
    key_files = options.key_files or host.key_files
    changes["key_files"] = tuple(expand(p) for p in key_files)
    if host.known_hosts_file:
        changes["known_hosts_file"] = expand(host.known_hosts_file)
    try:
        return replace(host, **changes)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _local_user() -> str:
    import getpass

    return getpass.getuser()
