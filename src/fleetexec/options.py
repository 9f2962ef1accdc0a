"""`Options`: every connection and run setting, each default defined once.

The CLI, the Python API and the `--persist` agent all build one `Options` and
hand it to `FleetSession`; nothing copies settings through signatures. Each
field's help text and built-in default live in its metadata, and the click
options are checked against these fields by a test.

Per-host settings (`user`, `port`, `key_files`, `connect_timeout`,
`command_timeout`, `host_key_policy`, `use_agent`, `jump`) are overrides: `None` (or
empty) means "not given here", so the inventory's value, then the ssh
config's, then the built-in default, applies. The rule is written once, in
`resolve.py`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from .exceptions import ConfigError

__all__ = ["HostKeyPolicy", "Options", "Secret", "SYSTEM_KNOWN_HOSTS", "expand"]

HostKeyPolicy = Literal["strict", "accept-new"]
SYSTEM_KNOWN_HOSTS = ("~/.ssh/known_hosts", "/etc/ssh/ssh_known_hosts")
_SECRETS = ("password", "passphrase", "sudo_password")


class Secret:
    """A password or passphrase that never shows itself in repr, logs, errors or JSON."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself; call only where it is handed to paramiko."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(hashlib.sha256(self._value.encode()).digest())

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self._value,))


def _setting(default: Any, text: str, builtin: Any = None) -> Any:
    """A field: its default here, its help text, the built-in value it resolves to."""
    return field(default=default, metadata={"help": text, "builtin": builtin})


@dataclass(frozen=True)
class Options:
    """How every host is reached and how a run behaves. Frozen; change with `replace()`.

    >>> options = fleetexec.Options(user="deploy", command_timeout=30)
    >>> fleetexec.run(["web[1-3]"], "uptime", options.replace(parallel=2))
    """

    # Per host: these beat the inventory (like `ssh -l`/`-p` beat ssh_config).
    user: str | None = _setting(None, "Log in as this user.", builtin="the local user")
    port: int | None = _setting(None, "SSH port.", builtin=22)
    key_files: tuple[str, ...] = _setting((), "Private key files to offer, in order.")
    connect_timeout: float | None = _setting(
        None, "Deadline for TCP connect + handshake + auth, seconds.", builtin=10.0)
    command_timeout: float | None = _setting(
        None, "Deadline for the command from exec, seconds; 0 = none.", builtin=60.0)
    # For the whole run.
    known_hosts: tuple[str, ...] = _setting(
        (), "Extra known_hosts files; the first is where accept-new records.")
    system_known_hosts: bool = _setting(
        True, "Also read ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts.")
    host_key_policy: HostKeyPolicy | None = _setting(
        None, "accept-new records keys of new hosts; changed keys are always refused. "
        "Beats StrictHostKeyChecking.", builtin="strict")
    require_strict_kex: bool = _setting(
        False, "Refuse servers without strict key exchange (Terrapin) before any credential.")
    max_output: int = _setting(1024 * 1024, "Bytes of each stream kept per host.")
    use_agent: bool | None = _setting(
        None, "Offer the ssh-agent's keys (--no-agent: never); beats IdentityAgent.",
        builtin="yes, unless IdentityAgent none")
    identities_only: bool = _setting(
        False, "Offer only the configured key files: no agent key, like IdentitiesOnly yes.")
    jump: str | None = _setting(
        None, "Reach the hosts through these bastions, [user@]host[:port][,...] first hop "
        "first, as ssh -J ('none': directly); beats ProxyJump and ProxyCommand.")
    ssh_config: str | None = _setting(
        None, "Read this OpenSSH client config instead of ~/.ssh/config and "
        "/etc/ssh/ssh_config (as ssh -F).")
    use_ssh_config: bool = _setting(
        True, "Read the OpenSSH client config (--no-ssh-config: none).")
    password: Secret | None = _setting(None, "Password for password authentication.")
    passphrase: Secret | None = _setting(None, "Passphrase of encrypted key files.")
    parallel: int | None = _setting(
        None, "Sessions in flight at most (capped by the open-files limit).", builtin=1024)
    processes: int | None = _setting(None, "Worker processes.", builtin="one per core")
    batch: int | str | None = _setting(
        None, "Run the hosts in batches of N (or N%), one after another.", builtin="all at once")
    max_fail: int | str | None = _setting(
        None, "After a batch, skip the remaining hosts once more than N (or N%) failed.")
    fail_fast: bool = _setting(False, "Skip the remaining batches after the first failure.")
    retries: int = _setting(
        0, "Retry a refused connection this often, with backoff, inside the connect deadline.")
    sudo: bool = _setting(False, "Run the command through sudo, as root or sudo_user.")
    sudo_user: str | None = _setting(None, "With sudo: run the command as this user.",
                                     builtin="root")
    sudo_password: Secret | None = _setting(
        None, "Password sudo asks for (sent only when it asks); without it, sudo -n.")

    def __post_init__(self) -> None:
        for name in _SECRETS:  # a plain string is accepted and wrapped at once
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, Secret(value))
            elif value is not None and not isinstance(value, Secret):
                raise ConfigError(f"{name} must be a string")
        for name in ("key_files", "known_hosts"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(p, str) for p in value):
                raise ConfigError(f"{name} must be a list of paths, not {value!r}")
            object.__setattr__(self, name, tuple(value))
        if self.host_key_policy not in (None, "strict", "accept-new"):
            raise ConfigError(f"host_key_policy must be 'strict' or 'accept-new', "
                              f"not {self.host_key_policy!r}")
        _check_number("connect_timeout", self.connect_timeout, minimum=0, open_=True)
        _check_number("command_timeout", self.command_timeout, minimum=0)
        _check_number("max_output", self.max_output, minimum=0, integer=True)
        _check_number("parallel", self.parallel, minimum=1, integer=True)
        _check_number("processes", self.processes, minimum=1, integer=True)
        _check_number("retries", self.retries, minimum=0, integer=True)
        _check_count("batch", self.batch, minimum=1)
        _check_count("max_fail", self.max_fail, minimum=0)
        if self.ssh_config is not None and (not isinstance(self.ssh_config, str)
                                            or not self.ssh_config or "\0" in self.ssh_config):
            raise ConfigError(f"ssh_config must be a file path, not {self.ssh_config!r}")
        if self.ssh_config is not None and not self.use_ssh_config:
            raise ConfigError("ssh_config and use_ssh_config=False contradict "
                              "(--ssh-config with --no-ssh-config); drop one")
        if self.jump is not None and self.jump.lower() != "none":
            from .host import parse_jump

            try:
                parse_jump(self.jump)
            except ValueError as error:
                raise ConfigError(f"jump: {error}") from None
        user = self.sudo_user
        if user is not None and (not isinstance(user, str) or not user or "\0" in user):
            raise ConfigError(f"sudo_user must be a user name, not {self.sudo_user!r}")
        if self.sudo_user is not None and not self.sudo:
            raise ConfigError("sudo_user needs sudo (--sudo-user needs --sudo)")

    def replace(self, **changes: Any) -> Options:
        """A copy with `changes` applied (and checked)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown option {sorted(unknown)[0]!r}")
        return dataclasses.replace(self, **changes)

    @property
    def known_hosts_files(self) -> tuple[str, ...]:
        """Every known_hosts file read, absolute: the system ones, then `known_hosts`."""
        system = SYSTEM_KNOWN_HOSTS if self.system_known_hosts else ()
        return tuple(expand(p) for p in (*system, *self.known_hosts))

    @property
    def accept_new_file(self) -> str:
        """Where accept-new records a key when the host names no file of its own."""
        return expand(self.known_hosts[0] if self.known_hosts else "~/.ssh/known_hosts")

    def absolute(self) -> Options:
        """Paths expanded (`~`) and made absolute: workers may run elsewhere."""
        return dataclasses.replace(
            self, key_files=tuple(expand(p) for p in self.key_files),
            known_hosts=tuple(expand(p) for p in self.known_hosts),
            ssh_config=self.ssh_config if self.ssh_config in (None, "none")
            else expand(self.ssh_config))

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON values, secrets left out (`secrets()` has them)."""
        return {f.name: (list(v) if isinstance(v, tuple) else v)
                for f in dataclasses.fields(self) if f.name not in _SECRETS
                for v in [getattr(self, f.name)]}

    def secrets(self) -> dict[str, str]:
        """The secrets `to_json` leaves out, for a private channel only."""
        return {name: value.reveal() for name in _SECRETS
                if (value := getattr(self, name)) is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any], secrets: dict[str, str] | None = None) -> Options:
        """The inverse of `to_json` (plus `secrets`); raises `ConfigError` on bad data."""
        if not isinstance(data, dict):
            raise ConfigError("options must be a JSON object")
        allowed = {f.name for f in dataclasses.fields(cls)} - set(_SECRETS)
        if set(data) - allowed:
            raise ConfigError(f"unknown option {sorted(set(data) - allowed)[0]!r}")
        extra: dict[str, Any] = {k: v for k, v in (secrets or {}).items() if k in _SECRETS}
        try:
            return cls(**data, **extra)
        except TypeError as error:
            raise ConfigError(f"bad options: {error}") from None

    def fingerprint(self, key: bytes) -> str:
        """A digest naming these settings, secrets included but not recoverable (HMAC)."""
        text = repr(sorted(self.to_json().items())) + repr(sorted(self.secrets().items()))
        return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def builtin(name: str) -> Any:
    """The built-in value a per-host setting resolves to when nothing sets it."""
    return Options.__dataclass_fields__[name].metadata["builtin"]


def _check_number(name: str, value: object, *, minimum: float, open_: bool = False,
                  integer: bool = False) -> None:
    if value is None:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or math.isnan(value) or (
            value < minimum or (open_ and value == minimum)):
        relation = ">" if open_ else ">="
        raise ConfigError(f"{name} must be {'an integer' if integer else 'a number'} "
                          f"{relation} {minimum:g}, not {value!r}")


def _check_count(name: str, value: object, *, minimum: int) -> None:
    """A count (`5`) or a percentage of the hosts (`"20%"`, more than 0, at most 100)."""
    if isinstance(value, str):
        number = value.removesuffix("%")
        if not (value.endswith("%") and number.replace(".", "", 1).isdigit()
                and 0 < float(number) <= 100):
            raise ConfigError(f"{name} must be a count or a percentage like 20%, not {value!r}")
    else:
        _check_number(name, value, minimum=minimum, integer=True)


def expand(path: str) -> str:
    """`~` expanded, made absolute."""
    return os.path.abspath(os.path.expanduser(path))
