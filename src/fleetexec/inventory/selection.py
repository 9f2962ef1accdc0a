"""`Inventory`, the checked result, and `Inventory.select`: host patterns (groups,
hosts, ranges, globs, `!` exclusions, ClusterShell's `@group` and `&`/`!`/`^`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .. import hostrange
from ..exceptions import InventoryError
from ..host import Host

__all__ = ["Inventory"]

# A bound on the work one selection can cause (the file's own: loader.py, parser.py).
_MAX_GLOBS = 1000  # patterns one glob term with ranges may expand to


@dataclass(frozen=True)
class Inventory:
    """A checked inventory: `hosts` (name -> `Host`, in file order) and `groups`
    (group -> member host names, children's included, in inventory order).
    Both are read-only views.
    """

    path: str
    hosts: Mapping[str, Host] = field(default_factory=dict)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # One Inventory is shared by the CLI, the executor and user code: freeze it.
        object.__setattr__(self, "hosts", MappingProxyType(dict(self.hosts)))
        object.__setattr__(self, "groups", MappingProxyType(dict(self.groups)))

    def select(self, *patterns: str) -> list[Host]:
        """Return the hosts the patterns name, in inventory order, each once.

        A pattern is a comma list of terms; a term is a group, a host, a range
        (`web[01-05]`, `web[1-12/2]`: every name must exist) or a glob (`web*`,
        `web[1-3]*`: brackets are always a range, never a character class);
        `!term` excludes. As in ClusterShell, `@web` is the group web only, and
        `&` (and), `!` (but not) and `^` (either, not both) combine terms left to
        right: `@web&@staging`, `web*!web3`. No patterns, or only exclusions,
        start from every host.
        Raises `InventoryError` naming the term when a term, included or
        excluded, matches nothing or cannot be parsed, or when nothing is left.
        """
        if not self.hosts:
            raise InventoryError("no hosts in the inventory", path=self.path)
        include: set[str] | None = None
        exclude: set[str] = set()
        for term in (t for pattern in patterns for t in _terms(pattern)):
            if term.startswith("!"):
                exclude.update(self._match(term[1:], term))
            else:
                if include is None:
                    include = set()
                include.update(self._match(term, term))
        chosen = [h for n, h in self.hosts.items()
                  if (include is None or n in include) and n not in exclude]
        if not chosen:
            raise InventoryError(f"the selection {_brief(','.join(patterns))} leaves no hosts",
                                 path=self.path)
        return chosen

    def _match(self, term: str, written: str) -> list[str]:
        if term in self.groups or term in self.hosts:
            return list(self.groups.get(term, [term]))
        shown = _brief(written)
        if any(c in term for c in "&!^"):  # ClusterShell's set operators, left to right
            pieces = re.split(r"([&!^])", term)
            if not all(pieces[0::2]):
                raise InventoryError(f"bad term {shown}: an operand of '&', '!' or '^' is "
                                     "empty", path=self.path)
            names = self._match(pieces[0], written)
            for operator, operand in zip(pieces[1::2], pieces[2::2], strict=True):
                other = self._match(operand, written)
                mine, theirs = set(names), set(other)
                names = [n for n in names if (n in theirs) == (operator == "&")]
                if operator == "^":
                    names += [n for n in other if n not in mine]
            return names
        if term.startswith("@"):  # ClusterShell's group syntax: a group, never a host
            if term[1:] not in self.groups:
                raise InventoryError(f"no group {term[1:]!r} (in {shown})", path=self.path)
            return list(self.groups[term[1:]])
        try:
            # Never retried as something else: `web[1-12/2]` read as the fnmatch class
            # `[1-12/2]` would select (or, after `!`, spare) hosts the user did not mean.
            expanded = hostrange.expand(term)
        except ValueError as exc:
            raise InventoryError(f"bad term {shown}: {exc}", path=self.path) from None
        if "*" in term or "?" in term:
            if len(expanded) > _MAX_GLOBS:  # one regex alternative each: keep it cheap
                raise InventoryError(f"{shown} expands to more than {_MAX_GLOBS} globs",
                                     path=self.path)
            glob = re.compile("|".join(map(_glob, expanded)))
            names = [n for n in self.hosts if glob.fullmatch(n)]
        else:
            missing = [n for n in expanded if n not in self.hosts and n not in self.groups]
            # A range that silently ran on fewer hosts than written would hide a typo.
            if missing and len(missing) < len(expanded) and not written.startswith("!"):
                folded = hostrange.fold(missing)
                raise InventoryError(f"{shown} names hosts not in the inventory: "
                                     f"{folded if len(folded) <= 200 else folded[:200] + '…'}",
                                     path=self.path)
            names = []
            for name in expanded:
                names.extend(self.groups.get(name, [name] if name in self.hosts else []))
        if not names:  # also for `!x`: a mistyped exclusion would run where it should not
            raise InventoryError(f"no host or group matches {shown}", path=self.path)
        return names


def _brief(text: str) -> str:
    """`text` quoted for a one-line message, cut at 80 characters."""
    return repr(text if len(text) <= 80 else text[:80] + "…")


def _glob(pattern: str) -> str:
    """A shell glob as a regex: `*` any text, `?` one character, all else literal."""
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)


def _terms(pattern: str) -> list[str]:
    # Split on commas outside `[...]`, so `web[1,3],db1` is two terms.
    terms = hostrange.split(pattern)
    if any(t in ("", "!") for t in terms):
        raise InventoryError(f"empty term in host pattern {pattern!r}")
    return terms
