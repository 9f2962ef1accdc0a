"""Ansible inventories, read as Ansible reads them, into an `Inventory` of `Host` records.

The judges are `ansible-inventory -i FILE --list` and `ansible -i FILE PATTERN --list-hosts`
(tests/test_ansible_inventory.py asks both about public inventories). Read:

* YAML (`all:` or any group, each with `hosts`, `children`, `vars`) and INI (`[group]`,
  `[group:children]`, `[group:vars]`, `host key=value`, values read as Ansible's INI plugin
  reads them: a Python literal where `ast.literal_eval` takes it, else the text); ranges
  `www[01:50]`, `db-[a:f]`, `[1:10:2]`; `host:port`; the implicit `all` and `ungrouped`.
* `group_vars/` and `host_vars/` next to the inventory: the first of `NAME`, `NAME.yml`,
  `NAME.yaml`, `NAME.json` that exists, a directory `NAME/` being read whole (sorted).
* Ansible's variable precedence: the `all` group, then the host's groups by depth,
  `ansible_group_priority` and name, then group_vars/all, group_vars/GROUP (same order),
  the host's own vars, host_vars/HOST; then its alias rule: `ansible_ssh_host`, `_port`,
  `_user`, `_private_key_file` beat `ansible_host`, ... whichever level each came from.
  The result is `Host(address, port, user, key_files)`; `-i FILE` in
  `ansible_ssh_common_args` / `_extra_args` adds a key file.

Refused, never guessed. Per host (the inventory loads; selecting the host is an
`InventoryError` saying why, so the rest stays usable): a connection other than SSH
(`ansible_connection=local`, `winrm`, `network_cli`...), a password or key text
(`ansible_password`, `ansible_become_pass`...; the value is never shown), a bastion
(`-J`, `ProxyJump`, `ProxyCommand`: such a host is never connected to directly), any
other ssh option, host key checking turned off, a Jinja2 template or a vault-encrypted
value in a connection setting, a vault-encrypted vars file, and a name that is not a DNS
name or IP address. For the whole file: dynamic inventory scripts (executable files) and
inventory plugin configurations (`plugin:`), which are out of scope; what Ansible refuses;
and what Ansible only warns about and skips or overrides (an unknown key or a non-mapping
in a YAML group, a duplicate key, a port it would ignore, an empty range): a located
`file:line: message` instead. No code is run: no Python object is built from YAML (the
node tree is walked by hand), INI values go through `ast.literal_eval` only, and only
for the settings fleetexec uses. The work a file can cause is bounded as in inventory.py.

Host patterns (`AnsibleInventory.select`) are Ansible's: `web:&staging`, `web:!db`,
`web,db`, `web[0]` / `web[0:2]` / `web[-1]` (a subscript of what `web` matches, never a
range), `~regex`, globs, `all`; plus ClusterShell's `@group` with `&`, `!` and `^`.
Unlike Ansible, a term matching no host or group is refused rather than ignored.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import ipaddress
import os
import re
import shlex
import stat
import string
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NoReturn

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .exceptions import InventoryError
from .host import Host, check_hostname, check_user
from .inventory import Inventory

__all__ = ["FORMATS", "AnsibleInventory", "detect_format", "parse_ansible_inventory"]

FORMATS = ("fleetexec", "ansible-yaml", "ansible-ini")
_Y = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL, _MERGE = (
    _Y + t for t in ("str", "int", "float", "bool", "null", "merge"))
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_YAML_EXTENSIONS = (".yml", ".yaml", ".json")
_OWN_SECTIONS = ("defaults", "groups", "hosts")  # the fleetexec format's top-level keys
_GROUP_KEYS = ("hosts", "children", "vars")
_SCRIPT_HINT = ("use its output instead: ansible-inventory -i FILE --list --yaml > "
                "inventory.yml")
_CREDENTIALS_ELSEWHERE = ("secrets do not belong in the inventory; use FLEETEXEC_PASSWORD / "
                "--ask-password (or FLEETEXEC_SUDO_PASSWORD with --sudo) or an encrypted "
                "key")
_LOCALHOST = ("127.0.0.1", "localhost", "::1")  # Ansible's implicit localhost answers to these
_SSH = frozenset({"ssh", "smart", "paramiko", "paramiko_ssh"})
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
# INI, as Ansible's plugin reads it: `[name]` / `[name:kind]` with an optional comment.
_SECTION = re.compile(r"\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?")
_CHILD = re.compile(r"([^:\]\s]+)\s*(?:#.*)?")
# `host:port` and `[host]:port`; the host must then look like a host name (ranges allowed)
# or an IPv6 address, or the colon is part of the name, as in Ansible.
_BRACKETED_PORT = re.compile(r"\[(.+)\]:([0-9]+)")
_HOST_PORT = re.compile(r"((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)")
_RANGE = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_LABEL = rf"(?:\w|{_RANGE})(?:[\w-]|{_RANGE})*(?<![_-])"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*", re.IGNORECASE)
_HEX_RANGE = re.compile(r"\[([0-9a-f]+):[0-9a-f]+(?::[0-9]+)?\]", re.IGNORECASE)
# A pattern that is several patterns joined by `:` (colons inside [...] are not separators).
_PATTERN_PART = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")
_SUBSCRIPT = re.compile(r"(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]")
_SET_OPERATOR = re.compile(r"([&!^])")
_BLANKS = re.compile(r"[ \t]+")  # shlex's whitespace, within one (stripped) line
# Bounds on the work a file can cause, as in inventory.py.
_MAX_BYTES = 4 << 20  # one inventory or vars file
_MAX_VARS_BYTES = 64 << 20  # all group_vars/ and host_vars/ files together
_MAX_VARS_FILES = 20_000
_MAX_VARS_DEPTH = 16  # directories inside group_vars/NAME/
_MAX_NODES = 250_000  # YAML nodes per file
_MAX_DEPTH = 64  # YAML nesting (Ansible's groups nest through `children`)
_MAX_WORK = 1_000_000  # YAML nodes visited, aliases and merge keys counted each time
_MAX_HOSTS = 100_000
_MAX_NAMES = 250_000  # host names produced by all patterns, repeats counted
_MAX_GROUPS = 50_000
_MAX_MEMBERSHIPS = 2_000_000  # (host or group, group) pairs, children flattened
_MAX_VALUE = 4096  # characters of a connection setting
_MAX_TERM = 1000  # characters of one host pattern term


def detect_format(text: str, path: str = "<string>") -> str:
    """`fleetexec`, `ansible-yaml` or `ansible-ini`, from the text (and the file's extension).

    A YAML mapping is fleetexec's when its first key is `defaults`, `groups` or `hosts`,
    and Ansible's when it starts with `all`, `plugin`, or a group holding `hosts`,
    `children` or `vars` (empty groups are skipped); anything else goes to fleetexec's
    loader, for its messages. Text that is not a YAML mapping is Ansible INI, except in a
    `.yml`/`.yaml`/`.json` file. Only the first keys are read (YAML events, no tree).
    """
    text = text.removeprefix("\ufeff")
    yaml_file = os.path.splitext(path)[1].lower() in _YAML_EXTENSIONS
    found = "fleetexec" if yaml_file else "ansible-ini"
    try:
        found = _detect_yaml(text) or found
    except (yaml.YAMLError, RecursionError):
        pass
    return found


def _detect_yaml(text: str) -> str | None:
    """The format a YAML mapping's first keys say; None when the root is no mapping."""
    state = "start"  # start → key → value (→ key, for an empty group) → group: decided
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.StreamStartEvent | yaml.DocumentStartEvent):
            continue
        if state == "start":
            if isinstance(event, yaml.StreamEndEvent):
                return "fleetexec"  # empty, or comments only: no hosts either way
            if not isinstance(event, yaml.MappingStartEvent):
                return None
            state = "key"
        elif state == "key":
            if not isinstance(event, yaml.ScalarEvent) or event.value in _OWN_SECTIONS:
                return "fleetexec"  # (the end of the mapping too: nothing Ansible's)
            if event.value in ("all", "plugin"):
                return "ansible-yaml"
            state = "value"
        elif state == "value":
            if isinstance(event, yaml.MappingStartEvent):
                state = "group"
            elif isinstance(event, yaml.ScalarEvent) and event.value in ("", "~", "null"):
                state = "key"  # `webservers:` with nothing under it yet
            else:
                return "fleetexec"
        elif isinstance(event, yaml.MappingEndEvent):  # `webservers: {}`
            state = "key"
        else:  # the first key of the first group with content decides
            return "ansible-yaml" if (isinstance(event, yaml.ScalarEvent)
                                      and event.value in _GROUP_KEYS) else "fleetexec"
    return "fleetexec"


def parse_ansible_inventory(text: str, path: str = "<string>",
                            kind: str | None = None) -> AnsibleInventory:
    """Read Ansible inventory `text` (`kind`: `ansible-yaml`, `ansible-ini`, or None to
    detect). `path` names it in messages; for a real file, its group_vars/ and host_vars/
    are read too, and an executable file is refused as a dynamic inventory script.
    """
    text = text.removeprefix("\ufeff")
    if kind is None:
        kind = detect_format(text, path)
        if kind == "fleetexec":
            kind = "ansible-yaml"
    if kind not in FORMATS[1:]:
        raise InventoryError(f"unknown inventory format {kind!r}; expected one of: "
                             f"{', '.join(FORMATS)}", path=path)
    builder = _Builder(path)
    try:
        builder.refuse_out_of_scope(text)
        if kind == "ansible-yaml":
            builder.read_yaml(text)
        else:
            builder.read_ini(text)
        builder.reconcile()
        return builder.build(kind)
    except RecursionError:
        raise InventoryError("nested too deeply", path=path) from None


@dataclass(frozen=True)
class AnsibleInventory(Inventory):
    """An Ansible inventory, read. `hosts` holds the hosts fleetexec can run on;
    `refused` maps every other host to the one-line reason (`file:line: ...`);
    `names` is every host in Ansible's order; `groups` is every group, `all` and
    `ungrouped` included, with its members (refused hosts too) in Ansible's order.
    """

    refused: Mapping[str, str] = field(default_factory=dict)
    names: tuple[str, ...] = ()
    format: str = "ansible-ini"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "refused", MappingProxyType(dict(self.refused)))

    def select(self, *patterns: str) -> list[Host]:
        """The hosts Ansible's host patterns name, in Ansible's order, each once.

        `patterns` are joined as Ansible joins them (`,` and `:` separate terms;
        `&term` intersects, `!term` excludes, whatever their place); none selects
        `all`. Raises `InventoryError` when a term matches no host or group, when
        nothing is left, or when a selected host is one fleetexec cannot run on
        (naming it and why).
        """
        names = self.match(*patterns)
        refused = [n for n in names if n in self.refused]
        if refused:
            more = refused[1:]
            tail = (f" (and {len(more)} more host{'s' if len(more) > 1 else ''} fleetexec "
                    f"cannot run on: {_brief(','.join(more))})") if more else ""
            raise InventoryError(f"{self.refused[refused[0]]}; leave it out of the "
                                 f"selection (e.g. 'all:!{refused[0]}'){tail}")
        return [self.hosts[n] for n in names]

    def match(self, *patterns: str) -> list[str]:
        """The names of the hosts `patterns` select, refused ones included (see `select`)."""
        if not self.names:
            raise InventoryError("no hosts in the inventory", path=self.path)
        terms = _split_patterns(patterns)
        known = set(self.names)
        regular = [t for t in terms if t[0] not in "&!"]
        ordered = (regular or ["all"]) + [t for t in terms if t[0] == "&"] + [
            t for t in terms if t[0] == "!"]
        chosen: list[str] = []
        for term in ordered:
            if term in known:  # a plain host name, as Ansible tries first
                chosen.append(term)
                continue
            found = self._term(term)
            if term[0] in "!&":
                keep, wanted = term[0] == "&", set(found)
                chosen = [n for n in chosen if (n in wanted) == keep]
            else:
                seen = set(chosen)
                chosen.extend(n for n in found if n not in seen)
        chosen = list(dict.fromkeys(chosen))
        if not chosen:
            raise InventoryError(f"the selection {_brief(','.join(patterns) or 'all')} "
                                 "leaves no hosts", path=self.path)
        return chosen

    def _term(self, term: str) -> list[str]:
        """One term's hosts, without its `&`/`!`; refused when it names nothing."""
        body = term[1:] if term[0] in "&!" else term
        if not body:
            raise InventoryError(f"empty term in host pattern {_brief(term)}", path=self.path)
        if len(body) > _MAX_TERM:
            raise InventoryError(f"host pattern term longer than {_MAX_TERM} characters",
                                 path=self.path)
        if "@" in body and body not in self.groups:
            return self._cluster(body, term)
        expression, subscript = _split_subscript(body)
        groups, hosts = self._enumerate(expression, term)
        if not groups and not hosts:
            if expression in _LOCALHOST:
                if term[0] == "!":
                    return []  # excluding a localhost the inventory does not have: nothing
                raise InventoryError(
                    f"{expression!r} is not in the inventory: Ansible would use its implicit "
                    "localhost, a local connection; fleetexec runs commands over SSH only",
                    path=self.path)
            hint = (f" (a trailing [...] is a subscript in an Ansible pattern: it picks from "
                    f"what {expression!r} matches)") if subscript else ""
            raise InventoryError(f"no host or group matches {_brief(term)}{hint}",
                                 path=self.path)
        # Repeats are kept until the end, as Ansible keeps them: a subscript counts them.
        found = [n for g in groups for n in self.groups[g]] + hosts
        if subscript is None or not found:
            return found
        start, end = subscript
        if end:  # as Ansible: [x:0] is [x], and [x:] runs to the end
            return found[start:(len(found) - 1 if end == -1 else end) + 1]
        if not -len(found) <= start < len(found):
            raise InventoryError(f"subscript [{start}] is out of range in {_brief(term)}: "
                                 f"{expression!r} matches {len(found)} hosts", path=self.path)
        return [found[start]]

    def _enumerate(self, expression: str, term: str) -> tuple[list[str], list[str]]:
        """The groups, then the hosts, that one pattern expression matches (Ansible's rules:
        hosts are tried when no group matched or the pattern is a regex or a glob)."""
        try:
            if expression.startswith("~"):
                match = re.compile(expression[1:]).match
            else:
                match = re.compile(fnmatch.translate(expression)).match
        except re.error as exc:
            raise InventoryError(f"bad pattern {_brief(term)}: {exc}", path=self.path) from None
        groups = [g for g in self.groups if match(g)]
        hosts: list[str] = []
        if not groups or expression[0] == "~" or any(c in expression for c in ".?*["):
            hosts = [h for h in self.names if match(h)]
        return groups, hosts

    def _cluster(self, body: str, term: str) -> list[str]:
        """ClusterShell's `@group` and set operators (`&`, `!`, `^`), left to right."""
        pieces = _SET_OPERATOR.split(body)
        if any(not p for p in pieces[0::2]):
            raise InventoryError(f"bad term {_brief(term)}: an operand of '&', '!' or '^' "
                                 "is empty", path=self.path)
        result: list[str] = []
        for i, operand in enumerate(pieces[0::2]):
            if operand.startswith("@"):
                if operand[1:] not in self.groups:
                    raise InventoryError(f"no group {operand[1:]!r} (in {_brief(term)})",
                                         path=self.path)
                names = list(self.groups[operand[1:]])
            else:
                names = self._term(operand)
            result = _combine(result, pieces[2 * i - 1] if i else "", names)
        return result


def _combine(left: list[str], operator: str, right: list[str]) -> list[str]:
    """`left OPERATOR right` in ClusterShell's terms; no operator: `right` alone."""
    if not operator:
        return right
    mine, theirs = set(left), set(right)
    kept = [n for n in left if (n in theirs) == (operator == "&")]
    return kept + [n for n in right if n not in mine] if operator == "^" else kept


def _brief(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:80] + "…")


def _split_patterns(patterns: Iterable[str]) -> list[str]:
    """Ansible's split of a host pattern into terms: on commas if there is one; else the
    whole pattern if it reads as one host (IPv6 and `web[1:3]` hold colons); else on `:`."""
    terms: list[str] = []
    for pattern in patterns:
        if "," in pattern:
            parts = pattern.split(",")
        elif _is_address(pattern):
            parts = [pattern]
        else:
            parts = _PATTERN_PART.findall(pattern)
        terms.extend(p.strip() for p in parts if p.strip())
    return terms


def _split_subscript(pattern: str) -> tuple[str, tuple[int, int | None] | None]:
    """`web[1:3]` → (`web`, (1, 3)); `web[-1]` → (`web`, (-1, None)); `[1:]` ends at -1."""
    if pattern.startswith("~"):
        return pattern, None
    found = _SUBSCRIPT.fullmatch(pattern)
    if found is None:
        return pattern, None
    expression, index, start, _, end = found.groups()
    if index:
        return expression, (int(index), None)
    return expression, (int(start), int(end) if end else -1)


def _split_port(pattern: str) -> tuple[str, int | None]:
    """`web:2222` → (`web`, 2222); the port is split off only when what is left reads as a
    host name (ranges allowed) or an IPv6 address, as Ansible does."""
    address, port = pattern, None
    for form in (_BRACKETED_PORT, _HOST_PORT):
        if found := form.fullmatch(address):
            digits = found.group(2)
            address, port = found.group(1), int(digits) if len(digits) <= 12 else 10**12
    if not _is_address(address):
        return pattern, None
    return address, port


def _is_address(text: str) -> bool:
    if _HOSTNAME.fullmatch(text):
        return True
    if ":" not in text:
        return False
    try:  # an IPv6 address, each hex range standing for its first bound
        ipaddress.IPv6Address(_HEX_RANGE.sub(lambda m: m.group(1), text))
    except ValueError:
        return False
    return True


def _expand_range(name: str) -> list[str]:
    """Ansible's `[begin:end]` / `[begin:end:step]` ranges, numeric (a leading zero sets the
    width) or one letter each, first range varying slowest. Raises ValueError."""
    if "[" not in name:
        return [name]
    head, _, rest = name.partition("[")
    body, closed, tail = rest.partition("]")
    if not closed or "]" in head:
        raise ValueError(f"unbalanced bracket in {name!r}")
    bounds = body.split(":")
    if len(bounds) not in (2, 3):
        raise ValueError(f"bad range [{body}] in {name!r}: use [begin:end] or "
                         "[begin:end:step]")
    begin, end = bounds[0] or "0", bounds[1]
    step = bounds[2] if len(bounds) == 3 else "1"
    if not end:
        raise ValueError(f"bad range [{body}] in {name!r}: no end")
    if not (step.isascii() and step.isdigit() and len(step) <= 18) or int(step) < 1:
        raise ValueError(f"bad range [{body}] in {name!r}: the step must be 1 or more")
    if len(begin) == len(end) == 1 and begin in string.ascii_letters and (
            end in string.ascii_letters):
        first, last = string.ascii_letters.index(begin), string.ascii_letters.index(end)
        if first > last:
            raise ValueError(f"bad range [{body}] in {name!r}: {begin} is after {end}")
        items = list(string.ascii_letters[first:last + 1:int(step)])
    elif begin.isascii() and begin.isdigit() and end.isascii() and end.isdigit() and (
            len(begin) <= 18 and len(end) <= 18):
        width = len(begin) if begin[0] == "0" and len(begin) > 1 else 0
        if width and len(end) != width:
            raise ValueError(f"bad range [{body}] in {name!r}: {begin} and {end} are not "
                             "the same width")
        if int(begin) > int(end):  # Ansible makes no hosts of it, silently
            raise ValueError(f"bad range [{body}] in {name!r}: {begin} is after {end}")
        if (int(end) - int(begin)) // int(step) >= _MAX_HOSTS:
            raise ValueError(f"{name!r} expands to more than {_MAX_HOSTS} names")
        items = [str(n).zfill(width) for n in range(int(begin), int(end) + 1, int(step))]
    else:
        raise ValueError(f"bad range [{body}] in {name!r}: use numbers ([01:50]) or "
                         "single letters ([a:f])")
    names: list[str] = []
    for item in items:
        names.extend(_expand_range(head + item + tail))
        if len(names) > _MAX_HOSTS:
            raise ValueError(f"{name!r} expands to more than {_MAX_HOSTS} names")
    return names


class _Unusable:
    """A value fleetexec will not guess at: a vault-encrypted value, a list, a timestamp."""

    def __init__(self, what: str) -> None:
        self.what = what


@dataclass
class _Var:
    value: Any  # str, int, float, bool, None, or _Unusable
    path: str
    line: int | None
    shown: str  # the value as written, for messages (never for secrets)


@dataclass
class _Group:
    name: str
    path: str
    line: int | None
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    vars: dict[str, _Var] = field(default_factory=dict)
    edges: dict[str, int | None] = field(default_factory=dict)  # child -> line of the link
    held: set[str] = field(default_factory=set)  # `hosts`, for lookups
    priority: int = 1
    declared: bool = True  # INI: a [name] or [name:children] section was seen


@dataclass
class _Host:
    name: str
    path: str
    line: int | None
    groups: list[str] = field(default_factory=list)
    vars: dict[str, _Var] = field(default_factory=dict)


class _Builder:
    """What Ansible's inventory does as its plugins feed it, then fleetexec's checks."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.groups: dict[str, _Group] = {
            "all": _Group("all", path, None, children=["ungrouped"], edges={"ungrouped": None}),
            "ungrouped": _Group("ungrouped", path, None, parents=["all"]),
        }
        self.hosts: dict[str, _Host] = {}
        self.files: dict[tuple[str, str], tuple[dict[str, _Var], str | None]] = {}
        self.named = self.memberships = self.work = self.vars_bytes = self.files_read = 0
        self.depth: dict[str, int] = {}

    def fail(self, line: int | None, message: str, key: str | None = None,
             path: str | None = None) -> NoReturn:
        raise InventoryError(message, path=path or self.path, line=line, key=key)

    # --- what Ansible's InventoryData does ------------------------------------------

    def group(self, name: str, line: int | None) -> _Group:
        if name not in self.groups:
            if not name or any(c in name for c in "/\\\0") or name in (".", ".."):
                self.fail(line, f"expected a group name, got {name!r}")
            if len(self.groups) >= _MAX_GROUPS:
                self.fail(line, f"more than {_MAX_GROUPS} groups")
            self.groups[name] = _Group(name, self.path, line)
        return self.groups[name]

    def host(self, name: str, group: str, port: int | None, line: int | None) -> None:
        if name not in self.hosts:
            if len(self.hosts) >= _MAX_HOSTS:
                self.fail(line, f"more than {_MAX_HOSTS} hosts")
            self.hosts[name] = _Host(name, self.path, line)
            if port is not None:
                self.hosts[name].vars["ansible_port"] = _Var(port, self.path, line,
                                                             f"{name}:{port}")
        elif port is not None:
            known = self.hosts[name].vars.get("ansible_port")
            if known is None or known.value != port:
                first = f"port {known.value}" if known is not None else "no port"
                self.fail(line, f"host {name!r} gets port {port} here, but it was first "
                          f"defined on line {self.hosts[name].line} with {first}, and Ansible "
                          "would ignore this one: set the port where the host first appears")
        if name not in self.groups[group].held:
            self.tally(line, 1)
            self.groups[group].held.add(name)
            self.groups[group].hosts.append(name)
            self.hosts[name].groups.append(group)

    def set_var(self, entity: str, key: str, make: Callable[[], _Var],
                line: int | None) -> None:
        # As Ansible: a host's variable goes to the group when both have this name.
        target = self.groups.get(entity) or self.hosts[entity]
        if isinstance(target, _Group) and key == "ansible_group_priority":
            value = make().value
            if isinstance(value, bool) or not isinstance(value, int | str):
                self.fail(line, "expected an integer", key=key)
            try:
                target.priority = int(value)
            except ValueError:
                self.fail(line, f"expected an integer, got {value!r}", key=key)
        elif key in _TRACKED or _SECRET.fullmatch(key):
            target.vars[key] = make()

    def child(self, parent: str, child: str, line: int | None) -> None:
        group = self.groups[parent]
        if child == parent or child == "all":
            self.fail(line, f"group {child!r} cannot be a child of {parent!r}")
        if child not in group.edges:
            self.tally(line, 1)
            group.children.append(child)
            group.edges[child] = line
            self.groups[child].parents.append(parent)

    def tally(self, line: int | None, count: int) -> None:
        self.memberships += count
        if self.memberships > _MAX_MEMBERSHIPS:
            self.fail(line, f"more than {_MAX_MEMBERSHIPS} group memberships (hosts and "
                            "groups, with children's counted in)")

    def names(self, pattern: str, line: int | None, ini: bool) -> tuple[list[str], int | None]:
        """The hosts (and the port) one host pattern names: `web[01:03]:2222`."""
        name, port = _split_port(pattern)
        if ini and pattern.strip().endswith(":") and port is None:
            self.fail(line, f"bad host {pattern!r}: a ':' must be followed by a port")
        if ini and name.strip() == "---":
            self.fail(line, "'---' is not a host (this looks like YAML)")
        try:
            names = _expand_range(name)
        except ValueError as exc:
            self.fail(line, str(exc))
        self.named += len(names)
        if self.named > _MAX_NAMES:
            self.fail(line, f"more than {_MAX_NAMES} host names in all ranges and lists")
        if not all(names):
            self.fail(line, "empty host name")
        return names, port

    # --- the file ---------------------------------------------------------------------

    def refuse_out_of_scope(self, text: str) -> None:
        if text.startswith("$ANSIBLE_VAULT;"):
            self.fail(1, "the inventory is vault-encrypted; fleetexec cannot read it")
        if os.path.splitext(self.path)[1].lower() == ".toml":
            self.fail(None, "TOML inventories are not supported; use YAML or INI")
        if self.path != "<string>":
            try:
                mode = os.stat(self.path).st_mode
            except OSError:
                mode = 0
            if stat.S_ISREG(mode) and mode & 0o111:
                self.fail(None, "the file is executable, so Ansible would run it as a dynamic "
                          "inventory script; fleetexec does not run inventory scripts (out of "
                          f"scope): {_SCRIPT_HINT}, or chmod -x it if it is a static inventory")
        if text.startswith("#!"):
            self.fail(1, "this looks like a dynamic inventory script (#!); fleetexec does not "
                      f"run inventory scripts (out of scope): {_SCRIPT_HINT}")

    def read_ini(self, text: str) -> None:
        group, state = "ungrouped", "hosts"
        pending: dict[str, tuple[int, list[str]]] = {}  # child -> (line, parents waiting)
        undeclared: dict[str, int] = {}  # [name:vars] before any [name] -> its line
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if section := _SECTION.fullmatch(line):
                group, kind = section.group(1), section.group(2) or "hosts"
                if kind not in ("hosts", "children", "vars"):
                    self.fail(number, f"section [{group}:{kind}] has an unknown type: use "
                                      f"[{group}], [{group}:children] or [{group}:vars]")
                if group not in self.groups:
                    self.group(group, number).declared = kind != "vars"
                    if kind == "vars":
                        undeclared[group] = number
                elif kind != "vars" and not self.groups[group].declared:
                    self.groups[group].declared = True
                    undeclared.pop(group, None)
                if kind != "vars" and group in pending:
                    for parent in pending.pop(group)[1]:
                        self.child(parent, group, number)
                state = kind
                continue
            if line.startswith("[") and line.endswith("]"):
                self.fail(number, f"bad section {line!r}: no spaces or other characters "
                                  "are allowed in [group] or [group:kind]")
            if state == "hosts":
                self.ini_hosts(line, group, number)
            elif state == "vars":
                key, equals, value = line.partition("=")
                if not equals:
                    self.fail(number, f"expected key=value in [{group}:vars], got {line!r}")
                key, value = key.strip(), value.strip()
                self.set_var(group, key, functools.partial(self.ini_value, key, value, number),
                             number)
            else:
                found = _CHILD.fullmatch(line)
                if found is None:
                    self.fail(number, f"expected a group name in [{group}:children], got "
                                      f"{line!r}")
                name = found.group(1)
                if name in self.groups and self.groups[name].declared:
                    self.child(group, name, number)
                else:
                    pending.setdefault(name, (number, []))[1].append(group)
        for name, (number, parents) in pending.items():
            self.fail(number, f"section [{parents[-1]}:children] names group {name!r}, which "
                              "is never defined (Ansible refuses this file too)")
        for name, number in undeclared.items():
            self.fail(number, f"section [{name}:vars] is for group {name!r}, which is never "
                              "defined (Ansible refuses this file too)")

    def ini_hosts(self, line: str, group: str, number: int) -> None:
        try:  # without quotes, backslashes or comments, shlex splits at blanks: faster so
            tokens = shlex.split(line, comments=True) if any(
                c in line for c in "'\"\\#") else _BLANKS.split(line)
        except ValueError as exc:
            self.fail(number, f"cannot read the host line: {str(exc).lower()}")
        if not tokens:
            return
        names, port = self.names(tokens[0], number, ini=True)
        assignments: list[tuple[str, str]] = []
        for token in tokens[1:]:
            key, equals, value = token.partition("=")
            if not equals:
                self.fail(number, f"expected key=value after the host, got {token!r}")
            assignments.append((key, value))
        for name in names:
            self.host(name, group, port, number)
            for key, value in assignments:
                self.set_var(name, key, functools.partial(self.ini_value, key, value, number),
                             number)

    def ini_value(self, key: str, text: str, line: int) -> _Var:
        """A value as Ansible's INI plugin reads it: a Python literal, else the text."""
        secret = bool(_SECRET.fullmatch(key))
        if len(text) > _MAX_VALUE:
            return _Var(text, self.path, line, "" if secret else repr(text[:60] + "…"))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # `"\d"`: a SyntaxWarning, as in Ansible
                value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return _Var(text, self.path, line, "" if secret else repr(text))
        except (TypeError, MemoryError, RecursionError):  # Ansible fails on these too
            self.fail(line, "cannot read the value" + ("" if secret else f" {text[:60]!r}"),
                      key=key)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "surrogateescape")
        if not isinstance(value, str | int | float | bool | None):
            value = _Unusable(f"a {type(value).__name__}")
        shown = "" if secret else repr(text) if isinstance(value, str) and value == text else (
            f"{text!r}, which Ansible reads as {_kind(value)}")
        return _Var(value, self.path, line, shown)

    def read_yaml(self, text: str, path: str | None = None) -> None:
        root = self.compose(text, path or self.path)
        if root is None or (isinstance(root, ScalarNode) and root.tag == _NULL):
            return  # Ansible's INI reader takes an empty file: no hosts
        if not isinstance(root, MappingNode):
            self.fail(_line(root), f"expected a mapping of groups, got {_what(root)}")
        top = self.pairs(root, "", self.path)
        plugin = next((v for k, v in top if isinstance(k, ScalarNode) and k.value == "plugin"),
                      None)
        if plugin is not None and not (isinstance(plugin, ScalarNode) and plugin.tag == _NULL):
            self.fail(_line(root), "this is an inventory plugin configuration (plugin:), "
                      f"not an inventory; inventory plugins are out of scope: {_SCRIPT_HINT}")
        for key, value in top:
            self.yaml_group(self.text(key, "", "a group name"), key, value)

    def yaml_group(self, name: str, key: Node, node: Node) -> str:
        line = _line(key)
        if not (isinstance(node, MappingNode) or _is_null(node)):
            self.fail(line, f"expected a group (a mapping of hosts, children, vars), got "
                            f"{_what(node)} (Ansible skips it with a warning)", key=name)
        self.group(name, line)
        if not isinstance(node, MappingNode):
            return name
        for section, value in self.pairs(node, name, self.path):
            word = self.text(section, name, "hosts, children or vars")
            here = f"{name}.{word}"
            if word not in _GROUP_KEYS:
                self.fail(_line(section), "unexpected key in a group (Ansible skips it with "
                          "a warning); expected hosts, children or vars", key=here)
            if isinstance(value, ScalarNode) and value.tag != _NULL:
                if word != "vars" and len(str(value.value).split()) > 1:
                    self.fail(_line(value), f"{str(value.value)[:60]!r} is one name with spaces "
                              "in it (Ansible reads a text here as one name); write a mapping, "
                              "one name per line ending in ':'", key=here)
                entries: list[tuple[Node, Node]] = [(value, ScalarNode(_NULL, ""))]
            elif isinstance(value, MappingNode):
                entries = self.pairs(value, here, self.path)
            elif _is_null(value):
                entries = []
            else:
                self.fail(_line(value), f"expected a mapping, got {_what(value)}", key=here)
            for k, v in entries:
                if word == "vars":
                    if (var := _name(k)) is not None:
                        self.set_var(name, var, functools.partial(self.yaml_value, v,
                                                                  self.path), _line(k))
                elif word == "children":
                    child = self.yaml_group(self.text(k, here, "a group name"), k, v)
                    self.child(name, child, _line(k))
                else:
                    self.yaml_host(name, k, v, here)
        return name

    def yaml_host(self, group: str, key: Node, node: Node, here: str) -> None:
        pattern = self.text(key, here, "a host name (quote numbers)")
        if not (isinstance(node, MappingNode) or _is_null(node)):
            self.fail(_line(node), f"expected the host's variables (a mapping), got "
                                   f"{_what(node)}", key=f"{here}.{pattern}")
        names, port = self.names(pattern, _line(key), ini=False)
        pairs = self.pairs(node, f"{here}.{pattern}", self.path) if isinstance(
            node, MappingNode) else []
        for name in names:
            self.host(name, group, port, _line(key))
            for k, v in pairs:
                if (var := _name(k)) is not None:
                    self.set_var(name, var, functools.partial(self.yaml_value, v, self.path),
                                 _line(k))

    def yaml_value(self, node: Node, path: str) -> _Var:
        line = _line(node)
        if not isinstance(node, ScalarNode):
            return _Var(_Unusable(_what(node)), path, line, _what(node))
        text = str(node.value)
        if node.tag == "!vault":
            return _Var(_Unusable("a vault-encrypted value"), path, line, "!vault ...")
        if node.tag in (_STR, "!unsafe"):
            return _Var(text, path, line, repr(text))
        if node.tag == _NULL:
            return _Var(None, path, line, repr(text))
        if node.tag == _INT and re.fullmatch(r"0|[1-9][0-9]{0,17}", text):
            return _Var(int(text), path, line, text)
        if node.tag == _BOOL:
            return _Var(text.lower() in ("yes", "true", "on"), path, line,
                        f"{text!r}, which YAML reads as a boolean; quote it")
        what = {_INT: "a number", _FLOAT: "a number"}.get(node.tag, f"a {node.tag!r} value")
        return _Var(_Unusable(what), path, line, f"{text!r}, which YAML reads as {what}; "
                                                 "quote it")

    def text(self, node: Node, key: str, expected: str) -> str:
        if isinstance(node, ScalarNode) and node.tag in (_STR, "!unsafe"):
            return str(node.value)
        shown = repr(node.value) if isinstance(node, ScalarNode) else _what(node)
        self.fail(_line(node), f"expected {expected}, got {shown}", key=key or None)

    # --- YAML, read as a node tree: nothing is constructed, aliases and merges bounded ----

    def compose(self, text: str, path: str) -> Node | None:
        nodes = depth = 0
        try:
            for event in yaml.parse(text, Loader=_LOADER):
                if isinstance(event, yaml.NodeEvent):
                    nodes += 1
                    if nodes > _MAX_NODES:
                        self.fail(_mark(event), f"more than {_MAX_NODES} YAML nodes", path=path)
                if isinstance(event, yaml.CollectionStartEvent):
                    depth += 1
                    if depth > _MAX_DEPTH:
                        self.fail(_mark(event), "nested too deeply", path=path)
                elif isinstance(event, yaml.CollectionEndEvent):
                    depth -= 1
            node: Node | None = yaml.compose(text, Loader=_LOADER)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = " ".join("; ".join(filter(None, [exc.context, exc.problem])).split())
            self.fail(mark.line + 1 if mark else None, f"YAML syntax error: {problem}",
                      path=path)
        except yaml.YAMLError as exc:
            self.fail(None, f"YAML error: {' '.join(str(exc).split())}", path=path)
        return node

    def pairs(self, node: MappingNode, key: str, path: str,
              depth: int = 0) -> list[tuple[Node, Node]]:
        """A mapping's entries, `<<` merge keys expanded as YAML loaders do (written keys
        win); a key written twice is refused (Ansible warns and keeps the last)."""
        merged: list[tuple[Node, Node]] = []
        written: list[tuple[Node, Node]] = []
        seen: dict[str, int | None] = {}
        if depth > _MAX_DEPTH:
            self.fail(_line(node), "merge keys (<<) nested too deeply", path=path)
        self.work += len(node.value)
        if self.work > _MAX_WORK:
            self.fail(_line(node), f"more than {_MAX_WORK} YAML nodes read (aliases and "
                                   "merge keys count each time)", path=path)
        for k, v in node.value:
            if k.tag == _MERGE:
                sources = v.value if isinstance(v, SequenceNode) else [v]
                if not all(isinstance(s, MappingNode) for s in sources):
                    self.fail(_line(k), "a merge key (<<) needs a mapping or a list of them",
                              path=path)
                for source in reversed(sources):
                    merged[:0] = self.pairs(source, key, path, depth + 1)
                continue
            if isinstance(k, ScalarNode):
                name = str(k.value)
                if name in seen:
                    here = f"{key}.{name}" if key else name
                    self.fail(_line(k), f"duplicate key (first on line {seen[name]})",
                              key=here, path=path)
                seen[name] = _line(k)
            written.append((k, v))
        if not merged:
            return written
        kept = {str(k.value): (k, v) for k, v in merged if isinstance(k, ScalarNode)}
        for k, _ in written:
            kept.pop(str(getattr(k, "value", "")), None)
        return [*kept.values(), *written]

    # --- group_vars/ and host_vars/ --------------------------------------------------

    def read_vars_files(self) -> None:
        if self.path == "<string>":
            return
        base = os.path.realpath(os.path.dirname(os.path.abspath(self.path)))
        for kind, names in (("group_vars", list(self.groups)), ("host_vars", list(self.hosts))):
            folder = os.path.join(base, kind)
            if not os.path.isdir(folder):
                continue
            for name in names:
                if any(c in name for c in "/\\\0") or name in (".", ".."):
                    continue  # such a host is refused anyway (not a host name)
                found = self.vars_files(os.path.join(folder, name))
                variables: dict[str, _Var] = {}
                vault = None
                for file in found:
                    vault = vault or self.read_vars_file(file, variables)
                self.files[(kind, name)] = (variables, vault)

    def vars_files(self, stem: str) -> list[str]:
        for extension in ("", *_YAML_EXTENSIONS):
            candidate = stem + extension
            if os.path.exists(candidate):
                if os.path.isdir(candidate):
                    return self.vars_folder(candidate, 0)
                return [candidate]
        return []

    def vars_folder(self, folder: str, depth: int) -> list[str]:
        if depth > _MAX_VARS_DEPTH:
            self.fail(None, f"{folder}: directories nested too deeply")
        found: list[str] = []
        for entry in sorted(os.listdir(folder)):
            if entry.startswith(".") or entry.endswith("~"):
                continue
            extension = os.path.splitext(entry)[1]
            full = os.path.join(folder, entry)
            if os.path.isdir(full) and not extension:
                found.extend(self.vars_folder(full, depth + 1))
            elif os.path.isfile(full) and extension in ("", *_YAML_EXTENSIONS):
                found.append(full)
        return found

    def read_vars_file(self, file: str, variables: dict[str, _Var]) -> str | None:
        """Add one vars file's settings to `variables`; its name if it is vault-encrypted."""
        self.files_read += 1
        if self.files_read > _MAX_VARS_FILES:
            self.fail(None, f"more than {_MAX_VARS_FILES} group_vars/host_vars files")
        try:
            with open(file, "rb") as stream:
                data = stream.read(_MAX_BYTES + 1)
        except OSError as exc:
            self.fail(None, f"cannot read it: {exc.strerror or exc}", path=file)
        self.vars_bytes += len(data)
        if len(data) > _MAX_BYTES or self.vars_bytes > _MAX_VARS_BYTES:
            self.fail(None, "vars files too large", path=file)
        if data.startswith(b"$ANSIBLE_VAULT;"):
            return file
        try:
            text = data.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError as exc:
            self.fail(data.count(b"\n", 0, exc.start) + 1, "not valid UTF-8", path=file)
        root = self.compose(text, file)
        if root is None or _is_null(root):
            return None
        if not isinstance(root, MappingNode):
            self.fail(_line(root), f"expected a mapping of variables, got {_what(root)}",
                      path=file)
        for k, v in self.pairs(root, "", file):
            key = _name(k) or ""
            if key in _TRACKED or _SECRET.fullmatch(key):
                variables[key] = self.yaml_value(v, file)
        return None

    # --- after reading: Ansible's reconciling, then each host's settings -------------------

    def reconcile(self) -> None:
        for name, group in self.groups.items():
            if name != "all" and not group.parents:
                self.child("all", name, group.line)
        ungrouped = self.groups["ungrouped"]
        for name, host in self.hosts.items():
            others = [g for g in host.groups if g not in ("all", "ungrouped")]
            if "ungrouped" in host.groups and others:  # put there by the INI reader
                host.groups.remove("ungrouped")
                ungrouped.held.remove(name)
            elif not others and "ungrouped" not in host.groups:
                self.host(name, "ungrouped", None, host.line)
        ungrouped.hosts = [h for h in ungrouped.hosts if h in ungrouped.held]
        self.order_groups()

    def order_groups(self) -> None:
        """The depth of every group (the longest way down from `all`, as Ansible counts
        it); a cycle of children is refused, located at one of its links."""
        waiting = {name: len(group.parents) for name, group in self.groups.items()}
        ready = ["all"]
        self.depth = {"all": 0}
        while ready:
            name = ready.pop()
            for child in self.groups[name].children:
                self.depth[child] = max(self.depth.get(child, 0), self.depth[name] + 1)
                waiting[child] -= 1
                if not waiting[child]:
                    ready.append(child)
        stuck = {name for name, count in waiting.items() if count}
        if stuck:  # each has a parent that is stuck too: walk up until a group repeats
            trail = [next(name for name in self.groups if name in stuck)]
            while True:
                parent = next(p for p in self.groups[trail[-1]].parents if p in stuck)
                if parent in trail:  # parent → trail[-1] → ... → parent, each a parent of the next
                    cycle = [parent, *reversed(trail[trail.index(parent):])]
                    break
                trail.append(parent)
            self.fail(self.groups[cycle[-2]].edges.get(cycle[-1]),
                      f"cycle in children: {' -> '.join(cycle)}")

    def members(self, name: str) -> list[str]:
        """A group's hosts in Ansible's order: its own, then its children's, level by level."""
        order: list[str] = [name]
        level = [name]
        seen = {name}
        while level:
            below = [c for g in level for c in self.groups[g].children if c not in seen]
            below = list(dict.fromkeys(below))
            seen.update(below)
            order.extend(below)
            level = below
        hosts = list(dict.fromkeys(h for g in order for h in self.groups[g].hosts))
        self.tally(self.groups[name].line, len(hosts))
        return hosts

    def build(self, kind: str) -> AnsibleInventory:
        self.read_vars_files()
        groups = {name: tuple(self.members(name)) for name in self.groups}
        held: dict[str, list[str]] = {name: [] for name in self.hosts}
        for group, members in groups.items():
            if group != "all":
                for name in members:
                    held[name].append(group)
        hosts: dict[str, Host] = {}
        refused: dict[str, str] = {}
        for name, record in self.hosts.items():
            result = self.settle(record, held[name])
            if isinstance(result, Host):
                hosts[name] = result
            else:
                refused[name] = result
        return AnsibleInventory(self.path, hosts, groups, refused=refused,
                                names=tuple(self.hosts), format=kind)

    def layers(self, record: _Host, groups: list[str]) -> list[tuple[dict[str, _Var],
                                                                     str | None]]:
        """The host's variable sources, weakest first, in Ansible's order."""
        ranked = sorted((g for g in groups if g != "all"),
                        key=lambda g: (self.depth[g], self.groups[g].priority, g))
        empty: tuple[dict[str, _Var], str | None] = ({}, None)
        return [
            (self.groups["all"].vars, None),
            *((self.groups[g].vars, None) for g in ranked),
            self.files.get(("group_vars", "all"), empty),
            *(self.files.get(("group_vars", g), empty) for g in ranked),
            (record.vars, None),
            self.files.get(("host_vars", record.name), empty),
        ]

    def settle(self, record: _Host, groups: list[str]) -> Host | str:
        """The host's `Host`, or the one-line reason fleetexec will not run on it."""
        name = record.name

        def refuse(problem: str, var: _Var | None = None, key: str | None = None) -> str:
            where = var if var is not None else record
            return str(InventoryError(f"host {name!r} {problem}", path=where.path,
                                      line=where.line, key=key))

        try:
            check_hostname(name)
        except ValueError:
            return refuse("is not a DNS name or IP address, which fleetexec needs as a host "
                          "name (Ansible takes any text)")
        merged: dict[str, _Var] = {}
        for variables, vault in self.layers(record, groups):
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
            if _SECRET.fullmatch(key) and var.value not in (None, ""):
                return refuse(f"has a secret in {key} (not shown): {_CREDENTIALS_ELSEWHERE}",
                              var, key)

        def pick(setting: str) -> tuple[str, _Var] | None:
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
            if isinstance(var.value, _Unusable) or not isinstance(var.value, str):
                return None, refuse(f"has {key} {var.shown}, expected {what}", var, key)
            if _TEMPLATE.search(var.value):
                return None, refuse(f"has a Jinja2 template in {key} ({var.shown}); fleetexec "
                                    "does not evaluate templates", var, key)
            if len(var.value) > _MAX_VALUE:
                return None, refuse(f"has {key} longer than {_MAX_VALUE} characters", var, key)
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
        if plugin.startswith("paramiko") and "ansible_paramiko_proxy_command" in merged:
            var = merged["ansible_paramiko_proxy_command"]
            return refuse("is reached through a proxy command; fleetexec does not support "
                          "bastions yet and will not connect to it directly", var,
                          "ansible_paramiko_proxy_command")
        for setting in _ARGS:
            if setting not in merged or merged[setting].value in (None, ""):
                continue
            var = merged[setting]
            if not isinstance(var.value, str) or _TEMPLATE.search(var.value):
                return refuse(f"has {setting} {var.shown}, which fleetexec cannot read", var,
                              setting)
            found_keys, problem = _ssh_args(var.value)
            if problem:
                return refuse(problem, var, setting)
            keys.extend(found_keys)
        try:
            return Host(name, address=address or "", port=port, user=user,
                        key_files=tuple(keys), groups=tuple(groups))
        except ValueError as exc:  # all checked above; this keeps any miss located
            return refuse(str(exc))


def _ssh_args(text: str) -> tuple[list[str], str | None]:
    """The key files in ssh options (`-i FILE`, `-o IdentityFile=FILE`), or the refusal of
    an option fleetexec does not support: bastions are named as such."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        return [], f"has ssh options fleetexec cannot read ({str(exc).lower()})"
    keys: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        flag, value = word[:2], word[2:]
        if flag in ("-i", "-J", "-o") and not value:
            if index == len(words):
                return [], f"has ssh option {flag} without its value"
            value, index = words[index], index + 1
        if flag == "-o":
            option, _, setting = value.replace("=", " ", 1).partition(" ")
            option, setting = option.strip().lower(), setting.strip()
            if option == "identityfile":
                flag, value = "-i", setting
            elif option in ("proxyjump", "proxycommand"):
                return [], (f"is meant to be reached through a bastion ('-o {value}'); fleetexec "
                            "does not support bastions yet and will not connect to it directly")
            elif option in ("controlmaster", "controlpersist", "controlpath"):
                continue  # ssh's connection sharing: fleetexec keeps its own connections
            elif option == "stricthostkeychecking" and setting.lower() in ("yes", "true"):
                continue
            elif option == "stricthostkeychecking":
                return [], (f"has ssh option '-o {value}'; fleetexec always checks host keys "
                            "(--host-key-policy accept-new learns new ones)")
            else:
                return [], f"has ssh option '-o {value}', which fleetexec does not support"
        if flag == "-J":
            return [], (f"is meant to be reached through the bastion {value!r} (-J); fleetexec "
                        "does not support bastions yet and will not connect to it directly")
        if flag == "-i":
            keys.append(value)
        elif not re.fullmatch(r"-[CqT]+", word):  # compression, quiet, no tty: no-ops here
            return [], f"has ssh option {word!r}, which fleetexec does not support"
    return keys, None


def _boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        value = value.strip().lower()
        return True if value in _TRUE else False if value in _FALSE else None
    if isinstance(value, int | float):
        return True if value == 1 else False if value == 0 else None
    return None


def _kind(value: Any) -> str:
    if isinstance(value, _Unusable):
        return value.what
    return {bool: "a boolean", int: "a number", float: "a number", type(None): "None"}.get(
        type(value), "text")


def _name(node: Node) -> str | None:
    """A variable's name; None for a key no connection setting has (`8080:`, a list)."""
    if isinstance(node, ScalarNode) and node.tag in (_STR, "!unsafe"):
        return str(node.value)
    return None


def _line(node: Node) -> int | None:
    return node.start_mark.line + 1 if node.start_mark else None


def _mark(event: yaml.Event) -> int | None:
    return event.start_mark.line + 1 if event.start_mark else None


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


def _what(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    value = str(node.value)
    return repr(value if len(value) <= 60 else value[:60] + "…")
