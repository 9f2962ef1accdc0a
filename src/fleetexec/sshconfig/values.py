"""Turning the lines that apply to a host into its settings (`HostConfig`).

For each keyword the first value obtained wins, except `IdentityFile` and
`CertificateFile`, which accumulate. `take` collects a line that applies;
`finish` checks and converts what was collected, expands tokens, and notes what
fleetexec does not do.
"""

from __future__ import annotations

import os
import pwd
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from ..exceptions import ConfigError
from ..patterns import match_list
from .keywords import HONOURED, NOTED, QUIET
from .reader import Line
from .tokens import PROXY_TOKENS, expand, expand_path, token_table

__all__ = ["HostConfig", "Presets", "Values", "finish", "parse_port", "single", "take"]

_MAX_IDENTITY_FILES = 100
_FLAGS = {"yes": True, "true": True, "no": False, "false": False}
_STRICT = {"yes": "yes", "true": "yes", "no": "no", "false": "no", "off": "no", "ask": "ask",
           "accept-new": "accept-new"}
_FAMILIES = ("any", "inet", "inet6")


@dataclass(frozen=True)
class Presets:
    """Values a stronger source set: like `ssh -l USER -p PORT -o HostName=HOST`."""

    user: str | None = None
    port: int | None = None
    hostname: str | None = None


@dataclass
class Values:
    """What one lookup has collected so far: first value of each keyword wins."""

    first: dict[str, Line] = field(default_factory=dict)
    identity_files: list[Line] = field(default_factory=list)
    others: list[Line] = field(default_factory=list)  # noted keywords, each as found
    jump: Line | None = None
    proxy_command: Line | None = None
    unknown: list[Line] = field(default_factory=list)


@dataclass(frozen=True)
class HostConfig:
    """What the ssh configuration says for one host (values from the files only).

    A field is `None` when the configuration does not set it, or when a
    stronger source preset it (`lookup`'s arguments). `where` names the file
    and line each honoured value came from. `notes` are one-line remarks on
    what the configuration asks and fleetexec does not do.
    """

    name: str
    hostname: str  # where ssh would connect: HostName (%h expanded, lower-cased) or the name
    user: str | None = None
    port: int | None = None
    address: str | None = None  # HostName, when the configuration set it
    identity_files: tuple[str, ...] = ()  # expanded, absolute, in order, duplicates dropped
    identities_only: bool | None = None
    identity_agent: str | None = None  # "none", "SSH_AUTH_SOCK", "$VAR" or a path
    connect_timeout: int | None = None
    user_known_hosts_files: tuple[str, ...] | None = None  # () for "none"
    global_known_hosts_files: tuple[str, ...] | None = None
    strict_host_key_checking: str | None = None  # yes, no, ask or accept-new
    host_key_alias: str | None = None
    check_host_ip: bool | None = None
    server_alive_interval: int | None = None
    server_alive_count_max: int | None = None
    address_family: str | None = None  # any, inet or inet6
    proxy_jump: str | None = None  # set and not "none"
    proxy_command: str | None = None
    where: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def take(values: Values, line: Line, final: bool) -> None:
    """Collect `line`, which applies to the host (`final`: in the final pass)."""
    keyword = line.keyword
    if keyword in ("identityfile", "certificatefile"):
        if keyword == "identityfile":
            single(line)
            values.identity_files.append(line)
            if len(values.identity_files) > _MAX_IDENTITY_FILES:
                raise ConfigError(f"{line.where}: too many identity files")
        else:
            values.others.append(line)
    elif keyword == "proxyjump":
        if values.jump is None and values.proxy_command is None:
            values.jump = line
    elif keyword == "proxycommand":
        if values.proxy_command is None and (values.jump is None
                                             or values.jump.args[0].lower() == "none"):
            values.proxy_command = line
    elif keyword in ("connecttimeout", "serveraliveinterval") and single(line) == "none":
        pass  # "none" leaves the value unset: a later line may still set it (readconf.c)
    elif keyword == "hostname" and final:
        pass  # ssh fixed the host name before the final pass
    elif keyword in HONOURED:
        values.first.setdefault(keyword, line)
    elif keyword == "ignoreunknown":
        values.first.setdefault(keyword, line)
    elif keyword in NOTED:
        if keyword not in values.first:
            values.first[keyword] = line
            values.others.append(line)
    elif keyword not in QUIET:
        values.unknown.append(line)


def finish(name: str, host: str, values: Values, presets: Presets, *, default_user: str,
           thishost: str, account: pwd.struct_passwd, notes: Sequence[str]) -> HostConfig:
    """The `HostConfig` for `name` (final host name `host`) from what was collected;
    `notes` (from `Match exec`) come first."""
    first = values.first
    where = {k: line.where for k, line in first.items() if k in HONOURED}
    out: dict[str, object] = {}
    notes = [*notes]
    if "hostname" in first and presets.hostname is None:
        out["address"] = host
    elif "hostname" in where:
        del where["hostname"]
    if "user" in first and presets.user is None:
        out["user"] = single(first["user"])
    else:
        where.pop("user", None)
    config_port = parse_port(first["port"]) if "port" in first else None
    if config_port is not None and presets.port is None:
        out["port"] = config_port
    else:
        where.pop("port", None)
    user = presets.user or (single(first["user"]) if "user" in first else default_user)
    alias = single(first["hostkeyalias"]).lower() if "hostkeyalias" in first else None
    tokens = token_table(thishost, account, host=host, original=name,
                         port=presets.port or config_port or 22, user=user, alias=alias)
    files: list[str] = []
    for line in values.identity_files:
        path = expand_path(single(line), tokens, line)
        if path not in files:
            files.append(path)
    if files:
        out["identity_files"] = tuple(files)
        where["identityfile"] = values.identity_files[0].where
    if "identitiesonly" in first:
        out["identities_only"] = _flag(first["identitiesonly"])
    if "checkhostip" in first:
        out["check_host_ip"] = _flag(first["checkhostip"])
    if "identityagent" in first:
        line = first["identityagent"]
        agent = single(line)
        out["identity_agent"] = agent if agent in ("none", "SSH_AUTH_SOCK") or (
            agent.startswith("$") and not agent.startswith("${")) else expand_path(agent, tokens,
                                                                                   line)
    if "connecttimeout" in first:
        out["connect_timeout"] = _seconds(first["connecttimeout"])
    if "userknownhostsfile" in first:
        line = first["userknownhostsfile"]
        out["user_known_hosts_files"] = () if line.args[0].lower() == "none" else tuple(
            expand_path(arg, tokens, line) for arg in line.args)
    if "globalknownhostsfile" in first:
        line = first["globalknownhostsfile"]  # used as written: no ~, no tokens (as ssh)
        out["global_known_hosts_files"] = () if line.args[0].lower() == "none" else tuple(
            os.path.abspath(arg) for arg in line.args)
    if "stricthostkeychecking" in first:
        out["strict_host_key_checking"] = _choice(first["stricthostkeychecking"], _STRICT)
    if alias is not None:
        out["host_key_alias"] = alias
    if "serveraliveinterval" in first:
        out["server_alive_interval"] = _seconds(first["serveraliveinterval"])
    if "serveralivecountmax" in first:
        out["server_alive_count_max"] = _integer(first["serveralivecountmax"])
    if "addressfamily" in first:
        out["address_family"] = _choice(first["addressfamily"],
                                        {f: f for f in _FAMILIES})
    if values.jump is not None and values.jump.args[0].lower() != "none":
        out["proxy_jump"] = expand(values.jump.args[0], tokens, PROXY_TOKENS, values.jump)
        where["proxyjump"] = values.jump.where
    if values.proxy_command is not None and values.proxy_command.rest.lower() != "none":
        out["proxy_command"] = values.proxy_command.rest
        where["proxycommand"] = values.proxy_command.where
    for line in values.others:
        value = " ".join(line.args)
        test, consequence = NOTED[line.keyword]
        if test(value):
            notes.append(f"{line.where}: {line.keyword} {value} is not supported; "
                         f"{consequence}")
    ignore = values.first.get("ignoreunknown")
    for line in values.unknown:
        if ignore is None or match_list(line.keyword, ignore.args[0].lower().split(",")) != 1:
            notes.append(f"{line.where}: unknown keyword {line.keyword!r} ignored")
    return HostConfig(name=name, hostname=host, where=where, notes=tuple(notes),
                      **out)  # type: ignore[arg-type]


# ---- one value --------------------------------------------------------------------------------


def single(line: Line) -> str:
    return line.args[0]


_T = TypeVar("_T")


def _flag(line: Line) -> bool:
    return _choice(line, _FLAGS)


def _choice(line: Line, choices: dict[str, _T]) -> _T:
    value = single(line).lower()
    if value not in choices:
        raise ConfigError(f"{line.where}: {line.keyword}: unsupported value {single(line)!r}"
                          f"; expected one of: {', '.join(choices)}")
    return choices[value]


def parse_port(line: Line) -> int:
    text = single(line)
    if text.isascii() and text.isdigit() and 0 < int(text) <= 65535:
        return int(text)
    try:
        return socket.getservbyname(text, "tcp")
    except OSError:
        raise ConfigError(f"{line.where}: badly formatted port number {text!r}") from None


def _integer(line: Line) -> int:
    text = single(line)
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise ConfigError(f"{line.where}: {line.keyword}: expected an integer, got {text!r}")
    return int(text)


_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _seconds(line: Line) -> int:
    """misc.c's convtime: `90`, `1m30s`, `2h` (units s m h d w, any case)."""
    text, total, number = single(line), 0, ""
    for c in text:
        if c.isascii() and c.isdigit():
            number += c
        elif number and c.lower() in _UNITS and c:
            total += int(number) * _UNITS[c.lower()]
            number = ""
        else:
            raise ConfigError(f"{line.where}: {line.keyword}: invalid time value {text!r}")
    total += int(number or 0)
    if total > 2**31 - 1:
        raise ConfigError(f"{line.where}: {line.keyword}: invalid time value {text!r}")
    return total
