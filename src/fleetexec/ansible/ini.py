"""Ansible's INI inventories, read as its INI plugin reads them.

`[group]`, `[group:children]`, `[group:vars]`, `host key=value`; values are read as the
plugin reads them: a Python literal where `ast.literal_eval` takes it, else the text. No
code is run: values go through `ast.literal_eval` only, and only for the settings
fleetexec uses.
"""

from __future__ import annotations

import ast
import functools
import re
import shlex
import warnings
from typing import Any

from .data import Builder
from .limits import MAX_VALUE
from .records import Unusable, Var
from .variables import is_secret

__all__ = ["read_ini"]

# INI, as Ansible's plugin reads it: `[name]` / `[name:kind]` with an optional comment.
_SECTION = re.compile(r"\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?")
_CHILD = re.compile(r"([^:\]\s]+)\s*(?:#.*)?")
_BLANKS = re.compile(r"[ \t]+")  # shlex's whitespace, within one (stripped) line


def read_ini(builder: Builder, text: str) -> None:
    """Feed `builder` the INI inventory `text`."""
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
                builder.fail(number, f"section [{group}:{kind}] has an unknown type: use "
                                     f"[{group}], [{group}:children] or [{group}:vars]")
            if group not in builder.groups:
                builder.group(group, number).declared = kind != "vars"
                if kind == "vars":
                    undeclared[group] = number
            elif kind != "vars" and not builder.groups[group].declared:
                builder.groups[group].declared = True
                undeclared.pop(group, None)
            if kind != "vars" and group in pending:
                for parent in pending.pop(group)[1]:
                    builder.child(parent, group, number)
            state = kind
            continue
        if line.startswith("[") and line.endswith("]"):
            builder.fail(number, f"bad section {line!r}: no spaces or other characters "
                                 "are allowed in [group] or [group:kind]")
        if state == "hosts":
            _hosts(builder, line, group, number)
        elif state == "vars":
            key, equals, value = line.partition("=")
            if not equals:
                builder.fail(number, f"expected key=value in [{group}:vars], got {line!r}")
            key, value = key.strip(), value.strip()
            builder.set_var(group, key, functools.partial(_value, builder, key, value,
                                                          number), number)
        else:
            found = _CHILD.fullmatch(line)
            if found is None:
                builder.fail(number, f"expected a group name in [{group}:children], got "
                                     f"{line!r}")
            name = found.group(1)
            if name in builder.groups and builder.groups[name].declared:
                builder.child(group, name, number)
            else:
                pending.setdefault(name, (number, []))[1].append(group)
    for name, (number, parents) in pending.items():
        builder.fail(number, f"section [{parents[-1]}:children] names group {name!r}, which "
                             "is never defined (Ansible refuses this file too)")
    for name, number in undeclared.items():
        builder.fail(number, f"section [{name}:vars] is for group {name!r}, which is never "
                             "defined (Ansible refuses this file too)")


def _hosts(builder: Builder, line: str, group: str, number: int) -> None:
    try:  # without quotes, backslashes or comments, shlex splits at blanks: faster so
        tokens = shlex.split(line, comments=True) if any(
            c in line for c in "'\"\\#") else _BLANKS.split(line)
    except ValueError as exc:
        builder.fail(number, f"cannot read the host line: {str(exc).lower()}")
    if not tokens:
        return
    pattern = tokens[0]
    if pattern.strip().endswith(":"):  # (no port is split off a name ending in ':')
        builder.fail(number, f"bad host {pattern!r}: a ':' must be followed by a port")
    if pattern.strip() == "---":
        builder.fail(number, "'---' is not a host (this looks like YAML)")
    names, port = builder.names(pattern, number)
    assignments: list[tuple[str, str]] = []
    for token in tokens[1:]:
        key, equals, value = token.partition("=")
        if not equals:
            builder.fail(number, f"expected key=value after the host, got {token!r}")
        assignments.append((key, value))
    builder.add_hosts(names, port, group, number, [
        (key, functools.partial(_value, builder, key, value, number), number)
        for key, value in assignments])


def _value(builder: Builder, key: str, text: str, line: int) -> Var:
    """A value as Ansible's INI plugin reads it: a Python literal, else the text."""
    secret = is_secret(key)
    if len(text) > MAX_VALUE:
        return Var(text, builder.path, line, "" if secret else repr(text[:60] + "…"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # `"\d"`: a SyntaxWarning, as in Ansible
            value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return Var(text, builder.path, line, "" if secret else repr(text))
    except (TypeError, MemoryError, RecursionError):  # Ansible fails on these too
        builder.fail(line, "cannot read the value" + ("" if secret else f" {text[:60]!r}"),
                     key=key)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    if not isinstance(value, str | int | float | bool | None):
        value = Unusable(f"a {type(value).__name__}")
    shown = "" if secret else repr(text) if isinstance(value, str) and value == text else (
        f"{text!r}, which Ansible reads as {_kind(value)}")
    return Var(value, builder.path, line, shown)


def _kind(value: Any) -> str:
    if isinstance(value, Unusable):
        return value.what
    return {bool: "a boolean", int: "a number", float: "a number", type(None): "None"}.get(
        type(value), "text")
