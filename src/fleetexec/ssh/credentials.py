"""Private keys and the agent: loaded once per worker, offered in OpenSSH's order.

What `ssh` offers, `resolve()` having decided per host what is configured:
the configured key files first (flags, inventory, or the ssh config's
IdentityFile), then the agent's keys (unless IdentitiesOnly), then, only when
no key file is configured anywhere, the default `~/.ssh/id_*` files that load.
A key offered once is not offered again. Configured keys come first so that
the key meant for the host is tried before sshd's MaxAuthTries (6) runs out;
the agent is never forwarded.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import paramiko
from paramiko.agent import AgentKey
from paramiko.auth_strategy import (
    AuthFailure,
    AuthSource,
    AuthStrategy,
    InMemoryPrivateKey,
    Password,
)
from paramiko.message import Message

from ..exceptions import ConfigError
from ..options import Options, Secret, expand

__all__ = ["AgentKeys", "FleetAuth", "NeedsPassphrase", "WeakKeyExchange", "load_private_key",
           "try_private_key"]

_AGENT_REFRESH = 5.0  # seconds before an agent's key list is asked for again
_AGENT_TIMEOUT = 10.0
_AGENT_REPLY_MAX = 256 * 1024
SSH2_AGENTC_REQUEST_IDENTITIES, SSH2_AGENT_IDENTITIES_ANSWER = 11, 12  # the agent protocol


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
            raise NeedsPassphrase(f"key file {full} is encrypted: set FLEETEXEC_PASSPHRASE or "
                                  "use --ask-passphrase") from None
        reason = "wrong passphrase or not a private key" if secret else "not a private key"
        raise ConfigError(f"key file {full}: {reason} ({type(error).__name__})") from None


class NeedsPassphrase(ConfigError):
    """An encrypted key file and no passphrase: usable only if the agent holds its key."""


def try_private_key(path: str, passphrase: Secret | None) -> paramiko.PKey | None:
    """A default identity file (`~/.ssh/id_*`): the key, or None when it is missing,
    unreadable, readable by others, encrypted with no passphrase given or not a key
    paramiko reads. ssh in batch mode skips such files too; it is never an error."""
    try:
        return load_private_key(path, passphrase)
    except ConfigError:
        return None


class _Agent:
    """One connection to an ssh-agent, its requests one at a time (threads sign at once).

    paramiko's `Agent` only reads $SSH_AUTH_SOCK and shares one socket between
    threads unguarded; this speaks the same protocol to any socket (IdentityAgent)
    and hands out paramiko `AgentKey`s that sign through it.
    """

    def __init__(self, path: str) -> None:
        self._lock = threading.RLock()
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._conn.settimeout(_AGENT_TIMEOUT)
        try:
            self._conn.connect(path)
            self.keys = self._list()
        except BaseException:
            self._conn.close()
            raise

    def _list(self) -> tuple[paramiko.PKey, ...]:
        kind, reply = self._send_message(bytes([SSH2_AGENTC_REQUEST_IDENTITIES]))
        if kind != SSH2_AGENT_IDENTITIES_ANSWER:
            raise paramiko.SSHException("could not get keys from ssh-agent")
        return tuple(AgentKey(agent=self, blob=reply.get_binary(),  # type: ignore[arg-type]
                              comment=reply.get_text()) for _ in range(reply.get_int()))

    def _send_message(self, message: Message | bytes) -> tuple[int, Message]:
        """paramiko's AgentSSH._send_message (what `AgentKey.sign_ssh_data` calls)."""
        data = message.asbytes() if isinstance(message, Message) else bytes(message)
        with self._lock:
            self._conn.sendall(struct.pack(">I", len(data)) + data)
            size = struct.unpack(">I", self._read(4))[0]
            if size > _AGENT_REPLY_MAX:
                raise paramiko.SSHException("ssh-agent reply too large")
            reply = Message(self._read(size))
        return reply.get_byte()[0], reply

    def _read(self, wanted: int) -> bytes:
        data = b""
        while len(data) < wanted:
            chunk = self._conn.recv(wanted - len(data))
            if not chunk:
                raise paramiko.SSHException("lost ssh-agent")
            data += chunk
        return data

    def refresh(self) -> None:
        with self._lock:
            self.keys = self._list()

    def close(self) -> None:
        self._conn.close()


class AgentKeys:
    """The keys of each agent socket a worker uses, asked again after a few seconds
    (workers outlive `ssh-add`). An agent that cannot be reached has no keys."""

    def __init__(self) -> None:
        self._agents: dict[str, tuple[float, _Agent | None]] = {}
        self._lock = threading.Lock()

    def keys(self, path: str) -> tuple[paramiko.PKey, ...]:
        with self._lock:
            asked, agent = self._agents.get(path, (0.0, None))
            if asked and time.monotonic() - asked < _AGENT_REFRESH:
                return agent.keys if agent else ()
            try:
                if agent is None:
                    agent = _Agent(path)
                else:
                    agent.refresh()
            except (OSError, paramiko.SSHException, EOFError):
                if agent is not None:
                    agent.close()
                agent = None
            self._agents[path] = (time.monotonic(), agent)
            return agent.keys if agent else ()

    def close(self) -> None:
        with self._lock:
            for _, agent in self._agents.values():
                if agent is not None:
                    agent.close()
            self._agents.clear()


class WeakKeyExchange(paramiko.SSHException):
    """The server's key exchange is weaker than the user required."""


class FleetAuth(AuthStrategy):
    """Try the configured keys, the agent's, the default files, then a password (if given).

    `tried` counts the credentials the server answered; `closed` is set when
    the server hung up before all were tried (sshd's MaxAuthTries).
    """

    def __init__(
        self, username: str, keys: Sequence[paramiko.PKey], agent_keys: Sequence[paramiko.PKey],
        options: Options, default_keys: Sequence[paramiko.PKey] = (),
    ) -> None:
        super().__init__(ssh_config=paramiko.SSHConfig())
        self.options = options
        self.username = username
        offered: dict[bytes, paramiko.PKey] = {}
        for key in [*keys, *agent_keys, *default_keys]:
            offered.setdefault(key.asbytes(), key)
        self.keys = list(offered.values())
        self.tried = 0
        self.closed = False
        self._transport: paramiko.Transport | None = None

    def authenticate(self, transport: paramiko.Transport) -> list[Any]:
        # The last moment before any credential leaves: the host key is verified
        # and the key exchange is done, so this is where a weak peer is refused.
        if self.options.require_strict_kex and not getattr(transport, "agreed_on_strict_kex",
                                                             False):
            raise WeakKeyExchange(
                "server does not offer strict key exchange (Terrapin, CVE-2023-48795); "
                "refused by --require-strict-kex")
        self._transport = transport
        try:
            return super().authenticate(transport)
        except AuthFailure as failure:
            # sshd answers the credential that reaches MaxAuthTries by hanging up; any
            # source after that failed without reaching the server.
            answered = [r for r in failure.result if not _unanswered(r.result)]
            self.closed = self.closed or len(answered) < len(failure.result)
            self.tried = len(answered) + self.closed
            raise

    def get_sources(self) -> Iterator[AuthSource]:  # tried in this order
        sources: list[AuthSource] = [InMemoryPrivateKey(self.username, k) for k in self.keys]
        if self.options.password is not None:
            sources.append(Password(self.username, password_getter=self.options.password.reveal))
        for source in sources:
            if self._transport is not None and not self._transport.is_active():
                self.closed = True  # the server hung up: what is left was never tried
                return
            self.tried += 1
            yield source


def _unanswered(error: object) -> bool:
    """An attempt that failed because the connection was gone, not because the server said no."""
    return isinstance(error, EOFError | OSError) or (
        isinstance(error, paramiko.SSHException) and ("EOF" in str(error)
                                                      or "No existing session" in str(error)))
