"""Settings shared by every session of a run. Paramiko-free: the parent builds these."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

__all__ = ["DEFAULT_KNOWN_HOSTS", "Secret", "SessionOptions"]

DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "/etc/ssh/ssh_known_hosts")


class Secret:
    """A password or passphrase that never shows itself in repr, logs or errors."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself; call only where it is handed to paramiko."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self._value,))


@dataclass(frozen=True)
class SessionOptions:
    """How every host is reached and how long a command may take (the command comes per run).

    Per-host values in `Host` (user, port, key files, timeouts, known_hosts
    file) win over the defaults here.
    """

    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    host_key_policy: str = "strict"
    require_strict_kex: bool = False
    known_hosts_files: tuple[str, ...] = DEFAULT_KNOWN_HOSTS
    accept_new_file: str = "~/.ssh/known_hosts"
    key_files: tuple[str, ...] = ()
    use_agent: bool = False
    agent_socket: str | None = None
    password: Secret | None = None
    passphrase: Secret | None = None
    max_output: int = 1024 * 1024
    default_user: str = field(default_factory=lambda: _local_user())
    handshakes_in_flight: int = 64
    preload_key_files: tuple[str, ...] = ()


def _local_user() -> str:
    import getpass

    return getpass.getuser()


def expand(path: str) -> str:
    """`~` expanded, made absolute."""
    return os.path.abspath(os.path.expanduser(path))
