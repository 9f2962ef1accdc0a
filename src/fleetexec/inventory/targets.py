"""Hosts from `user@host:port` targets, without an inventory."""

from __future__ import annotations

from collections.abc import Iterable

from .. import hostrange
from ..exceptions import InventoryError
from ..host import Host, parse_target
from .selection import _terms

__all__ = ["hosts_from_targets"]


def hosts_from_targets(patterns: Iterable[str]) -> list[Host]:
    """Build hosts from `user@host:port` targets, without an inventory.

    Each pattern is a comma list; ranges expand (`deploy@web[1-3]:2222`);
    IPv6 goes in brackets (`[::1]:2222`). A host given twice is kept once,
    unless user or port differ. Raises `InventoryError` for a bad target.
    """
    hosts: dict[str, Host] = {}
    for pattern in patterns:
        for term in _terms(pattern):
            user, at, rest = term.rpartition("@")
            # `[::1]:22` is an IPv6 literal, not a range: range brackets never hold a colon.
            ipv6 = rest.startswith("[") and ":" in rest[: rest.find("]") + 1]
            try:
                for name in [rest] if ipv6 else hostrange.expand(rest):
                    login, address, port = parse_target(f"{user}@{name}" if at else name)
                    written = frozenset(k for k, v in (("user", login), ("port", port)) if v)
                    host = Host(address, port=port, user=login, explicit=written)
                    if hosts.setdefault(host.name, host) != host:
                        raise InventoryError(f"host {host.name!r} is given twice with different"
                                             f" user or port in {pattern!r}")
            except InventoryError:
                raise
            except ValueError as exc:
                raise InventoryError(f"bad host target {term!r}: {exc}") from None
    if not hosts:
        raise InventoryError("no hosts given")
    return list(hosts.values())
