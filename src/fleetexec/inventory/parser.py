"""The walk over a composed YAML node tree: every value typed and checked where it
is read, every problem one located `InventoryError` (`file:line: dotted.key: …`);
groups flattened with their children, settings merged, frozen `Host` records out.
The text and the YAML events were checked first (loader.py).
"""

from __future__ import annotations

import difflib
import math
import os
import re
from typing import Any, NoReturn

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .. import hostrange
from ..exceptions import InventoryError
from ..host import Host, check_hostname, check_user, parse_jump
from .selection import Inventory

_Y = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_Y + t for t in ("str", "int", "float", "bool", "null"))
_TAGS = frozenset(_Y + t for t in ("str", "int", "float", "bool", "null", "seq", "map"))
_READS_AS = {_BOOL: "a boolean", _INT: "a number", _FLOAT: "a number", _NULL: "null"}
_SETTINGS = ("port", "user", "key_files", "connect_timeout", "command_timeout", "known_hosts_file",
             "proxy_jump")
_SECRET = re.compile(r"pass|secret|token|private|credential|api_?key", re.IGNORECASE)
_VAULT_HINT = ("secrets do not belong in the inventory; "
               "use FLEETEXEC_PASSWORD / --ask-password or an encrypted key file")
_GROUP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*", re.ASCII)
_PORT = re.compile(r"[1-9][0-9]{0,4}", re.ASCII)  # plain decimal: no 0022, 0x16, 1_0, 22.0
_SECONDS = re.compile(r"(0|[1-9][0-9]*)(\.[0-9]+)?", re.ASCII)
_SAFE_KEY = re.compile(r"[A-Za-z0-9_.:\[\],-]+", re.ASCII)
_SECTIONS = ("defaults", "groups", "hosts")
# Bounds on the work a file can cause, each refused (file:line) where it is crossed,
# so that a hostile inventory fails early instead of costing minutes and gigabytes.
_MAX_HOSTS = 100_000  # hostrange's bound on one range, applied to the whole file
_MAX_NAMES = 250_000  # host names produced by all ranges and lists, repeats counted
_MAX_MEMBERSHIPS = 500_000  # (host or child group, group) pairs, children flattened
Settings = dict[str, tuple[Any, int]]  # setting -> (checked value, line it came from)


def _join(parent: str, key: str) -> str:
    key = key if _SAFE_KEY.fullmatch(key) else repr(key)  # keeps messages on one line
    return f"{parent}.{key}" if parent else key


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


def _got(expected: str, node: Node) -> str:
    """`expected X, got Y`: Y repr'd and shortened, private key text never shown."""
    if not isinstance(node, ScalarNode):
        found = "a mapping" if isinstance(node, MappingNode) else "a list"
    elif "PRIVATE KEY" in node.value:
        found = "private key text (not shown)"
    elif node.tag == _NULL and not node.value:
        found = "nothing"
    else:
        value = node.value if len(node.value) <= 60 else node.value[:60] + "…"
        found = repr(value) + (" (a quoted string)" if node.style in ("'", '"') else "")
    return f"expected {expected}, got {found}"


class _Parser:
    def __init__(self, path: str) -> None:
        self.path = path
        self.base = os.getcwd() if path == "<string>" else os.path.dirname(os.path.abspath(path))
        self.order: dict[str, int] = {}  # host -> first line naming it; keeps file order
        self.own: dict[str, tuple[int, Settings]] = {}  # from `hosts:`, with the key's line
        self.members: dict[str, dict[str, int]] = {}
        self.gvars: dict[str, Settings] = {}
        self.children: dict[str, list[tuple[str, Node]]] = {}
        self.gkey: dict[str, Node] = {}
        self.named = 0  # host names from ranges and lists so far, repeats counted
        self.memberships = 0  # see `tally`

    def fail(self, where: Node | int | None, key: str | None, message: str) -> NoReturn:
        line = where.start_mark.line + 1 if isinstance(where, Node) else where
        raise InventoryError(message, path=self.path, line=line, key=key or None)

    def walk(self, root: Node | None) -> Inventory:
        """The inventory the composed tree `root` describes (None: an empty file)."""
        if root is None or _is_null(root):
            return Inventory(self.path)
        self.check_tree(root)
        defaults: Settings = {}
        for section, (_, node) in self.mapping(root, "", _SECTIONS).items():
            if section == "defaults":
                defaults = self.settings(node, "defaults", _SETTINGS)
            elif section == "groups":
                self.groups(node)
            else:
                self.hosts(node)
        return self.build(defaults)

    def check_tree(self, root: Node) -> None:
        """Refuse non-standard tags and aliases anywhere, before reading any value."""
        seen: set[int] = set()
        stack: list[tuple[Node, str]] = [(root, "")]
        while stack:  # a loop, not recursion, and first problem in file order first
            node, key = stack.pop()
            if id(node) in seen:  # the composer hands out one shared node per alias
                self.fail(node, key, "YAML aliases (*name) are not supported; write it out")
            seen.add(id(node))
            if node.tag not in _TAGS:
                tag = node.tag.replace(_Y, "!!")
                if tag in ("!!timestamp", "!!merge", "!!value") and isinstance(node, ScalarNode):
                    self.fail(node, key, f"{node.value!r} reads as a YAML {tag[2:]}; quote it")
                self.fail(node, key, f"unsupported YAML tag {tag!r}")
            if isinstance(node, MappingNode):
                for k, v in reversed(node.value):
                    stack += [(v, _join(key, str(getattr(k, "value", "?")))), (k, key)]
            elif isinstance(node, SequenceNode):
                stack += [(v, f"{key}[{i}]") for i, v in reversed(list(enumerate(node.value)))]

    def text(self, node: Node, key: str, expected: str) -> str:
        """A string scalar, or a located error saying what YAML made of it."""
        if isinstance(node, ScalarNode) and node.tag == _STR:
            return str(node.value)
        reads = _READS_AS.get(node.tag) if isinstance(node, ScalarNode) and node.value else None
        self.fail(node, key, _got(expected, node) + (f", which YAML reads as {reads}; quote it"
                                                     if reads else ""))

    def mapping(self, node: Node | None, key: str, allowed: tuple[str, ...] | None,
                what: str = "a key") -> dict[str, tuple[Node, Node]]:
        """Entries of a mapping (null: none) by key; duplicate and unknown keys refused."""
        if node is None or _is_null(node):
            return {}
        if not isinstance(node, MappingNode):
            self.fail(node, key, _got("a mapping", node))
        entries: dict[str, tuple[Node, Node]] = {}
        for k, v in node.value:
            name = self.text(k, key, what)
            here = _join(key, name)
            if allowed is not None and name not in allowed:
                self.refuse_key(k, here, name, allowed)
            if name in entries:
                first = entries[name][0].start_mark.line + 1
                self.fail(k, here, f"duplicate key (first on line {first})")
            entries[name] = (k, v)
        return entries

    def refuse_key(self, where: Node | int | None, here: str, name: str,
                   allowed: tuple[str, ...]) -> NoReturn:
        """The error for key `name` (dotted path `here`), which is not one of `allowed`."""
        if _SECRET.search(name):  # and never echo the value: it is the secret
            self.fail(where, here, _VAULT_HINT)
        if name == "address":
            self.fail(where, here, "address can only be set on one host, under hosts:")
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        self.fail(where, here, f"unknown key{hint}; expected one of: {', '.join(allowed)}")

    def items(self, node: Node | None, key: str) -> list[Node]:
        if node is None or _is_null(node):
            return []
        if not isinstance(node, SequenceNode):
            self.fail(node, key, _got("a list", node))
        return list(node.value)

    def hostnames(self, node: Node, key: str) -> list[str]:
        """Expand one host name or range (`web[01-20]`) into checked names."""
        try:
            names = hostrange.expand(self.text(node, key, "a host name or range"))
        except InventoryError:
            raise
        except ValueError as exc:
            self.fail(node, key, str(exc))
        self.named += len(names)
        if self.named > _MAX_NAMES:  # `_MAX_HOSTS` counts distinct names: not the work
            self.fail(node, key, f"more than {_MAX_NAMES} host names in all ranges and lists")
        for name in names:
            if name in self.order:  # checked when first seen
                continue
            try:
                check_hostname(name)
            except ValueError:
                self.fail(node, key, f"expected a DNS name or IP address, got {name!r}")
            self.order[name] = node.start_mark.line + 1
        if len(self.order) > _MAX_HOSTS:
            self.fail(node, key, f"more than {_MAX_HOSTS} hosts")
        return names

    def settings(self, node: Node | None, key: str, allowed: tuple[str, ...]) -> Settings:
        out: Settings = {}
        for name, (k, v) in self.mapping(node, key, allowed).items():
            at = k if _is_null(v) and not v.value else v  # an empty value has no line of its own
            out[name] = (self.setting(name, v, at, _join(key, name)), at.start_mark.line + 1)
        return out

    def setting(self, name: str, node: Node, at: Node, key: str) -> Any:
        """One setting's value, typed and checked."""
        value = str(node.value) if isinstance(node, ScalarNode) else ""
        if name == "port":
            if node.tag == _INT and _PORT.fullmatch(value) and int(value) <= 65535:
                return int(value)
            self.fail(at, key, _got("an integer 1-65535 in plain decimal", node))
        if name.endswith("_timeout"):
            if node.tag in (_INT, _FLOAT) and _SECONDS.fullmatch(value):
                if math.isfinite(float(value)):  # 400 nines is a float too: inf
                    return float(value)
            self.fail(at, key, _got("seconds >= 0 (like 10 or 2.5)", node))
        if name in ("user", "address"):
            text = self.text(node, key, "a user name" if name == "user" else
                             "a host name or IP address")  # outside the try: InventoryError
            try:  # is a ValueError too, and its "quote it" hint must survive
                if name == "user":
                    return check_user(text)
                # Host holds bare addresses: `[::1]` would become `[[::1]]:port`.
                return check_hostname(text.removeprefix("[").removesuffix("]"))
            except ValueError:
                self.fail(at, key, _got("a POSIX user name" if name == "user" else
                                        "a DNS name or IP address", node))
        if name == "proxy_jump":
            text = self.text(node, key, "jump hosts, [user@]host[:port][,...]")
            try:
                if text.lower() != "none":
                    parse_jump(text)  # checked here, to name the line
            except ValueError:
                self.fail(at, key, _got("jump hosts, [user@]host[:port][,...] or none", node))
            return text
        if name == "key_files" and isinstance(node, SequenceNode):
            return tuple(self.file(item, f"{key}[{i}]") for i, item in enumerate(node.value))
        path = self.file(node, key)
        return (path,) if name == "key_files" else path

    def file(self, node: Node, key: str) -> str:
        path = self.text(node, key, "a file path")
        if "PRIVATE KEY" in path:  # key text pasted where its path belongs
            self.fail(node, key, _VAULT_HINT)
        if not path or any(ord(c) < 32 or ord(c) == 127 for c in path):
            self.fail(node, key, _got("a file path", node))
        return os.path.normpath(os.path.join(self.base, os.path.expanduser(path)))

    def groups(self, node: Node) -> None:
        for name, (k, v) in self.mapping(node, "groups", None, "a group name").items():
            here = _join("groups", name)
            if not _GROUP_NAME.fullmatch(name):
                self.fail(k, "groups", f"expected a group name (letters, digits, _ and -), "
                                       f"got {name!r}")
            self.gkey[name] = k
            entry = {e: v for e, (_, v) in self.mapping(v, here, ("hosts", "vars", "children"))
                     .items()}
            members = self.members[name] = {}
            for i, item in enumerate(self.items(entry.get("hosts"), f"{here}.hosts")):
                for host in self.hostnames(item, f"{here}.hosts[{i}]"):
                    if host in members:
                        self.fail(item, f"{here}.hosts[{i}]", f"host {host!r} is listed twice "
                                  f"(first on line {members[host]})")
                    members[host] = item.start_mark.line + 1
            self.gvars[name] = self.settings(entry.get("vars"), f"{here}.vars", _SETTINGS)
            self.children[name] = [
                (self.text(c, f"{here}.children[{i}]", "a group name"), c)
                for i, c in enumerate(self.items(entry.get("children"), f"{here}.children"))]

    def hosts(self, node: Node) -> None:
        for pattern, (k, v) in self.mapping(node, "hosts", None, "a host name or range").items():
            here, line = _join("hosts", pattern), k.start_mark.line + 1
            names = self.hostnames(k, "hosts")
            settings = self.settings(v, here, ("address", *_SETTINGS))
            if "address" in settings and len(names) > 1:
                self.fail(v, f"{here}.address", f"one address for the {len(names)} hosts "
                                                "of a range; set it per host")
            for host in names:
                if host in self.own:
                    self.fail(k, here, f"host {host!r} is defined twice "
                                       f"(lines {self.own[host][0]} and {line})")
                self.own[host] = (line, settings)

    def descendants(self, group: str, trail: list[str], memo: dict[str, set[str]]) -> set[str]:
        if group not in memo:
            found: set[str] = set()
            for child, node in self.children[group]:
                key, path = f"groups.{group}.children", [*trail, group]
                if child not in self.children:
                    close = difflib.get_close_matches(child, self.children, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    self.fail(node, key, f"unknown group {child!r}{hint}")
                if child in path:
                    cycle = " -> ".join([*path[path.index(child):], child])
                    self.fail(node, key, f"cycle in children: {cycle}")
                below = self.descendants(child, path, memo)
                self.tally(node, key, 1 + len(below))
                found.add(child)
                found |= below
            memo[group] = found
        return memo[group]

    def tally(self, where: Node, key: str, count: int) -> None:
        """Count group memberships as they are worked out: children of children make
        them grow fast (a few lines can make a group of every group, many times)."""
        self.memberships += count
        if self.memberships > _MAX_MEMBERSHIPS:
            self.fail(where, key, f"more than {_MAX_MEMBERSHIPS} group memberships "
                                  "(hosts and groups, with children's counted in)")

    def build(self, defaults: Settings) -> Inventory:
        below: dict[str, set[str]] = {}
        index = {name: i for i, name in enumerate(self.order)}
        groups: dict[str, tuple[str, ...]] = {}
        held: dict[str, list[str]] = {name: [] for name in self.order}
        for group in self.children:
            if group in self.order:
                self.fail(self.gkey[group], "groups",
                          f"group {group!r} has the same name as a host; rename one")
            self.descendants(group, [], below)
            self.tally(self.gkey[group], _join("groups", group), len(self.members[group])
                       + sum(len(self.members[c]) for c in below[group]))
            flat = set(self.members[group]).union(*(self.members[c] for c in below[group]))
            groups[group] = tuple(sorted(flat, key=index.__getitem__))
            for name in groups[group]:
                held[name].append(group)
        hosts: dict[str, Host] = {}
        for name, line in self.order.items():
            own = self.own.get(name, (0, {}))[1]
            values = {key: value for key, (value, _) in defaults.items()}
            for key in _SETTINGS:
                setters = [g for g in held[name] if key in self.gvars[g]]
                # A child's vars win over its ancestors': drop any group with a setter below it.
                winners = [(g, *self.gvars[g][key]) for g in setters
                           if not below[g].intersection(setters)]
                if key in own or not winners:
                    continue
                (first, value, at), *others = winners
                for other, value2, at2 in others:
                    if value2 != value:
                        self.fail(at2, f"groups.{other}.vars.{key}",
                                  f"host {name!r} gets {key} {value!r} from group {first!r} "
                                  f"(line {at}) and {value2!r} from group {other!r}; "
                                  "set it on the host or make one group a child of the other")
                values[key] = value
            values.update({key: value for key, (value, _) in own.items()})
            try:
                hosts[name] = Host(name, groups=tuple(held[name]), **values)
            except ValueError as exc:  # all checked above; this keeps any miss located
                self.fail(line, _join("hosts", name), str(exc))
        return Inventory(self.path, hosts, groups)
