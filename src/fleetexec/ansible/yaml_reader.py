"""Ansible's YAML inventories, and group_vars/host_vars files, read as a YAML node tree.

A group (`all:` or any other) holds `hosts`, `children` and `vars`. No Python object is
built from YAML: the node tree is walked by hand, aliases and merge keys bounded. What
Ansible only warns about and skips or overrides (an unknown key or a non-mapping in a
group, a duplicate key) is refused, located.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .data import SCRIPT_HINT, Builder
from .limits import MAX_DEPTH, MAX_NODES, MAX_WORK
from .records import Unusable, Var
from .variables import is_kept

__all__ = ["YAML_EXTENSIONS", "detect_yaml", "read_vars", "read_yaml"]

_Y = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL, _MERGE = (
    _Y + t for t in ("str", "int", "float", "bool", "null", "merge"))
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
YAML_EXTENSIONS = (".yml", ".yaml", ".json")
_OWN_SECTIONS = ("defaults", "groups", "hosts")  # the fleetexec format's top-level keys
_GROUP_KEYS = ("hosts", "children", "vars")


def detect_yaml(text: str) -> str | None:
    """The format a YAML mapping's first keys say (see `detect_format`); None when the root
    is no mapping or `text` is no YAML."""
    try:
        return _first_keys(text)
    except (yaml.YAMLError, RecursionError):
        return None


def _first_keys(text: str) -> str | None:
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


def read_yaml(builder: Builder, text: str) -> None:
    """Feed `builder` the YAML inventory `text`."""
    root = _compose(builder, text, builder.path)
    if root is None or (isinstance(root, ScalarNode) and root.tag == _NULL):
        return  # Ansible's INI reader takes an empty file: no hosts
    if not isinstance(root, MappingNode):
        builder.fail(_line(root), f"expected a mapping of groups, got {_what(root)}")
    top = _pairs(builder, root, "", builder.path)
    plugin = next((v for k, v in top if isinstance(k, ScalarNode) and k.value == "plugin"),
                  None)
    if plugin is not None and not (isinstance(plugin, ScalarNode) and plugin.tag == _NULL):
        builder.fail(_line(root), "this is an inventory plugin configuration (plugin:), "
                     f"not an inventory; inventory plugins are out of scope: {SCRIPT_HINT}")
    for key, value in top:
        _group(builder, _text(builder, key, "", "a group name"), key, value)


def _group(builder: Builder, name: str, key: Node, node: Node) -> str:
    line = _line(key)
    if not (isinstance(node, MappingNode) or _is_null(node)):
        builder.fail(line, f"expected a group (a mapping of hosts, children, vars), got "
                           f"{_what(node)} (Ansible skips it with a warning)", key=name)
    builder.group(name, line)
    if not isinstance(node, MappingNode):
        return name
    for section, value in _pairs(builder, node, name, builder.path):
        word = _text(builder, section, name, "hosts, children or vars")
        here = f"{name}.{word}"
        if word not in _GROUP_KEYS:
            builder.fail(_line(section), "unexpected key in a group (Ansible skips it with "
                         "a warning); expected hosts, children or vars", key=here)
        if isinstance(value, ScalarNode) and value.tag != _NULL:
            if word != "vars" and len(str(value.value).split()) > 1:
                builder.fail(_line(value), f"{str(value.value)[:60]!r} is one name with spaces "
                             "in it (Ansible reads a text here as one name); write a mapping, "
                             "one name per line ending in ':'", key=here)
            entries: list[tuple[Node, Node]] = [(value, ScalarNode(_NULL, ""))]
        elif isinstance(value, MappingNode):
            entries = _pairs(builder, value, here, builder.path)
        elif _is_null(value):
            entries = []
        else:
            builder.fail(_line(value), f"expected a mapping, got {_what(value)}", key=here)
        for k, v in entries:
            if word == "vars":
                if (var := _name(k)) is not None:
                    builder.set_var(name, var, functools.partial(_value, v, builder.path),
                                    _line(k))
            elif word == "children":
                child = _group(builder, _text(builder, k, here, "a group name"), k, v)
                builder.child(name, child, _line(k))
            else:
                _host(builder, name, k, v, here)
    return name


def _host(builder: Builder, group: str, key: Node, node: Node, here: str) -> None:
    pattern = _text(builder, key, here, "a host name (quote numbers)")
    if not (isinstance(node, MappingNode) or _is_null(node)):
        builder.fail(_line(node), f"expected the host's variables (a mapping), got "
                                  f"{_what(node)}", key=f"{here}.{pattern}")
    names, port = builder.names(pattern, _line(key))
    pairs = _pairs(builder, node, f"{here}.{pattern}", builder.path) if isinstance(
        node, MappingNode) else []
    builder.add_hosts(names, port, group, _line(key), [
        (var, functools.partial(_value, v, builder.path), _line(k))
        for k, v in pairs if (var := _name(k)) is not None])


def _value(node: Node, path: str) -> Var:
    """A variable's value from its node, nothing constructed."""
    line = _line(node)
    if not isinstance(node, ScalarNode):
        return Var(Unusable(_what(node)), path, line, _what(node))
    text = str(node.value)
    if node.tag == "!vault":
        return Var(Unusable("a vault-encrypted value"), path, line, "!vault ...")
    if node.tag in (_STR, "!unsafe"):
        return Var(text, path, line, repr(text))
    if node.tag == _NULL:
        return Var(None, path, line, repr(text))
    if node.tag == _INT and re.fullmatch(r"0|[1-9][0-9]{0,17}", text):
        return Var(int(text), path, line, text)
    if node.tag == _BOOL:
        return Var(text.lower() in ("yes", "true", "on"), path, line,
                   f"{text!r}, which YAML reads as a boolean; quote it")
    what = {_INT: "a number", _FLOAT: "a number"}.get(node.tag, f"a {node.tag!r} value")
    return Var(Unusable(what), path, line, f"{text!r}, which YAML reads as {what}; "
                                           "quote it")


def _text(builder: Builder, node: Node, key: str, expected: str) -> str:
    if isinstance(node, ScalarNode) and node.tag in (_STR, "!unsafe"):
        return str(node.value)
    shown = repr(node.value) if isinstance(node, ScalarNode) else _what(node)
    builder.fail(_line(node), f"expected {expected}, got {shown}", key=key or None)


def read_vars(builder: Builder, text: str, file: str, variables: dict[str, Var]) -> None:
    """Add the settings fleetexec uses from vars file `file` (its `text`) to `variables`."""
    root = _compose(builder, text, file)
    if root is None or _is_null(root):
        return
    if not isinstance(root, MappingNode):
        builder.fail(_line(root), f"expected a mapping of variables, got {_what(root)}",
                     path=file)
    for k, v in _pairs(builder, root, "", file):
        key = _name(k) or ""
        if is_kept(key):
            variables[key] = _value(v, file)


# --- YAML, read as a node tree: nothing is constructed, aliases and merges bounded ----


def _compose(builder: Builder, text: str, path: str) -> Node | None:
    """`text` as a YAML node tree (bounded), or None when it holds no document."""
    nodes = depth = 0
    try:
        for event in yaml.parse(text, Loader=_LOADER):
            if isinstance(event, yaml.NodeEvent):
                nodes += 1
                if nodes > MAX_NODES:
                    builder.fail(_line(event), f"more than {MAX_NODES} YAML nodes", path=path)
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    builder.fail(_line(event), "nested too deeply", path=path)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        node: Node | None = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join("; ".join(filter(None, [exc.context, exc.problem])).split())
        builder.fail(mark.line + 1 if mark else None, f"YAML syntax error: {problem}",
                     path=path)
    except yaml.YAMLError as exc:
        builder.fail(None, f"YAML error: {' '.join(str(exc).split())}", path=path)
    return node


def _pairs(builder: Builder, node: MappingNode, key: str, path: str,
           depth: int = 0) -> list[tuple[Node, Node]]:
    """A mapping's entries, `<<` merge keys expanded as YAML loaders do (written keys
    win); a key written twice is refused (Ansible warns and keeps the last)."""
    merged: list[tuple[Node, Node]] = []
    written: list[tuple[Node, Node]] = []
    seen: dict[str, int | None] = {}
    if depth > MAX_DEPTH:
        builder.fail(_line(node), "merge keys (<<) nested too deeply", path=path)
    builder.work += len(node.value)
    if builder.work > MAX_WORK:
        builder.fail(_line(node), f"more than {MAX_WORK} YAML nodes read (aliases and "
                                  "merge keys count each time)", path=path)
    for k, v in node.value:
        if k.tag == _MERGE:
            sources = v.value if isinstance(v, SequenceNode) else [v]
            if not all(isinstance(s, MappingNode) for s in sources):
                builder.fail(_line(k), "a merge key (<<) needs a mapping or a list of them",
                             path=path)
            for source in reversed(sources):
                merged[:0] = _pairs(builder, source, key, path, depth + 1)
            continue
        if isinstance(k, ScalarNode):
            name = str(k.value)
            if name in seen:
                here = f"{key}.{name}" if key else name
                builder.fail(_line(k), f"duplicate key (first on line {seen[name]})",
                             key=here, path=path)
            seen[name] = _line(k)
        written.append((k, v))
    if not merged:
        return written
    kept = {str(k.value): (k, v) for k, v in merged if isinstance(k, ScalarNode)}
    for k, _ in written:
        kept.pop(str(getattr(k, "value", "")), None)
    return [*kept.values(), *written]


def _name(node: Node) -> str | None:
    """A variable's name; None for a key no connection setting has (`8080:`, a list)."""
    if isinstance(node, ScalarNode) and node.tag in (_STR, "!unsafe"):
        return str(node.value)
    return None


def _line(item: Node | yaml.Event) -> int | None:
    return item.start_mark.line + 1 if item.start_mark else None


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


def _what(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    value = str(node.value)
    return repr(value if len(value) <= 60 else value[:60] + "…")
