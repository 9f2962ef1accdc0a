"""Load and check a YAML inventory, and select hosts from it.

This package's loader.py and parser.py, and ansible/yaml_reader.py (Ansible's
formats, which `load_inventory` detects), are the only modules importing `yaml`.
The text is parsed with `yaml.compose` into a node tree that is walked by hand:
no Python object is ever built from the document (so `!!python/...` tags cannot
run code), every key keeps its line number, and the YAML 1.1 typing traps
(`port: 0022` is 18, `no` is False, `12:30` is 750) are refused with a "quote it"
hint instead of being converted behind the user's back. Every problem is one
`InventoryError` line: `file:line: dotted.key: expected …, got …`.

The work a file can cause is bounded, not just its bytes (see the `_MAX_*` of
loader.py, parser.py and selection.py): a pass over the YAML events, before any
tree is built, refuses an unknown top-level key, too many nodes and deep
nesting; host names from ranges and group memberships (children flattened) are
counted as they are made.

Layout: loader.py (bytes, encodings, the size cap, the checks on the text and
the YAML events, composing the tree), parser.py (the node-tree walk: located
errors, settings, groups, hosts → `Inventory`), selection.py (`Inventory` and
`select`), targets.py (`hosts_from_targets`, hosts without an inventory).
"""

from __future__ import annotations

from .loader import load_inventory, parse_inventory
from .selection import Inventory
from .targets import hosts_from_targets

__all__ = ["Inventory", "hosts_from_targets", "load_inventory", "parse_inventory"]
