"""One mock host as a mockssh server: connections, auth faults, command execution.

mockssh's `Server` and `Handler` are subclassed; the parts that start threads,
load mockssh's packaged host key or run commands locally are replaced (see the
`fleetexec.testing.mockfleet` docstring for why).
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import queue
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mockssh.server import Handler, Server
from paramiko.common import AUTH_FAILED

from ._mockscript import (
    BINARY_PAYLOAD,
    Action,
    MockHost,
    Reply,
    Responder,
    builtin,
    resolve,
)

__all__ = ["MockServer", "new_key"]

log = logging.getLogger(__name__)
# Clients of a mock fleet hang up abruptly on purpose, and paramiko logs each reset as an
# ERROR; without any handler Python would print those to stderr (logging.lastResort).
log.addHandler(logging.NullHandler())

_CHUNK = bytes(range(256)) * 256  # 64 KiB; floods repeat it so receivers can verify
_POLL = 0.05  # how often a waiting command notices a closed channel or a stopped server


def new_key(kind: str) -> tuple[paramiko.PKey, bytes]:
    """A fresh key and, for ed25519, its OpenSSH private-key text (for the user key file)."""
    if kind == "ecdsa":
        return paramiko.ECDSAKey.generate(), b""
    if kind == "rsa":
        return paramiko.RSAKey.generate(2048), b""
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return paramiko.Ed25519Key(file_obj=io.StringIO(pem.decode())), pem


class _Handler(Handler):  # type: ignore[misc]  # mockssh is untyped
    """One client connection: mockssh's session/exec/auth checks, our execution."""

    def __init__(self, server: MockServer, client_conn: tuple[socket.socket, Any]) -> None:
        # Not super().__init__(): it installs mockssh's packaged RSA key and an sftp
        # subsystem that serves the test machine's real file system.
        self.server = server
        self.command_queues: dict[int, queue.Queue[bytes]] = {}
        self.transport = paramiko.Transport(client_conn[0], strict_kex=server.spec.strict_kex)
        self.transport.set_log_channel(f"{__name__}.transport")
        self.transport.name = f"mockfleet-{server.name}-transport"
        self.transport.add_server_key(server.host_key)
        # mockssh queues the command inside check_channel_exec_request, before the
        # exec reply is sent; a fast command could then close the channel before the
        # reply and the client would see "Channel closed". Release it afterwards.
        table = dict(paramiko.Transport._channel_handler_table)  # type: ignore[attr-defined]
        table[paramiko.common.MSG_CHANNEL_REQUEST] = self._handle_request
        self.transport._channel_handler_table = table  # type: ignore[attr-defined]
        self._pending: dict[int, bytes] = {}

    def _handle_request(self, channel: paramiko.Channel, m: paramiko.Message) -> None:
        paramiko.Channel._handle_request(channel, m)  # type: ignore[attr-defined]
        command = self._pending.pop(channel.get_id(), None)
        if command is not None:
            self.command_queues.setdefault(channel.get_id(), queue.Queue()).put(command)

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        fault = self.server.spec.fault
        if fault is not None and fault.kind == "refuse_exec":
            return False
        self._pending[channel.get_id()] = command
        return True

    def run(self) -> None:
        try:
            self.transport.start_server(server=self)
            while True:
                # A timeout, because accept() is never woken when *we* close the
                # transport (stop(), the drop fault), only when the peer goes away.
                channel = self.transport.accept(timeout=0.5)
                if channel is not None:
                    threading.Thread(
                        target=self.handle_client, args=(channel,), daemon=True,
                        name=f"mockfleet-{self.server.name}-channel",
                    ).start()
                elif not self.transport.is_active():
                    break
        except (paramiko.SSHException, EOFError, OSError) as exc:
            log.debug("%s: connection ended: %r", self.server.name, exc)
        finally:
            self.server._untrack(self.transport)

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        fault = self.server.spec.fault
        if fault is not None and fault.kind == "reject_auth":
            return AUTH_FAILED
        if fault is not None and fault.kind == "slow_auth":
            self.server.stopping.wait(fault.seconds)
        result: int = super().check_auth_publickey(username, key)
        return result

    def handle_client(self, channel: paramiko.Channel) -> None:
        commands = self.command_queues.setdefault(channel.get_id(), queue.Queue())
        try:
            while not self._gone(channel):
                try:
                    raw = commands.get(timeout=_POLL)
                except queue.Empty:
                    continue
                command = raw.decode("utf-8", "replace")
                action = self.server.respond(command)
                if action is None:
                    self._passthrough(channel, raw)
                else:
                    self._perform(channel, action)
                break
        except (OSError, EOFError, paramiko.SSHException) as exc:
            log.debug("%s: channel ended: %r", self.server.name, exc)
        finally:
            try:
                channel.close()
            except (OSError, EOFError, paramiko.SSHException):
                pass  # the connection is already gone; nothing left to tell the client

    def _gone(self, channel: paramiko.Channel) -> bool:
        return channel.closed or self.server.stopping.is_set() or not self.transport.is_active()

    def _wait(self, channel: paramiko.Channel, seconds: float) -> bool:
        """Sleep, but wake (returning True) when the client or the fleet goes away."""
        deadline = time.monotonic() + seconds
        while not self._gone(channel):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(_POLL, remaining))
        return True

    def _perform(self, channel: paramiko.Channel, action: Action) -> None:
        if isinstance(action, Reply):
            if not self._wait(channel, action.delay):
                channel.sendall(action.stdout)
                channel.sendall_stderr(action.stderr)
                channel.send_exit_status(action.exit_code & 0xFFFFFFFF)  # uint32 on the wire
            return
        channel.sendall(action.output)
        kind = action.kind
        if kind == "hang":
            self._wait(channel, float("inf"))
        elif kind == "trickle":
            n = 0
            while action.lines is None or n < action.lines:
                n += 1
                channel.sendall(f"{self.server.name}: trickle line {n}\n".encode())
                if self._wait(channel, action.interval):
                    return
            channel.send_exit_status(0)
        elif kind == "flood":
            for _ in range(action.mib * 16):
                if action.stream != "stderr":
                    channel.sendall(_CHUNK)
                if action.stream != "stdout":
                    channel.sendall_stderr(_CHUNK)
            channel.send_exit_status(0)
        elif kind == "binary":
            channel.sendall(BINARY_PAYLOAD)
            channel.sendall_stderr(BINARY_PAYLOAD)
            channel.send_exit_status(0)
        elif kind == "drop":
            sock = cast(socket.socket, self.transport.sock)
            if action.rst:  # linger 0: close() sends RST and discards unsent data
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                sock.shutdown(socket.SHUT_RDWR)  # FIN after the bytes already sent
            self.transport.close()  # no CHANNEL_EOF, CLOSE or DISCONNECT is sent
        elif kind == "signal":
            channel.shutdown_write()
            _send_exit_signal(channel, action.signame)
        # no_exit_status: nothing more; handle_client's close() sends EOF + CLOSE only

    def _passthrough(self, channel: paramiko.Channel, command: bytes) -> None:
        """Run the command in a local shell, as mockssh does, but only when opted in."""
        with subprocess.Popen(  # noqa: S602 - passthrough=True is the user's explicit ask
            command, shell=True, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        ) as proc:
            pumps = [
                threading.Thread(target=_pump, args=(proc.stdout, channel.sendall), daemon=True),
                threading.Thread(
                    target=_pump, args=(proc.stderr, channel.sendall_stderr), daemon=True
                ),
            ]
            # The client's input, until its end of file, as a real sshd passes it on.
            threading.Thread(target=_feed, args=(channel, proc), daemon=True).start()
            for pump in pumps:
                pump.start()
            while proc.poll() is None:
                if self._gone(channel):
                    proc.kill()
                time.sleep(_POLL)
            for pump in pumps:
                pump.join()
        if proc.returncode >= 0:
            channel.send_exit_status(proc.returncode)
        else:
            channel.shutdown_write()
            _send_exit_signal(channel, _signame(-proc.returncode))


def _signame(number: int) -> str:
    """``KILL`` for 9: the wire form of a signal name has no SIG prefix."""
    try:
        return signal.Signals(number).name.removeprefix("SIG")
    except ValueError:
        return str(number)


def _pump(stream: io.BufferedReader, send: Callable[[bytes], None]) -> None:
    try:
        while chunk := stream.read1(65536):
            send(chunk)
    except (OSError, ValueError):
        pass  # channel gone: stop; the poll loop in _passthrough kills the process


def _feed(channel: paramiko.Channel, proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None  # noqa: S101 - stdin=PIPE above
    try:
        while chunk := channel.recv(65536):
            proc.stdin.write(chunk)
            proc.stdin.flush()
    except (OSError, ValueError):
        pass  # the command ended first, or the channel went away
    finally:
        with contextlib.suppress(OSError, ValueError):
            proc.stdin.close()


def _send_exit_signal(channel: paramiko.Channel, name: str) -> None:
    """Send an RFC 4254 section 6.10 exit-signal; paramiko has no API to send (or read) one."""
    m = paramiko.Message()
    m.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
    m.add_int(channel.remote_chanid)
    m.add_string("exit-signal")
    m.add_boolean(False)  # want reply
    m.add_string(name)
    m.add_boolean(False)  # core dumped
    m.add_string("")  # error message
    m.add_string("")  # language tag
    channel.get_transport()._send_user_message(m)  # type: ignore[attr-defined]


class MockServer(Server):  # type: ignore[misc]  # mockssh is untyped
    """One running mock host: ``name``, ``address``, ``port``, ``host_key`` (served),
    ``known_key`` (what the fleet's known_hosts says) and its `MockHost` ``spec``.

    >>> fleet["host1"].port                               # doctest: +SKIP
    40123
    """

    handler_cls = _Handler

    def __init__(
        self, spec: MockHost, name: str, address: str, user: str, key_path: str,
        fleet_default: Responder | None = None,
    ) -> None:
        super().__init__({})  # mockssh's users= assumes RSA keys; add ours typed
        self.add_user(user, key_path, keytype="ssh-ed25519")
        self.spec, self.name, self.host, self.user = spec, name, address, user
        self.fleet_default = fleet_default
        self.stopping = threading.Event()
        self._transports: set[paramiko.Transport] = set()
        self._lock = threading.Lock()
        self._port = 0
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        fault = spec.fault.kind if spec.fault else ""
        self.known_key, _ = new_key(spec.host_key_type)
        self.host_key = self.known_key
        if fault == "fresh_host_key":
            self.host_key, _ = new_key(spec.host_key_type)
        elif fault == "changed_key_type":
            self.host_key, _ = new_key("ed25519" if spec.host_key_type == "ecdsa" else "ecdsa")

    @property
    def address(self) -> str:
        """The loopback address this host listens on."""
        return str(self.host)

    @property
    def port(self) -> int:
        """The ephemeral port (still readable after stop)."""
        return self._port

    @property
    def known_hosts_line(self) -> str:
        """This host's line in the fleet's known_hosts file."""
        key = self.known_key
        return f"[{self.address}]:{self.port} {key.get_name()} {key.get_base64()}"

    def respond(self, command: str) -> Action | None:
        """The action for ``command``: script, passthrough (None), fleet default, built-in."""
        action = self.spec.respond(command)
        if action is not None or self.spec.passthrough:
            return action
        if self.fleet_default is not None:
            return resolve(self.fleet_default, command)
        return builtin(command, self.name, self.user)

    def __enter__(self) -> MockServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((self.host, 0))
        except OSError as exc:  # macOS has only 127.0.0.1 on lo0; ports still differ
            if exc.errno != errno.EADDRNOTAVAIL:
                sock.close()
                raise
            self.host = "127.0.0.1"
            sock.bind((self.host, 0))
        sock.listen(128)  # mockssh's 5 drops connections when a test opens many at once
        sock.settimeout(0.25)  # lets the accept loop see `stopping` where shutdown() can't wake it
        self._socket, self._port = sock, sock.getsockname()[1]
        self._thread = threading.Thread(
            target=self._run, args=(sock,), daemon=True, name=f"mockfleet-{self.name}"
        )
        self._thread.start()
        return self

    def _run(self, sock: socket.socket) -> None:
        while not self.stopping.is_set():
            try:
                conn, addr = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break  # stop() shut the socket down
            # Without it Nagle holds back the exit-status/EOF/close burst until the client's
            # delayed ACK (40 ms on Linux): every command would take 40 ms longer.
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                handler = self.handler_cls(self, (conn, addr))
            except OSError:  # the client already left; keep serving the others
                conn.close()
                continue
            with self._lock:
                self._transports.add(handler.transport)
            threading.Thread(
                target=handler.run, daemon=True, name=f"mockfleet-{self.name}-connection"
            ).start()

    def _untrack(self, transport: paramiko.Transport) -> None:
        with self._lock:
            self._transports.discard(transport)

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        if self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RDWR)  # wakes accept() at once on Linux
            except OSError:
                pass
            if self._thread is not None:
                self._thread.join(1.0)
            self._socket.close()
        self._socket = self._thread = None
        with self._lock:
            transports, self._transports = list(self._transports), set()
        for transport in transports:
            transport.close()

    def client(self, uid: str | None = None, *, timeout: float = 5.0) -> paramiko.SSHClient:
        """A connected `paramiko.SSHClient` that trusts only ``known_key`` (RejectPolicy)."""
        key_path, _ = self._users[uid or self.user]
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.get_host_keys().add(f"[{self.address}]:{self.port}", self.known_key.get_name(),
                                   self.known_key)
        sock = socket.create_connection((self.address, self.port), timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # see _run
        try:
            client.connect(self.address, self.port, username=uid or self.user, sock=sock,
                           key_filename=key_path, timeout=timeout, auth_timeout=timeout,
                           allow_agent=False, look_for_keys=False)
        except BaseException:
            client.close()
            sock.close()
            raise
        return client


