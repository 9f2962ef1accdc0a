"""The one precedence rule: which value of each per-host setting a host ends up with.

From strongest to weakest:

1. explicit values: what is written on a target (`alice@web1:2222`) and the
   `Options` given by CLI flags or API keywords;
2. the inventory host, then its groups (a child beats its parents), then the
   inventory's defaults (already merged by `inventory/parser.py` into the `Host`);
3. the OpenSSH client config (`sshconfig/`: `~/.ssh/config`, then
   `/etc/ssh/ssh_config`, or `-F FILE`), looked up by the host's name, with
   everything above preset as `ssh -l/-p/-o HostName=` would be: its `HostName`
   applies only when the inventory gave no `address`;
4. the built-in defaults (`Options` field metadata).

A flag that contradicts what is written on the target itself (`-p 2200` with
`web1:2222`, `-u bob` with `alice@web1`) is a `ConfigError` naming both:
across a fleet, a silent pick would hide a typo. So is a host whose ssh
config says `StrictHostKeyChecking no`. Used by the CLI, the API and the
agent alike; `explain()` also says where each value came from.

Bastions: `-J` beats the inventory's `proxy_jump`, which beats the ssh
config's `ProxyJump`/`ProxyCommand` (whichever it sets first). Each bastion
is resolved as ssh resolves it: by its own name in the ssh config (not in the
inventory), with the user and port written in the jump list, and the run's
credentials and trust settings; `-u`/`-p`/`-J` are for the targets only, as
with `ssh -J`. The last bastion of a list is reached through the ones before
it; a single bastion's own `ProxyJump` is followed, up to 8 hops.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .exceptions import ConfigError
from .host import Host, check_hostname, check_user, parse_jump
from .options import SYSTEM_KNOWN_HOSTS, Options, builtin, expand
from .sshconfig import (
    DEFAULT_IDENTITY_FILES,
    HostConfig,
    SshConfig,
    default_config_files,
    expand_proxy_command,
    identity_file_problem,
)

__all__ = ["Resolved", "accept_new_file", "explain", "host_key_policy", "identity_notes",
           "known_hosts_files", "resolve"]

# Where a value came from, for `fleetexec hosts -o json` and `explain()`.
TARGET, FLAG, INVENTORY, SSH_CONFIG, DEFAULT = "target", "flag", "inventory", "ssh-config", \
    "default"
_USER_KNOWN_HOSTS, _GLOBAL_KNOWN_HOSTS = SYSTEM_KNOWN_HOSTS
_MAX_HOPS = 8
_STRICT_POLICY = {"yes": "strict", "accept-new": "accept-new", "ask": "strict"}


@dataclass(frozen=True)
class Resolved:
    """A resolved host, and for each setting where its value came from.

    `sources` maps a `Host` field to "target", "flag" (a CLI flag or an
    `Options` keyword), "inventory" (the host record: inventory host, groups,
    defaults, or a `Host` built in code), "ssh-config" or "default";
    `ssh_config` names the file and line of each "ssh-config" value.
    """

    host: Host
    sources: Mapping[str, str] = field(default_factory=dict)
    ssh_config: Mapping[str, str] = field(default_factory=dict)


def resolve(hosts: Iterable[Host | str] | Host | str, options: Options,
            notes: list[str] | None = None) -> list[Host]:
    """Hosts with the run's settings applied by the precedence rule, paths made absolute.

    Strings are targets such as `"deploy@web[01-20]:2222"`. Raises
    `ConfigError` for a bad target, a contradiction, a host the ssh config
    cannot use (StrictHostKeyChecking no), or a name given twice. Remarks on what the ssh
    config asks and fleetexec does not do are appended to `notes` (each once).
    """
    return [r.host for r in explain(hosts, options, notes)]


def explain(hosts: Iterable[Host | str] | Host | str, options: Options,
            notes: list[str] | None = None) -> list[Resolved]:
    """`resolve()`, with where each setting of each host came from."""
    from .inventory import hosts_from_targets

    items = [hosts] if isinstance(hosts, str | Host) else list(hosts)
    config = SshConfig(default_config_files(options.ssh_config, options.use_ssh_config))
    found_notes: list[str] = notes if notes is not None else []
    resolved: list[Resolved] = []
    bastions: dict[str, tuple[Host, ...]] = {}  # a jump list resolved once per run
    for item in items:
        if isinstance(item, str):
            found = hosts_from_targets([item])
        elif isinstance(item, Host):
            found = [item]
        else:
            raise ConfigError(f"not a host: {item!r}")
        resolved.extend(_Apply(host, options, config, found_notes, bastions).result()
                        for host in found)
    names = [r.host.name for r in resolved]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"host {twice!r} appears twice in one run")
    return resolved


class _Apply:
    """One host through the precedence rule."""

    def __init__(self, host: Host, options: Options, config: SshConfig,
                 notes: list[str], bastions: dict[str, tuple[Host, ...]],
                 depth: int = 0) -> None:
        self.host, self.options, self.notes = host, options, notes
        self.config, self.bastions, self.depth = config, bastions, depth
        self.changes: dict[str, Any] = {}
        self.sources: dict[str, str] = {}
        self.where: dict[str, str] = {}
        for name in ("user", "port", "connect_timeout", "command_timeout"):
            wanted, current = getattr(options, name), getattr(host, name)
            if wanted is not None:
                if name in host.explicit and current != wanted:
                    raise ConfigError(f"{host.name}: the target says {name} {current!r} "
                                      f"but the option says {wanted!r}; drop one")
                self.set(name, wanted, TARGET if name in host.explicit else FLAG)
            elif current is not None:
                self.set(name, current, TARGET if name in host.explicit else INVENTORY)
        self.address_given = host.address != host.name
        self.ssh: HostConfig | None = None
        if options.use_ssh_config and not host.resolved:
            self.ssh = config.lookup(
                host.name, user=self.changes.get("user"), port=self.changes.get("port"),
                hostname=host.address if self.address_given else None,
                default_user=_local_user())
            self.note(*self.ssh.notes)

    def set(self, name: str, value: object, source: str, keyword: str | None = None) -> None:
        self.changes[name] = value
        self.sources[name] = source
        if keyword is not None and self.ssh is not None:
            self.where[name] = self.ssh.where.get(keyword, "")

    def note(self, *notes: str) -> None:
        self.notes.extend(n for n in notes if n not in self.notes)

    def first(self, name: str, *candidates: tuple[object, str, str | None]) -> None:
        """Set `name` to the first candidate value that is not None (unless already set)."""
        if name in self.changes:
            return
        for value, source, keyword in candidates:
            if value is not None:
                self.set(name, value, source, keyword)
                return

    def result(self) -> Resolved:
        host, ssh = self.host, self.ssh
        # address, user, port, timeouts
        if self.address_given or host.resolved:
            self.sources["address"] = INVENTORY
        elif ssh is not None and ssh.address is not None:
            self.set("address", self.checked(ssh.address, "hostname", check_hostname),
                     SSH_CONFIG, "hostname")
        else:
            self.sources["address"] = DEFAULT
        if ssh is not None and ssh.user is not None and "user" not in self.changes:
            self.set("user", self.checked(ssh.user, "user", check_user), SSH_CONFIG, "user")
        self.first("user", (_local_user(), DEFAULT, None))
        self.first("port", (ssh and ssh.port, SSH_CONFIG, "port"), (22, DEFAULT, None))
        timeout = ssh and ssh.connect_timeout
        if timeout == 0 and ssh is not None:
            self.note(f"{ssh.where['connecttimeout']}: ConnectTimeout 0 (no deadline) is not "
                      f"supported; the built-in {builtin('connect_timeout'):g}s applies")
            timeout = None
        self.first("connect_timeout", (float(timeout) if timeout else None, SSH_CONFIG,
                                       "connecttimeout"),
                   (builtin("connect_timeout"), DEFAULT, None))
        self.first("command_timeout", (builtin("command_timeout"), DEFAULT, None))
        self.identities(ssh)
        self.known_hosts(ssh)
        self.policy(ssh)
        self.first("host_key_alias", (host.host_key_alias, INVENTORY, None),
                   (ssh and ssh.host_key_alias, SSH_CONFIG, "hostkeyalias"))
        self.first("address_family", (host.address_family, INVENTORY, None),
                   (ssh and ssh.address_family, SSH_CONFIG, "addressfamily"),
                   ("any", DEFAULT, None))
        self.first("server_alive_interval", (host.server_alive_interval, INVENTORY, None),
                   (ssh and ssh.server_alive_interval, SSH_CONFIG, "serveraliveinterval"),
                   (0, DEFAULT, None))
        self.first("server_alive_count_max", (host.server_alive_count_max, INVENTORY, None),
                   (ssh and ssh.server_alive_count_max, SSH_CONFIG, "serveralivecountmax"),
                   (3, DEFAULT, None))
        if ssh is not None and ssh.check_host_ip:
            self.note(f"{ssh.where['checkhostip']}: CheckHostIP yes is not supported; "
                      "fleetexec checks the host key under the host's name only, never its IP")
        if not host.resolved:
            self.proxy(ssh)
        if host.known_hosts_file:
            self.changes["known_hosts_file"] = expand(host.known_hosts_file)
        try:
            resolved = replace(host, **self.changes, resolved=True)
        except ValueError as error:
            raise ConfigError(f"{host.name}: {error}") from None
        return Resolved(resolved, self.sources, {k: v for k, v in self.where.items() if v})

    def checked(self, value: str, keyword: str, check: Any) -> str:
        assert self.ssh is not None  # noqa: S101 - called for ssh-config values only
        try:
            check(value)
        except ValueError as error:
            raise ConfigError(f"{self.ssh.where.get(keyword, 'ssh config')}: {self.host.name}:"
                              f" {error}") from None
        return value

    def proxy(self, ssh: HostConfig | None) -> None:
        """ProxyJump / ProxyCommand: a jump list resolved into `via`, or a command."""
        host, options = self.host, self.options
        self.first("proxy_jump", (options.jump, FLAG, None), (host.proxy_jump, INVENTORY, None))
        if "proxy_jump" not in self.changes:
            self.first("proxy_command", (host.proxy_command, INVENTORY, None))
        if "proxy_jump" not in self.changes and "proxy_command" not in self.changes:
            self.first("proxy_jump", (ssh and ssh.proxy_jump, SSH_CONFIG, "proxyjump"))
            self.first("proxy_command", (ssh and ssh.proxy_command, SSH_CONFIG, "proxycommand"))
        command = self.changes.get("proxy_command")
        if command is not None:
            where = (self.where.get("proxy_command") or f"{host.name}: inventory")
            self.changes["proxy_command"] = expand_proxy_command(
                command, host=self.changes.get("address", host.address),
                port=self.changes["port"], user=self.changes["user"], original=host.name,
                where=where)
        spec = self.changes.get("proxy_jump")
        if spec is None or spec.lower() == "none":
            return
        if spec not in self.bastions:
            self.bastions[spec] = self.chain(spec)
        self.set("via", self.bastions[spec], self.sources["proxy_jump"])

    def chain(self, spec: str) -> tuple[Host, ...]:
        """The bastions of jump list `spec`, resolved, first hop first."""
        if self.depth >= _MAX_HOPS:
            raise ConfigError(f"{self.host.name}: more than {_MAX_HOPS} jump hosts in a row "
                              f"(a ProxyJump loop?)")
        *before, last = spec.split(",")
        user, name, port = parse_jump(last)[0]
        if (name, port or 22, user or self.changes["user"]) == (
                self.host.name, self.changes["port"], self.changes["user"]):
            raise ConfigError(f"{self.host.name}: jump host loop via {name} (as ssh says; give "
                              f"it ProxyJump none in the ssh config)")
        bastion = Host(name, user=user, port=port, proxy_jump=",".join(before) or None,
                       explicit=frozenset(k for k, v in (("user", user), ("port", port)) if v))
        # The run's credentials and trust settings apply to bastions; -u, -p and -J do not.
        options = self.options.replace(user=None, port=None, jump=None)
        try:
            hop = _Apply(bastion, options, self.config, self.notes, self.bastions,
                         self.depth + 1).result().host
        except ConfigError as error:
            if self.depth:  # named once, by the host that has the chain
                raise
            raise ConfigError(f"{self.host.name}: jump host {error}") from None
        return (*hop.via, replace(hop, via=()))

    def identities(self, ssh: HostConfig | None) -> None:
        host, options = self.host, self.options
        if options.key_files:
            self.set("key_files", tuple(expand(p) for p in options.key_files), FLAG)
        elif host.key_files:
            self.set("key_files", tuple(expand(p) for p in host.key_files), INVENTORY)
        elif ssh is not None and ssh.identity_files:
            existing = []
            for path in ssh.identity_files:
                if os.path.exists(path):
                    existing.append(path)
                else:  # ssh skips such a file too ("no such identity")
                    self.note(f"{ssh.where['identityfile']}: IdentityFile {path} does not "
                              "exist; not offered (as ssh does)")
            self.set("key_files", tuple(existing), SSH_CONFIG, "identityfile")
        else:
            self.set("key_files", (), DEFAULT)
        # The ~/.ssh/id_* files are offered only when no key file is configured anywhere.
        configured = self.sources["key_files"] != DEFAULT
        self.first("default_keys", (host.default_keys, INVENTORY, None),
                   (not configured, DEFAULT, None))
        self.first("identities_only", (True if options.identities_only else None, FLAG, None),
                   (host.identities_only, INVENTORY, None),
                   (ssh and ssh.identities_only, SSH_CONFIG, "identitiesonly"),
                   (False, DEFAULT, None))
        configured_agent = host.identity_agent or (ssh and ssh.identity_agent)
        if options.use_agent is False:
            self.set("identity_agent", "none", FLAG)
        elif options.use_agent:
            usable = configured_agent if configured_agent not in (None, "none") else None
            self.set("identity_agent", usable or "SSH_AUTH_SOCK", FLAG)
        else:
            self.first("identity_agent", (host.identity_agent, INVENTORY, None),
                       (ssh and ssh.identity_agent, SSH_CONFIG, "identityagent"),
                       ("SSH_AUTH_SOCK", DEFAULT, None))

    def known_hosts(self, ssh: HostConfig | None) -> None:
        host, options = self.host, self.options
        for name, keyword, default in (
                ("user_known_hosts", "userknownhostsfile", _USER_KNOWN_HOSTS),
                ("global_known_hosts", "globalknownhostsfile", _GLOBAL_KNOWN_HOSTS)):
            if not options.system_known_hosts:
                self.set(name, (), FLAG)
                continue
            mine: tuple[str, ...] | None = getattr(host, name)
            config: tuple[str, ...] | None = getattr(ssh, f"{name}_files", None)
            self.first(name, (mine and tuple(expand(p) for p in mine), INVENTORY, None),
                       (config, SSH_CONFIG, keyword), ((expand(default),), DEFAULT, None))

    def policy(self, ssh: HostConfig | None) -> None:
        checking = ssh and ssh.strict_host_key_checking
        if self.options.host_key_policy is None and self.host.host_key_policy is None and (
                ssh is not None and checking is not None):
            where = ssh.where["stricthostkeychecking"]
            if checking == "no":
                raise ConfigError(
                    f"{self.host.name}: {where}: StrictHostKeyChecking no is refused: "
                    "fleetexec never connects to a host whose key it cannot verify. Record "
                    "the keys (--host-key-policy accept-new records new hosts, and always "
                    "refuses changed keys), or give --host-key-policy strict")
            if checking == "ask":
                self.note(f"{where}: StrictHostKeyChecking ask: nobody can answer a prompt "
                          "in a fleet run, so unknown hosts are refused (strict); "
                          "--host-key-policy accept-new records them")
        self.first("host_key_policy", (self.options.host_key_policy, FLAG, None),
                   (self.host.host_key_policy, INVENTORY, None),
                   (_STRICT_POLICY.get(checking or ""), SSH_CONFIG, "stricthostkeychecking"),
                   (builtin("host_key_policy"), DEFAULT, None))


def _local_user() -> str:
    import getpass

    return getpass.getuser()


# ---- what a resolved host means for the SSH layer (used by the workers and `hosts`) ---------


def known_hosts_files(host: Host, options: Options) -> tuple[str, ...]:
    """Every known_hosts file read for `host`, absolute: its user and global files (the ssh
    config's or `~/.ssh/known_hosts`, `/etc/ssh/ssh_known_hosts`; none with
    --no-system-known-hosts), then --known-hosts, the inventory's file, and, with
    accept-new, the file it records into (a host with any entry there is not new)."""
    files: list[str] = []
    for mine, default in ((host.user_known_hosts, _USER_KNOWN_HOSTS),
                          (host.global_known_hosts, _GLOBAL_KNOWN_HOSTS)):
        if mine is not None:
            files.extend(expand(p) for p in mine)
        elif options.system_known_hosts:
            files.append(expand(default))
    files.extend(expand(p) for p in options.known_hosts)
    if host.known_hosts_file:
        files.append(expand(host.known_hosts_file))
    if host_key_policy(host, options) == "accept-new":
        files.append(accept_new_file(host, options))
    return tuple(dict.fromkeys(files))


def accept_new_file(host: Host, options: Options) -> str:
    """Where accept-new records `host`'s key: the inventory's known_hosts_file, else the
    first --known-hosts, else the ssh config's first UserKnownHostsFile, else
    ~/.ssh/known_hosts."""
    if host.known_hosts_file:
        return expand(host.known_hosts_file)
    if options.known_hosts:
        return expand(options.known_hosts[0])
    if host.user_known_hosts:
        return expand(host.user_known_hosts[0])
    return expand(_USER_KNOWN_HOSTS)


def host_key_policy(host: Host, options: Options) -> str:
    """`strict` or `accept-new` for `host` (resolve() filled it; else the option's)."""
    return host.host_key_policy or options.host_key_policy or str(builtin("host_key_policy"))


def default_identity_files() -> tuple[str, ...]:
    """The `~/.ssh/id_*` files OpenSSH offers when none is configured, those that exist."""
    return tuple(p for p in (expand(f) for f in DEFAULT_IDENTITY_FILES) if os.path.exists(p))


def identity_notes(hosts: Iterable[Host], options: Options) -> list[str]:
    """Notes on default identity files ssh (in batch mode) would skip, and so do the workers:
    unreadable, readable by others, encrypted with no passphrase given, or a key type
    paramiko cannot use. Only for hosts that are offered them (no key file configured)."""
    offered = [h for h in hosts if h.default_keys or (h.default_keys is None
                                                        and not h.key_files)]
    if not offered:
        return []
    # An encrypted default file is the usual companion of an agent holding its key: said
    # only when no host has an agent to fall back on (ssh in batch mode says nothing).
    agent = any(_agent_socket(h, options) for h in offered)
    notes = []
    for path in default_identity_files():
        problem = identity_file_problem(path, options.passphrase is not None)
        if problem is not None and not (agent and "encrypted" in problem):
            notes.append(f"default identity {path} {problem}; skipped")
    return notes


def _agent_socket(host: Host, options: Options) -> str | None:
    """The agent socket `host` would use, if it exists."""
    agent = host.identity_agent or ("none" if options.use_agent is False else "SSH_AUTH_SOCK")
    if agent == "none" or host.identities_only:
        return None
    if agent == "SSH_AUTH_SOCK" or (agent.startswith("$") and not agent.startswith("${")):
        agent = os.environ.get(agent.removeprefix("$"), "")
    return agent if agent and os.path.exists(agent) else None
