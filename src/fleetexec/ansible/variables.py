"""Which variables matter, and what they make of a host: Ansible's variable precedence,
its connection variables mapped to `Host(address, port, user, key_files, proxy_jump)`, and
the refusals (another connection, a secret, an ssh option, host key checking off, a template
or a vault-encrypted value where a setting is read).

Ansible's precedence: the `all` group, then the host's groups by depth,
`ansible_group_priority` and name, then group_vars/all, group_vars/GROUP (same order), the
host's own vars, host_vars/HOST; then its alias rule: `ansible_ssh_host`, `_port`, `_user`,
`_private_key_file` beat `ansible_host`, ... whichever level each came from. `-i FILE` in
`ansible_ssh_common_args` / `_extra_args` adds a key file.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

from ..exceptions import InventoryError
from ..host import Host, check_hostname, check_user, parse_jump
from .limits import MAX_VALUE
from .records import Group, HostRecord, Layer, Unusable, Var

__all__ = ["is_kept", "is_secret", "layers", "settle"]

_CREDENTIALS_ELSEWHERE = ("secrets do not belong in the inventory; use FLEETEXEC_PASSWORD / "
                "--ask-password (or FLEETEXEC_SUDO_PASSWORD with --sudo) or an encrypted "
                "key")
_SSH = frozenset({"ssh", "smart", "paramiko", "paramiko_ssh"})
# An inventory is data, often from a repository: it never makes fleetexec run a local command.
_LOCAL_COMMAND = ("has {}, a local command to run; fleetexec runs a ProxyCommand only from "
                  "your ssh config, and reads `ssh -W %h:%p [-p PORT] [-l USER] HOST` here as "
                  "a jump host (or use -J / ProxyJump)")
# Connection settings, weakest spelling first: Ansible takes the last one set.
_ALIASES = {
    "address": ("ansible_host", "ansible_ssh_host"),
    "port": ("ansible_port", "ansible_ssh_port"),
    "user": ("ansible_user", "ansible_ssh_user"),
    "key": ("ansible_private_key_file", "ansible_ssh_private_key_file"),
    "checking": ("ansible_host_key_checking", "ansible_ssh_host_key_checking"),
}
_PARAMIKO = {"address": "ansible_paramiko_host", "port": "ansible_paramiko_port",
             "user": "ansible_paramiko_user", "key": "ansible_paramiko_private_key_file",
             "checking": "ansible_paramiko_host_key_checking"}
_ARGS = ("ansible_ssh_args", "ansible_ssh_common_args", "ansible_ssh_extra_args")
_TRACKED = frozenset({*(n for names in _ALIASES.values() for n in names), *_PARAMIKO.values(),
                      *_ARGS, "ansible_connection", "ansible_paramiko_proxy_command"})
_SECRET = re.compile(r"ansible_\w*pass(?:word|phrase|wd)?|ansible_(?:ssh_)?private_key",
                     re.ASCII)
_TEMPLATE = re.compile(r"\{\{|\{%|\{#")
_TRUE = frozenset({"y", "yes", "on", "1", "true", "t"})
_FALSE = frozenset({"n", "no", "off", "0", "false", "f"})


def is_secret(key: str) -> bool:
    """Whether variable `key` holds a password or key text (its value is never shown)."""
    return bool(_SECRET.fullmatch(key))


def is_kept(key: str) -> bool:
    """Whether the readers keep variable `key`: a connection setting or a secret (refused
    when set); fleetexec reads no other variable."""
    return key in _TRACKED or is_secret(key)


def layers(record: HostRecord, groups: list[str], known: Mapping[str, Group],
           depth: Mapping[str, int], files: Mapping[tuple[str, str], Layer]) -> list[Layer]:
    """The host's variable sources, weakest first, in Ansible's order: `known` is every
    group, `depth` each group's depth, `files` what group_vars/ and host_vars/ hold."""
    ranked = sorted((g for g in groups if g != "all"),
                    key=lambda g: (depth[g], known[g].priority, g))
    empty: Layer = ({}, None)
    return [
        (known["all"].vars, None),
        *((known[g].vars, None) for g in ranked),
        files.get(("group_vars", "all"), empty),
        *(files.get(("group_vars", g), empty) for g in ranked),
        (record.vars, None),
        files.get(("host_vars", record.name), empty),
    ]


def settle(record: HostRecord, groups: list[str], sources: list[Layer]) -> Host | str:
    """The host's `Host`, or the one-line reason fleetexec will not run on it; `groups` are
    the host's groups, `sources` its variables (see `layers`)."""
    name = record.name

    def refuse(problem: str, var: Var | None = None, key: str | None = None) -> str:
        where = var if var is not None else record
        return str(InventoryError(f"host {name!r} {problem}", path=where.path,
                                  line=where.line, key=key))

    try:
        check_hostname(name)
    except ValueError:
        return refuse("is not a DNS name or IP address, which fleetexec needs as a host "
                      "name (Ansible takes any text)")
    merged: dict[str, Var] = {}
    for variables, vault in sources:
        if vault:
            return str(InventoryError(
                f"host {name!r} takes variables from this vault-encrypted file, which "
                "fleetexec cannot read (nor know the connection settings it holds)",
                path=vault))
        merged.update(variables)
    connection = merged.get("ansible_connection")
    plugin = "ssh"
    if connection is not None and connection.value is not None:
        value = connection.value
        if not isinstance(value, str) or _TEMPLATE.search(value):
            return refuse(f"has a connection fleetexec cannot read: {connection.shown}",
                          connection, "ansible_connection")
        plugin = value.removeprefix("ansible.builtin.").removeprefix("ansible.legacy.")
        if plugin not in _SSH:
            return refuse(f"connects with {value!r}, not SSH; fleetexec runs commands over "
                          "SSH only", connection, "ansible_connection")
    for key, var in merged.items():
        if is_secret(key) and var.value not in (None, ""):
            return refuse(f"has a secret in {key} (not shown): {_CREDENTIALS_ELSEWHERE}",
                          var, key)

    def pick(setting: str) -> tuple[str, Var] | None:
        names = (*_ALIASES[setting], *([_PARAMIKO[setting]] if plugin.startswith(
            "paramiko") else []))
        chosen = [(n, merged[n]) for n in names if n in merged]
        return chosen[-1] if chosen else None

    def text(setting: str, what: str) -> tuple[str | None, str | None]:
        """A string setting: (value, None), or (None, the refusal)."""
        found = pick(setting)
        if found is None or found[1].value is None:
            return None, None
        key, var = found
        if isinstance(var.value, Unusable) or not isinstance(var.value, str):
            return None, refuse(f"has {key} {var.shown}, expected {what}", var, key)
        if _TEMPLATE.search(var.value):
            return None, refuse(f"has a Jinja2 template in {key} ({var.shown}); fleetexec "
                                "does not evaluate templates", var, key)
        if len(var.value) > MAX_VALUE:
            return None, refuse(f"has {key} longer than {MAX_VALUE} characters", var, key)
        return var.value, None

    checking = pick("checking")
    if checking is not None and _boolean(checking[1].value) is False:
        return refuse("turns host key checking off; fleetexec always checks host keys "
                      "(--host-key-policy accept-new learns new ones)", checking[1],
                      checking[0])
    address, problem = text("address", "a host name or IP address")
    if problem:
        return problem
    if address is not None:
        try:
            check_hostname(address.removeprefix("[").removesuffix("]"))
        except ValueError:
            chosen = pick("address")
            assert chosen is not None  # noqa: S101 - text() found it
            return refuse(f"has {chosen[0]} {chosen[1].shown}, expected a DNS name or IP "
                          "address", chosen[1], chosen[0])
        address = address.removeprefix("[").removesuffix("]")
    port = None  # unset: the ssh config's, else 22 (as Ansible leaves it to ssh)
    if (found := pick("port")) is not None and found[1].value is not None:
        key, var = found
        value = var.value
        if isinstance(value, str) and _TEMPLATE.search(value):
            return refuse(f"has a Jinja2 template in {key} ({var.shown}); fleetexec "
                          "does not evaluate templates", var, key)
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 6:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            return refuse(f"has {key} {var.shown}, expected a port 1-65535", var, key)
        port = value
    user, problem = text("user", "a user name")
    if problem:
        return problem
    if user is not None:
        try:
            check_user(user)
        except ValueError:
            chosen = pick("user")
            assert chosen is not None  # noqa: S101 - text() found it
            return refuse(f"has {chosen[0]} {chosen[1].shown}, expected a POSIX user name",
                          chosen[1], chosen[0])
    key_file, problem = text("key", "a file path")
    if problem:
        return problem
    keys = [key_file] if key_file else []  # `~` and relative paths: resolve() expands
    jump: str | None = None  # the first one given wins, as in ssh
    if plugin.startswith("paramiko") and "ansible_paramiko_proxy_command" in merged:
        var = merged["ansible_paramiko_proxy_command"]
        proxy_jump = _ssh_w_jump(var.value) if isinstance(var.value, str) else None
        if proxy_jump is None:
            return refuse(_LOCAL_COMMAND.format(f"ansible_paramiko_proxy_command {var.shown}"),
                          var, "ansible_paramiko_proxy_command")
        jump = proxy_jump
    for setting in _ARGS:
        if setting not in merged or merged[setting].value in (None, ""):
            continue
        var = merged[setting]
        if not isinstance(var.value, str) or _TEMPLATE.search(var.value):
            return refuse(f"has {setting} {var.shown}, which fleetexec cannot read", var,
                          setting)
        found_keys, found_jump, problem = _ssh_args(var.value)
        if problem:
            return refuse(problem, var, setting)
        keys.extend(found_keys)
        jump = jump or found_jump
    try:
        return Host(name, address=address or "", port=port, user=user,
                    key_files=tuple(keys), groups=tuple(groups),
                    proxy_jump=jump)
    except ValueError as exc:  # all checked above; this keeps any miss located
        return refuse(str(exc))


def _ssh_args(text: str) -> tuple[list[str], str | None, str | None]:
    """The key files (`-i FILE`, `-o IdentityFile=FILE`) and the bastion (`-J`,
    `-o ProxyJump=`, `-o ProxyCommand=ssh -W %h:%p HOST`: the first wins, as in ssh) in ssh
    options, or the refusal of an option fleetexec does not support."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        return [], None, f"has ssh options fleetexec cannot read ({str(exc).lower()})"
    keys: list[str] = []
    jump: str | None = None
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        flag, value = word[:2], word[2:]
        if flag in ("-i", "-J", "-o") and not value:
            if index == len(words):
                return [], None, f"has ssh option {flag} without its value"
            value, index = words[index], index + 1
        if flag == "-o":
            option, _, setting = value.replace("=", " ", 1).partition(" ")
            option, setting = option.strip().lower(), setting.strip()
            if option == "identityfile":
                flag, value = "-i", setting
            elif option == "proxyjump":
                flag, value = "-J", setting
            elif option == "proxycommand":
                command_jump = _ssh_w_jump(setting)
                if command_jump is None:
                    return [], None, _LOCAL_COMMAND.format(f"'-o {value}'")
                jump = jump or command_jump
                continue
            elif option in ("controlmaster", "controlpersist", "controlpath"):
                continue  # ssh's connection sharing: fleetexec keeps its own connections
            elif option == "stricthostkeychecking" and setting.lower() in ("yes", "true"):
                continue
            elif option == "stricthostkeychecking":
                return [], None, (f"has ssh option '-o {value}'; fleetexec always checks host "
                                  "keys (--host-key-policy accept-new learns new ones)")
            else:
                return [], None, f"has ssh option '-o {value}', which fleetexec does not support"
        if flag == "-J":
            try:
                if value.lower() != "none":
                    parse_jump(value)
            except ValueError as exc:
                return [], None, f"has a bad jump host list {value!r} ({exc})"
            jump = jump or value
        elif flag == "-i":
            keys.append(value)
        elif not re.fullmatch(r"-[CqT]+", word):  # compression, quiet, no tty: no-ops here
            return [], None, f"has ssh option {word!r}, which fleetexec does not support"
    return keys, jump, None


def _ssh_w_jump(command: str) -> str | None:
    """The bastion of a ProxyCommand that is plain `ssh -W %h:%p [-q] [-p PORT] [-l USER]
    [user@]host` (the usual way to write a jump host), as a jump list; None otherwise."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if not words or words[0] not in ("ssh", "/usr/bin/ssh") or "-W" not in words:
        return None
    user = port = host = None
    rest = iter(words[1:])
    for word in rest:
        if word == "-W":
            if next(rest, None) not in ("%h:%p", "[%h]:%p"):
                return None
        elif word in ("-p", "-l"):
            value = next(rest, None)
            if word == "-p":
                port = value
            else:
                user = value
        elif word == "-q":
            continue
        elif word.startswith("-") or host is not None:
            return None  # an option we would have to interpret, or a remote command
        else:
            host = word
    if host is None or ":" in host:  # ssh reads `host:22` as a name, not a port
        return None
    jump = (f"{user}@" if user and "@" not in host else "") + host + (f":{port}" if port else "")
    try:
        parse_jump(jump)
    except ValueError:
        return None
    return jump


def _boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        value = value.strip().lower()
        return True if value in _TRUE else False if value in _FALSE else None
    if isinstance(value, int | float):
        return True if value == 1 else False if value == 0 else None
    return None
