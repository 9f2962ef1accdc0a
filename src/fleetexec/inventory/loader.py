"""Reading an inventory: the file's bytes (size cap, encodings), the format
(Ansible's go to the ansible package), the checks on the text and on the YAML
events that come before any tree is built, and composing the tree that
parser.py walks.
"""

from __future__ import annotations

import codecs
import os
import re
from typing import Any

import yaml
from yaml.nodes import Node, ScalarNode

from ..exceptions import InventoryError
from .parser import _SECTIONS, _STR, _join, _Parser
from .selection import Inventory

__all__ = ["load_inventory", "parse_inventory"]

_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")  # the line breaks YAML counts lines by
# Bounds on the work a file can cause, each refused (file:line) where it is crossed,
# so that a hostile inventory fails early instead of costing minutes and gigabytes.
_MAX_BYTES = 4 << 20
_MAX_NODES = 250_000  # YAML nodes (keys, values, list items); checked before any tree
_MAX_DEPTH = 32  # YAML nesting; the format itself needs 5
# libyaml, when PyYAML has it: 5-10 times faster than the pure-Python parser, which
# is the fallback (a few syntax errors are worded differently); both are safe loaders.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_RESOLVER: Any = yaml.resolver.Resolver()  # typeshed leaves `resolve` untyped
# Refused before parsing, for one message and an exact line with either parser:
# what YAML does not allow (PyYAML's set), and a BOM anywhere but at the start.
_NOT_YAML = re.compile(r"[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufefe\uff00-\ufffd"
                       r"\U00010000-\U0010ffff]")
_TAB_INDENT = re.compile(r"(?:\A|\r\n|[\n\r\x85\u2028\u2029]) *\t")  # a tab in indentation


def load_inventory(path: str | os.PathLike[str], format: str | None = None) -> Inventory:
    """Read, parse and check the inventory file at `path`.

    `format` is `fleetexec`, `ansible-yaml` or `ansible-ini` (see the ansible package);
    None detects it from the text. A UTF-8 BOM is accepted; any other encoding is
    refused. Raises `InventoryError` naming the file (and the line, where there is one).
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as stream:
            data = stream.read(_MAX_BYTES + 1)
    except OSError as exc:
        raise InventoryError(f"cannot read the inventory: {exc.strerror or exc}",
                             path=name) from None
    if len(data) > _MAX_BYTES:
        raise InventoryError(f"file is larger than {_MAX_BYTES >> 20} MiB", path=name)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # UTF-32 LE too
        raise InventoryError("file is UTF-16/32 encoded; save it as UTF-8", path=name, line=1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InventoryError(f"not valid UTF-8 (byte {data[exc.start]:#04x}); save it as UTF-8",
                             path=name, line=data.count(b"\n", 0, exc.start) + 1) from None
    if format != "fleetexec":
        from ..ansible import detect_format, parse_ansible_inventory

        format = format or detect_format(text, name)
        if format != "fleetexec":
            return parse_ansible_inventory(text, name, format)
    return parse_inventory(text, name)


def parse_inventory(text: str, path: str = "<string>") -> Inventory:
    """Parse and check inventory YAML `text`. `path` names it in messages and
    is the base for relative paths (the current directory for `<string>`).
    """
    try:
        parser = _Parser(path)
        return parser.walk(_compose(parser, text))
    except RecursionError:  # the composer recurses per nesting level, as do children
        raise InventoryError("nested too deeply", path=path) from None


def _compose(parser: _Parser, text: str) -> Node | None:
    """The YAML node tree of `text`, after the checks that need no tree."""
    text = text.removeprefix("\ufeff")
    if found := _TAB_INDENT.search(text):  # YAML's own message is cryptic
        parser.fail(len(_BREAK.split(text[: found.end()])), None,
                    "tab in indentation; indent YAML with spaces")
    if found := _NOT_YAML.search(text):
        parser.fail(len(_BREAK.split(text[: found.start()])), None,
                    f"character U+{ord(found.group()):04X} is not allowed in YAML")
    try:
        _scan(parser, text)
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join("; ".join(filter(None, [exc.context, exc.problem])).split())
        parser.fail(mark.line + 1 if mark else None, None, f"YAML syntax error: {problem}")
    except yaml.YAMLError as exc:
        parser.fail(None, None, f"YAML error: {' '.join(str(exc).split())}")
    return root


def _scan(parser: _Parser, text: str) -> None:
    """Read the YAML events before any tree is built, refusing too many nodes,
    too deep a nesting and an unknown top-level key where they start: a huge
    subtree under `bogus:` is refused at its first line, not after being built."""
    nodes = depth = 0
    top = False  # the root is a mapping, whose keys are checked here
    key = True  # the next node in the root mapping is a key: keys and values alternate
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.NodeEvent):  # scalar, alias, list or mapping start
            nodes += 1
            if nodes > _MAX_NODES:
                parser.fail(_line(event), None,
                            f"more than {_MAX_NODES} YAML nodes (keys, values, list items)")
            if top and depth == 1:
                if key and isinstance(event, yaml.ScalarEvent) and event.tag is None:
                    # Only plain string keys: `on:` or `!!str x` get their own message later.
                    tag = _RESOLVER.resolve(ScalarNode, event.value, event.implicit)
                    if tag == _STR and event.value not in _SECTIONS:
                        parser.refuse_key(_line(event), _join("", event.value), event.value,
                                          _SECTIONS)
                key = not key
        if isinstance(event, yaml.CollectionStartEvent):
            top = top or (not depth and isinstance(event, yaml.MappingStartEvent))
            depth += 1
            if depth > _MAX_DEPTH:
                parser.fail(_line(event), None, "nested too deeply")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _line(event: yaml.Event) -> int | None:
    return event.start_mark.line + 1 if event.start_mark else None
