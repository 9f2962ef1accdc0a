"""Private keys and the agent: loaded once per worker, offered in a fixed order.

Only keys the user configured (and the agent's, when asked) are offered:
never `~/.ssh/id_*` by surprise, which would leak identities to hostile hosts
and burn through a server's MaxAuthTries.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from typing import Any

import paramiko
from paramiko.auth_strategy import AuthSource, AuthStrategy, InMemoryPrivateKey, Password

from ..exceptions import ConfigError
from ..options import Options, Secret, expand

__all__ = ["FleetAuth", "WeakKeyExchange", "load_private_key"]


def load_private_key(path: str, passphrase: Secret | None) -> paramiko.PKey:
    """Load one private key file, refusing what OpenSSH would refuse.

    Raises `ConfigError` naming the file (never the passphrase) when it is
    missing, readable by others, encrypted without a passphrase, or not a key.
    """
    full = expand(path)
    try:
        info = os.stat(full)
    except OSError as error:
        raise ConfigError(f"key file {full}: {error.strerror}") from None
    if info.st_uid == os.getuid() and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"key file {full} is accessible by others (mode {stat.S_IMODE(info.st_mode):04o});"
            " run: chmod 600 " + full
        )
    secret = passphrase.reveal().encode() if passphrase else None
    try:
        return paramiko.PKey.from_path(full, password=secret)  # type: ignore[arg-type]
    except (paramiko.SSHException, ValueError, TypeError, OSError) as error:
        # paramiko 5 says "password-protected" with a TypeError for OpenSSH-format keys.
        needs_passphrase = isinstance(error, paramiko.PasswordRequiredException) or (
            isinstance(error, TypeError) and "password" in str(error))
        if needs_passphrase and secret is None:
            raise ConfigError(f"key file {full} is encrypted: set FLEETEXEC_PASSPHRASE or use "
                              "--ask-passphrase") from None
        reason = "wrong passphrase or not a private key" if secret else "not a private key"
        raise ConfigError(f"key file {full}: {reason} ({type(error).__name__})") from None


class WeakKeyExchange(paramiko.SSHException):
    """The server's key exchange is weaker than the user required."""


class FleetAuth(AuthStrategy):
    """Try the configured keys, then the agent's (if asked), then a password (if given)."""

    def __init__(
        self, username: str, keys: Sequence[paramiko.PKey], agent_keys: Sequence[paramiko.PKey],
        options: Options,
    ) -> None:
        super().__init__(ssh_config=paramiko.SSHConfig())
        self.options = options
        self.username = username
        self.keys = keys
        self.agent_keys = agent_keys

    def authenticate(self, transport: paramiko.Transport) -> list[Any]:
        # The last moment before any credential leaves: the host key is verified
        # and the key exchange is done, so this is where a weak peer is refused.
        if self.options.require_strict_kex and not getattr(transport, "agreed_on_strict_kex",
                                                             False):
            raise WeakKeyExchange(
                "server does not offer strict key exchange (Terrapin, CVE-2023-48795); "
                "refused by --require-strict-kex")
        return super().authenticate(transport)

    def get_sources(self) -> Iterator[AuthSource]:
        for key in [*self.keys, *self.agent_keys]:
            yield InMemoryPrivateKey(self.username, key)
        if self.options.password is not None:
            yield Password(self.username, password_getter=self.options.password.reveal)
