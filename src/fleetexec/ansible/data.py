"""The inventory as Ansible's InventoryData builds it while a reader feeds it.

The readers (ini.py, yaml_reader.py, vars_files.py) call `Builder`: a group, a host (with
its port), a child, a variable; the builder keeps the bounds and refuses what Ansible
refuses or would silently skip, at its `file:line`. `reconcile` then does what Ansible does
once a file is read: groups without parents go under `all`, hosts in no group into
`ungrouped`, and each group gets its depth (a cycle of children refused).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

from ..exceptions import InventoryError
from .hostnames import expand_range, split_port
from .limits import MAX_GROUPS, MAX_HOSTS, MAX_MEMBERSHIPS, MAX_NAMES
from .records import Group, HostRecord, Layer, Var
from .variables import is_kept

__all__ = ["SCRIPT_HINT", "Builder"]

SCRIPT_HINT = ("use its output instead: ansible-inventory -i FILE --list --yaml > "
               "inventory.yml")


class Builder:
    """What Ansible's inventory does as its plugins (the readers) feed it: groups, hosts,
    children and variables, bounded; then its reconciling (`all`, `ungrouped`, depths)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.groups: dict[str, Group] = {
            "all": Group("all", path, None, children=["ungrouped"], edges={"ungrouped": None}),
            "ungrouped": Group("ungrouped", path, None, parents=["all"]),
        }
        self.hosts: dict[str, HostRecord] = {}
        self.files: dict[tuple[str, str], Layer] = {}  # group_vars/ and host_vars/
        self.named = self.memberships = self.work = self.vars_bytes = self.files_read = 0
        self.depth: dict[str, int] = {}

    def fail(self, line: int | None, message: str, key: str | None = None,
             path: str | None = None) -> NoReturn:
        raise InventoryError(message, path=path or self.path, line=line, key=key)

    # --- what Ansible's InventoryData does ------------------------------------------

    def group(self, name: str, line: int | None) -> Group:
        if name not in self.groups:
            if not name or any(c in name for c in "/\\\0") or name in (".", ".."):
                self.fail(line, f"expected a group name, got {name!r}")
            if len(self.groups) >= MAX_GROUPS:
                self.fail(line, f"more than {MAX_GROUPS} groups")
            self.groups[name] = Group(name, self.path, line)
        return self.groups[name]

    def host(self, name: str, group: str, port: int | None, line: int | None) -> None:
        if name not in self.hosts:
            if len(self.hosts) >= MAX_HOSTS:
                self.fail(line, f"more than {MAX_HOSTS} hosts")
            self.hosts[name] = HostRecord(name, self.path, line)
            if port is not None:
                self.hosts[name].vars["ansible_port"] = Var(port, self.path, line,
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

    def set_var(self, entity: str, key: str, make: Callable[[], Var],
                line: int | None) -> None:
        # As Ansible: a host's variable goes to the group when both have this name.
        target = self.groups.get(entity) or self.hosts[entity]
        if isinstance(target, Group) and key == "ansible_group_priority":
            value = make().value
            if isinstance(value, bool) or not isinstance(value, int | str):
                self.fail(line, "expected an integer", key=key)
            try:
                target.priority = int(value)
            except ValueError:
                self.fail(line, f"expected an integer, got {value!r}", key=key)
        elif is_kept(key):
            target.vars[key] = make()

    def add_hosts(self, names: list[str], port: int | None, group: str, line: int | None,
                  variables: list[tuple[str, Callable[[], Var], int | None]]) -> None:
        """Put the hosts one host pattern named into `group`, each with `variables`:
        (name, how to read the value, its line), as both readers give them."""
        for name in names:
            self.host(name, group, port, line)
            for key, make, at in variables:
                self.set_var(name, key, make, at)

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
        if self.memberships > MAX_MEMBERSHIPS:
            self.fail(line, f"more than {MAX_MEMBERSHIPS} group memberships (hosts and "
                            "groups, with children's counted in)")

    def names(self, pattern: str, line: int | None) -> tuple[list[str], int | None]:
        """The hosts (and the port) one host pattern names: `web[01:03]:2222`."""
        name, port = split_port(pattern)
        try:
            names = expand_range(name)
        except ValueError as exc:
            self.fail(line, str(exc))
        self.named += len(names)
        if self.named > MAX_NAMES:
            self.fail(line, f"more than {MAX_NAMES} host names in all ranges and lists")
        if not all(names):
            self.fail(line, "empty host name")
        return names, port

    # --- after reading: Ansible's reconciling ---------------------------------------------

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
