"""The records the readers fill: groups, hosts and their variables, as read (not yet settled)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class Unusable:
    """A value fleetexec will not guess at: a vault-encrypted value, a list, a timestamp."""

    def __init__(self, what: str) -> None:
        self.what = what


@dataclass
class Var:
    value: Any  # str, int, float, bool, None, or Unusable
    path: str
    line: int | None
    shown: str  # the value as written, for messages (never for secrets)


# A host's or group's variables from one file: (variables, the file's name if it is
# vault-encrypted, else None).
Layer = tuple[dict[str, Var], str | None]


@dataclass
class Group:
    name: str
    path: str
    line: int | None
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    vars: dict[str, Var] = field(default_factory=dict)
    edges: dict[str, int | None] = field(default_factory=dict)  # child -> line of the link
    held: set[str] = field(default_factory=set)  # `hosts`, for lookups
    priority: int = 1
    declared: bool = True  # INI: a [name] or [name:children] section was seen


@dataclass
class HostRecord:
    name: str
    path: str
    line: int | None
    groups: list[str] = field(default_factory=list)
    vars: dict[str, Var] = field(default_factory=dict)
