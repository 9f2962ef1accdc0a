"""The `Host` record and the rules for what a host name, user and port may be.

Everything that names a host (inventory, `--hosts`, the Python API) ends up
here, so a name that could be read as an option (`-oProxyCommand=…`) or that
carries shell metacharacters or control characters is refused in one place.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

__all__ = ["Host", "check_hostname", "check_user", "parse_jump", "parse_target"]

_MAX_JUMPS = 8  # bastions in one chain, counting those their own ssh config adds

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$")
# An IPv6 zone (`fe80::1%eth0`) is free text to `ipaddress`; allow interface-name characters only.
_ZONE = re.compile(r"[A-Za-z0-9_.-]{1,64}", re.ASCII)


@dataclass(frozen=True, slots=True)
class Host:
    """One host to run on, with its effective connection settings.

    `name` is how the host is shown and selected; `address` is where to
    connect (defaults to `name`). `None` means "not set here": `resolve()`
    fills each setting by the precedence rule (flags, this record, the ssh
    config, the built-in default; `port` None is 22). Key files are paths; no
    secret is ever stored in a `Host`.

    The fields after `known_hosts_file` mostly come from the ssh config
    (`sshconfig/`): whether to offer the default `~/.ssh/id_*` files when
    no key file is configured (`default_keys`), `IdentitiesOnly`, the agent
    socket (`identity_agent`: "none", "SSH_AUTH_SOCK", "$VAR" or a path), the
    known_hosts files read in place of `~/.ssh/known_hosts` and
    `/etc/ssh/ssh_known_hosts`, the host key policy, `HostKeyAlias`,
    `AddressFamily` and `ServerAliveInterval`/`CountMax`.

    `proxy_jump` is the bastions to go through, as `ssh -J` takes them
    (`[user@]host[:port][,…]`, first hop first; "none": none, whatever the ssh
    config says); `proxy_command` a command whose standard input and output
    are the connection (ssh's ProxyCommand, tokens already expanded).
    `resolve()` turns `proxy_jump` into `via`: each bastion resolved like a
    host of its own (its ssh config, its known_hosts entry), first hop first.

    >>> Host("web1", port=2222, user="deploy").known_hosts_name
    '[web1]:2222'
    """

    name: str
    address: str = ""
    port: int | None = None
    user: str | None = None
    key_files: tuple[str, ...] = ()
    connect_timeout: float | None = None
    command_timeout: float | None = None
    known_hosts_file: str | None = None
    default_keys: bool | None = None
    identities_only: bool | None = None
    identity_agent: str | None = None
    user_known_hosts: tuple[str, ...] | None = None
    global_known_hosts: tuple[str, ...] | None = None
    host_key_policy: str | None = None
    host_key_alias: str | None = None
    address_family: str | None = None
    server_alive_interval: int | None = None
    server_alive_count_max: int | None = None
    proxy_jump: str | None = None
    proxy_command: str | None = None
    via: tuple[Host, ...] = ()
    groups: tuple[str, ...] = field(default=(), compare=False)
    # Settings written on the target itself (`alice@web1:2222`): a flag may not contradict them.
    explicit: frozenset[str] = field(default=frozenset(), compare=False)
    # Set by resolve(): every setting is filled, the ssh config is not read again for it.
    resolved: bool = field(default=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_hostname(self.name)
        if not self.address:
            object.__setattr__(self, "address", self.name)
        else:
            check_hostname(self.address)
        if self.user is not None:
            check_user(self.user)
        if self.port is not None and (isinstance(self.port, bool) or not isinstance(
                self.port, int) or not 1 <= self.port <= 65535):
            raise ValueError(f"port must be an integer 1-65535, got {self.port!r}")
        if self.host_key_policy not in (None, "strict", "accept-new"):
            raise ValueError(f"host_key_policy must be 'strict' or 'accept-new', "
                             f"got {self.host_key_policy!r}")
        if self.address_family not in (None, "any", "inet", "inet6"):
            raise ValueError(f"address_family must be any, inet or inet6, "
                             f"got {self.address_family!r}")
        for name in ("server_alive_interval", "server_alive_count_max"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 0):
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if self.proxy_jump is not None and self.proxy_jump.lower() != "none":
            parse_jump(self.proxy_jump)
        if self.proxy_command is not None and (not isinstance(self.proxy_command, str) or not
                                               self.proxy_command.strip()):
            raise ValueError(f"proxy_command must be a command, got {self.proxy_command!r}")
        if len(self.via) > _MAX_JUMPS:
            raise ValueError(f"more than {_MAX_JUMPS} bastions in a row (a ProxyJump loop?)")
        for name in ("connect_timeout", "command_timeout"):
            value = getattr(self, name)
            # `not value >= 0` rather than `value < 0`: NaN compares false both ways.
            if value is not None and (isinstance(value, bool) or not value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")

    @property
    def known_hosts_name(self) -> str:
        """The name this host's key is stored under in known_hosts: `HostKeyAlias` if
        set, else the address (`[addr]:port` off port 22)."""
        if self.host_key_alias:
            return self.host_key_alias
        return self.address if self.port in (None, 22) else f"[{self.address}]:{self.port}"


def check_hostname(name: object) -> str:
    """Return `name` if it is a DNS name or an IP literal, else raise `ValueError`.

    Refuses what could turn into an ssh option or a shell word: a leading `-`,
    whitespace, control characters, metacharacters, non-ASCII.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"host name must be a non-empty string, got {name!r}")
    candidate = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        pass
    else:
        zone = candidate.partition("%")[2]
        if zone and not _ZONE.fullmatch(zone):
            raise ValueError(f"not a valid host name or IP address: {name!r}")
        return name
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    # fullmatch, not match: `$` also matches before a trailing newline.
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"not a valid host name or IP address: {name!r}")
    return name


def check_user(user: object) -> str:
    """Return `user` if it is a POSIX-style login name, else raise `ValueError`."""
    if not isinstance(user, str) or not _USER.fullmatch(user):
        raise ValueError(f"not a valid user name: {user!r}")
    return user


def parse_target(target: str) -> tuple[str | None, str, int | None]:
    """Split `user@host:port` (user and port optional; `[v6]:port` for IPv6).

    >>> parse_target("deploy@web1:2222")
    ('deploy', 'web1', 2222)
    """
    user: str | None = None
    if "@" in target:
        user, target = target.rsplit("@", 1)
        check_user(user)
    port: int | None = None
    if target.startswith("["):
        end = target.find("]")
        if end < 0:
            raise ValueError(f"unbalanced '[' in {target!r}")
        host, rest = target[1:end], target[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"unexpected text after ']' in {target!r}")
            port = _port(rest[1:], target)
    elif target.count(":") == 1:
        host, port_text = target.split(":")
        port = _port(port_text, target)
    else:
        host = target
    check_hostname(host)
    return user, host, port


def parse_jump(spec: str) -> list[tuple[str | None, str, int | None]]:
    """Split a jump list as `ssh -J` takes it: `[user@]host[:port]` (or `ssh://` URIs),
    comma-separated, first hop first.

    >>> parse_jump("bastion,ops@inner:2222")
    [(None, 'bastion', None), ('ops', 'inner', 2222)]
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a jump host list must be [user@]host[:port][,...], got {spec!r}")
    hops = [parse_target(hop.strip().removeprefix("ssh://")) for hop in spec.split(",")]
    if len(hops) > _MAX_JUMPS:
        raise ValueError(f"more than {_MAX_JUMPS} jump hosts in {spec!r}")
    return hops


def _port(text: str, target: str) -> int:
    # ASCII digits only (int() also reads '١٢'), and short enough for int() to accept.
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or text.startswith("0") or not (
        1 <= int(text) <= 65535
    ):
        raise ValueError(f"bad port {text!r} in {target!r}: expected 1-65535")
    return int(text)
