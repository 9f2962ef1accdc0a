"""Ansible inventories, read as Ansible reads them, into an `Inventory` of `Host` records.

The judges are `ansible-inventory -i FILE --list` and `ansible -i FILE PATTERN --list-hosts`
(tests/test_ansible_inventory.py asks both about public inventories). Read:

* YAML (`all:` or any group, each with `hosts`, `children`, `vars`) and INI (`[group]`,
  `[group:children]`, `[group:vars]`, `host key=value`, values read as Ansible's INI plugin
  reads them: a Python literal where `ast.literal_eval` takes it, else the text); ranges
  `www[01:50]`, `db-[a:f]`, `[1:10:2]`; `host:port`; the implicit `all` and `ungrouped`.
* `group_vars/` and `host_vars/` next to the inventory: the first of `NAME`, `NAME.yml`,
  `NAME.yaml`, `NAME.json` that exists, a directory `NAME/` being read whole (sorted).
* Ansible's variable precedence: the `all` group, then the host's groups by depth,
  `ansible_group_priority` and name, then group_vars/all, group_vars/GROUP (same order),
  the host's own vars, host_vars/HOST; then its alias rule: `ansible_ssh_host`, `_port`,
  `_user`, `_private_key_file` beat `ansible_host`, ... whichever level each came from.
  The result is `Host(address, port, user, key_files)`; `-i FILE` in
  `ansible_ssh_common_args` / `_extra_args` adds a key file, and `-J`, `-o ProxyJump=`
  or a `-o ProxyCommand=ssh -W %h:%p HOST` there (or such an
  `ansible_paramiko_proxy_command`) the bastion. Any other ProxyCommand is refused: an
  inventory never makes fleetexec run a local command.

Refused, never guessed. Per host (the inventory loads; selecting the host is an
`InventoryError` saying why, so the rest stays usable): a connection other than SSH
(`ansible_connection=local`, `winrm`, `network_cli`...), a password or key text
(`ansible_password`, `ansible_become_pass`...; the value is never shown), any other ssh
option, host key checking turned off, a Jinja2 template or a vault-encrypted
value in a connection setting, a vault-encrypted vars file, and a name that is not a DNS
name or IP address. For the whole file: dynamic inventory scripts (executable files) and
inventory plugin configurations (`plugin:`), which are out of scope; what Ansible refuses;
and what Ansible only warns about and skips or overrides (an unknown key or a non-mapping
in a YAML group, a duplicate key, a port it would ignore, an empty range): a located
`file:line: message` instead. No code is run: no Python object is built from YAML (the
node tree is walked by hand), INI values go through `ast.literal_eval` only, and only
for the settings fleetexec uses. The work a file can cause is bounded as in inventory/
(limits.py).

The package: `parse_ansible_inventory` and `detect_format` here; ini.py and yaml_reader.py
read the two formats, vars_files.py group_vars/ and host_vars/, feeding data.py (Ansible's
InventoryData: groups, hosts, children, bounds; hostnames.py reads `host:port` and ranges);
variables.py settles each host (precedence, the connection variables, the refusals);
patterns.py is `AnsibleInventory` and its host patterns; limits.py the bounds.

Host patterns (`AnsibleInventory.select`) are Ansible's: `web:&staging`, `web:!db`,
`web,db`, `web[0]` / `web[0:2]` / `web[-1]` (a subscript of what `web` matches, never a
range), `~regex`, globs, `all`; plus ClusterShell's `@group` with `&`, `!` and `^`.
Unlike Ansible, a term matching no host or group is refused rather than ignored.
"""

from __future__ import annotations

import os
import stat

from ..exceptions import InventoryError
from ..host import Host
from .data import SCRIPT_HINT, Builder
from .ini import read_ini
from .patterns import AnsibleInventory
from .variables import layers, settle
from .vars_files import read_vars_files
from .yaml_reader import YAML_EXTENSIONS, detect_yaml, read_yaml

__all__ = ["FORMATS", "AnsibleInventory", "detect_format", "parse_ansible_inventory"]

FORMATS = ("fleetexec", "ansible-yaml", "ansible-ini")


def detect_format(text: str, path: str = "<string>") -> str:
    """`fleetexec`, `ansible-yaml` or `ansible-ini`, from the text (and the file's extension).

    A YAML mapping is fleetexec's when its first key is `defaults`, `groups` or `hosts`,
    and Ansible's when it starts with `all`, `plugin`, or a group holding `hosts`,
    `children` or `vars` (empty groups are skipped); anything else goes to fleetexec's
    loader, for its messages. Text that is not a YAML mapping is Ansible INI, except in a
    `.yml`/`.yaml`/`.json` file. Only the first keys are read (YAML events, no tree).
    """
    text = text.removeprefix("\ufeff")
    yaml_file = os.path.splitext(path)[1].lower() in YAML_EXTENSIONS
    return detect_yaml(text) or ("fleetexec" if yaml_file else "ansible-ini")


def parse_ansible_inventory(text: str, path: str = "<string>",
                            kind: str | None = None) -> AnsibleInventory:
    """Read Ansible inventory `text` (`kind`: `ansible-yaml`, `ansible-ini`, or None to
    detect). `path` names it in messages; for a real file, its group_vars/ and host_vars/
    are read too, and an executable file is refused as a dynamic inventory script.
    """
    text = text.removeprefix("\ufeff")
    if kind is None:
        kind = detect_format(text, path)
        if kind == "fleetexec":
            kind = "ansible-yaml"
    if kind not in FORMATS[1:]:
        raise InventoryError(f"unknown inventory format {kind!r}; expected one of: "
                             f"{', '.join(FORMATS)}", path=path)
    builder = Builder(path)
    try:
        _refuse_out_of_scope(builder, text)
        if kind == "ansible-yaml":
            read_yaml(builder, text)
        else:
            read_ini(builder, text)
        builder.reconcile()
        return _build(builder, kind)
    except RecursionError:
        raise InventoryError("nested too deeply", path=path) from None


def _refuse_out_of_scope(builder: Builder, text: str) -> None:
    """The whole file refused: vault-encrypted, TOML, or a dynamic inventory script."""
    if text.startswith("$ANSIBLE_VAULT;"):
        builder.fail(1, "the inventory is vault-encrypted; fleetexec cannot read it")
    if os.path.splitext(builder.path)[1].lower() == ".toml":
        builder.fail(None, "TOML inventories are not supported; use YAML or INI")
    if builder.path != "<string>":
        try:
            mode = os.stat(builder.path).st_mode
        except OSError:
            mode = 0
        if stat.S_ISREG(mode) and mode & 0o111:
            builder.fail(None, "the file is executable, so Ansible would run it as a dynamic "
                         "inventory script; fleetexec does not run inventory scripts (out of "
                         f"scope): {SCRIPT_HINT}, or chmod -x it if it is a static inventory")
    if text.startswith("#!"):
        builder.fail(1, "this looks like a dynamic inventory script (#!); fleetexec does not "
                     f"run inventory scripts (out of scope): {SCRIPT_HINT}")


def _build(builder: Builder, kind: str) -> AnsibleInventory:
    """The inventory: the vars files read, each group's members, each host settled."""
    read_vars_files(builder)
    groups = {name: tuple(builder.members(name)) for name in builder.groups}
    held: dict[str, list[str]] = {name: [] for name in builder.hosts}
    for group, members in groups.items():
        if group != "all":
            for name in members:
                held[name].append(group)
    hosts: dict[str, Host] = {}
    refused: dict[str, str] = {}
    for name, record in builder.hosts.items():
        mine = held[name]
        result = settle(record, mine, layers(record, mine, builder.groups, builder.depth,
                                             builder.files))
        if isinstance(result, Host):
            hosts[name] = result
        else:
            refused[name] = result
    return AnsibleInventory(builder.path, hosts, groups, refused=refused,
                            names=tuple(builder.hosts), format=kind)
