"""Ansible host patterns, and the `AnsibleInventory` they select from.

Ansible's patterns: `web:&staging`, `web:!db`, `web,db`, `web[0]` / `web[0:2]` / `web[-1]`
(a subscript of what `web` matches, never a range), `~regex`, globs, `all`; plus
ClusterShell's `@group` with `&`, `!` and `^`. Unlike Ansible, a term matching no host or
group is refused rather than ignored.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ..exceptions import InventoryError
from ..host import Host
from ..inventory import Inventory
from .hostnames import is_address
from .limits import MAX_TERM

__all__ = ["AnsibleInventory"]

_LOCALHOST = ("127.0.0.1", "localhost", "::1")  # Ansible's implicit localhost answers to these
# A pattern that is several patterns joined by `:` (colons inside [...] are not separators).
_PATTERN_PART = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")
_SUBSCRIPT = re.compile(r"(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]")
_SET_OPERATOR = re.compile(r"([&!^])")


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
        if len(body) > MAX_TERM:
            raise InventoryError(f"host pattern term longer than {MAX_TERM} characters",
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
        elif is_address(pattern):
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
