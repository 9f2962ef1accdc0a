"""Reaching a host through bastions (ProxyJump) or through a local command (ProxyCommand).

`ssh -J` and most fleet tools make one bastion handshake per target. Here a
worker process keeps one authenticated connection per bastion, and every
host behind it gets a `direct-tcpip` channel on that connection: 500 hosts
behind one bastion cost one bastion handshake per worker process. A bastion
is connected to like any host (its host key checked, its own deadline); the
first hop of a chain may itself be reached through a ProxyCommand.

A bastion that fails is remembered for its connect timeout: the hosts behind
it then end at once with the bastion's status and an error naming it,
instead of each waiting out the same failure again.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import replace
from typing import IO, TYPE_CHECKING

import paramiko

from ..host import Host
from ..render import sanitize
from ..results import Status
from .failure import Failure
from .transport import close_client

if TYPE_CHECKING:
    from .session import WorkerContext

__all__ = ["Bastions", "ProxySocket", "proxy_command_socket"]

_STDERR_SHOWN = 200  # characters of a failed ProxyCommand's last stderr line in the error
_EXIT_WAIT = 0.5  # seconds a ProxyCommand gets to exit by itself once its connection closed


class _Hop:
    """One bastion of one chain, in one worker process: its connection or its failure."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.client: paramiko.SSHClient | None = None
        self.failure: Failure | None = None
        self.failed_until = 0.0


class Bastions:
    """The bastion connections of one worker process, shared by every host behind them."""

    def __init__(self, context: WorkerContext) -> None:
        self._context = context
        self._lock = threading.Lock()
        self._hops: dict[Host, _Hop] = {}

    def channel(self, host: Host, timeout: float) -> tuple[paramiko.Channel, float]:
        """A channel to `host` through the last bastion of `host.via`, and the monotonic time
        the bastion was ready (the host's own connect deadline counts from then, as each
        hop of `ssh -J` has its own ConnectTimeout). Raises `Failure` naming the bastion."""
        bastion = replace(host.via[-1], via=host.via[:-1])
        transport = self._transport(bastion)
        ready = time.monotonic()
        where = f"{host.address}:{host.port or 22}"
        try:
            channel = transport.open_channel(
                "direct-tcpip", (host.address, host.port or 22), ("127.0.0.1", 0),
                timeout=timeout)
        except paramiko.ChannelException as error:  # the bastion answered: it cannot, or won't
            raise Failure(Status.UNREACHABLE, f"jump host {_named(bastion)} cannot reach "
                          f"{where}: {sanitize(error.text, single_line=True)}") from None
        except (paramiko.SSHException, EOFError, OSError) as error:
            if "Timeout" in str(error):
                raise Failure(Status.TIMEOUT, f"jump host {_named(bastion)} did not open a "
                              f"channel to {where} within {timeout:g}s") from None
            if transport.is_active():  # refused: paramiko keeps one reason for all at once
                raise Failure(Status.UNREACHABLE, f"jump host {_named(bastion)} cannot reach "
                              f"{where}: channel refused") from None
            raise Failure(Status.CONNECTION_LOST,
                          f"jump host {_named(bastion)}: connection lost") from None
        return channel, ready

    def _transport(self, bastion: Host) -> paramiko.Transport:
        with self._lock:
            hop = self._hops.setdefault(bastion, _Hop())
        with hop.lock:  # the hosts behind it wait for one handshake, then share it
            transport = hop.client.get_transport() if hop.client is not None else None
            if transport is not None and transport.is_active():
                return transport
            if hop.failure is not None and time.monotonic() < hop.failed_until:
                raise hop.failure
            if hop.client is not None:
                close_client(hop.client)
                hop.client = None
            from .connect import connect  # connect() reaches bastions through this module

            try:
                hop.client = connect(bastion, self._context, time.monotonic())
            except Failure as failure:
                if not failure.bastion:  # else a hop before this one has named itself
                    failure = Failure(failure.status,
                                      f"jump host {_named(bastion)}: {failure.message}",
                                      bastion=True)
                hop.failure = failure
                hop.failed_until = time.monotonic() + (bastion.connect_timeout or 10.0)
                raise failure from None
            hop.failure = None
            transport = hop.client.get_transport()
            assert transport is not None  # noqa: S101 - connect() returned a connected client
            return transport

    def close(self) -> None:
        """Close every bastion connection (after the connections through them)."""
        with self._lock:
            hops, self._hops = list(self._hops.values()), {}
        for hop in reversed(hops):  # a chain's later hops run over its earlier ones
            if hop.client is not None:
                close_client(hop.client)


def _named(host: Host) -> str:
    """`bastion`, `bastion:2222`, or `bastion (10.0.0.1:2222)`: how an error names a hop."""
    port = "" if host.port in (None, 22) else f":{host.port}"
    if host.address == host.name:
        return f"{host.name}{port}"
    return f"{host.name} ({host.address}{port or ':22'})"


class ProxySocket(socket.socket):
    """Our end of a socket pair whose other end is a ProxyCommand's stdin and stdout.

    Closing it ends the command: it gets a moment to exit on the end of its input,
    then is killed (by its pid). OpenSSH leaves that to the command, but one that
    never exits would outlive the host's deadline here.
    """

    __slots__ = ("ended", "lock", "process", "stderr")
    ended: str | None  # set on close: how the command ended by itself, "" if we ended it
    lock: threading.Lock  # paramiko's thread and the session's may both close it
    process: subprocess.Popen[bytes]
    stderr: IO[bytes]

    def close(self) -> None:
        super().close()
        if not hasattr(self, "lock"):
            return  # not set up yet (proxy_command_socket failed half-way)
        with self.lock:
            if self.ended is not None:
                return
            try:
                self.ended = self._ended(self.process.wait(_EXIT_WAIT))
            except subprocess.TimeoutExpired:
                self.ended = ""
                self.process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=1)
            self.stderr.close()

    def explain(self, wait: float = _EXIT_WAIT) -> str:
        """Why the connection ended, as far as the command tells: its exit status and the
        last line it wrote on stderr (sanitised and shortened); "" if it is still running
        after `wait` seconds, or was ended by us."""
        with self.lock:
            if self.ended is not None:
                return self.ended
            try:
                return self._ended(self.process.wait(wait))
            except subprocess.TimeoutExpired:
                return ""

    def _ended(self, code: int) -> str:
        self.stderr.seek(0)
        lines = self.stderr.read().decode(errors="replace").strip().splitlines()
        said = sanitize(lines[-1], single_line=True)[:_STDERR_SHOWN] if lines else ""
        return f"ProxyCommand exited with status {code}" + (f": {said}" if said else "")


def proxy_command_socket(command: str) -> ProxySocket:
    """Start `command` as ssh starts a ProxyCommand (`exec` through the user's shell) with
    a socket pair for its standard input and output; its stderr is kept for errors."""
    ours, theirs = socket.socketpair()
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed with the socket
    try:
        process = subprocess.Popen(  # noqa: S603 - the user's own configured command
            [os.environ.get("SHELL") or "/bin/sh", "-c", f"exec {command}"],
            stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=stderr, close_fds=True,
            start_new_session=True)  # Ctrl-C is the run's to handle; we end it on close
    except OSError as error:
        ours.close()
        stderr.close()
        raise Failure(Status.ERROR, f"cannot start ProxyCommand: {error.strerror}") from None
    finally:
        theirs.close()
    sock = ProxySocket(fileno=ours.detach())
    sock.ended, sock.lock, sock.process, sock.stderr = None, threading.Lock(), process, stderr
    return sock
