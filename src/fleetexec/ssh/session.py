"""One host, one command, one `HostResult`: connect, verify, authenticate, exec, drain.

`run_on_host` never raises: every failure becomes a `Status` and a one-line,
secret-free message. Runs inside worker processes; `WorkerContext` holds what
is done once per process (known_hosts parsed, keys loaded, the watchdog).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import socket
import threading
import time
from collections.abc import Callable

import paramiko
from paramiko.channel import Channel
from paramiko.common import MSG_CHANNEL_REQUEST
from paramiko.message import Message

from ..host import Host
from ..results import HostResult, Status
from .credentials import FleetAuth, load_private_key
from .hostkeys import KnownHosts, fingerprint, record_host_key, to_pkey
from .options import SessionOptions, expand
from .watchdog import Alarm, Watchdog

__all__ = ["WorkerContext", "run_on_host"]

# paramiko logs connection errors at WARNING; with no handler configured Python
# would print them on stderr, between our sanitised lines. Failures are reported
# as results instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

_READ_SIZE = 65536
_WINDOW = 1024 * 1024
_BULK_BYTES = 128 * 1024  # a session past this much output reads in turns...
_BULK_READERS = 16  # ...with at most this many such sessions reading at once per process
_BANNER_LINE_MAX = 8192  # OpenSSH's SSH_MAX_BANNER_LEN: refuse longer pre-banner lines
_CLOSED_BEFORE_BANNER_RETRIES = 5  # sshd's MaxStartups drops look exactly like this
_MAX_STARTUPS_REFUSAL = b"Exceeded MaxStartups"  # what OpenSSH writes before hanging up


class _Failure(Exception):
    """A host-level failure, turned into a `HostResult` before leaving this module."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _StaleConnection(_Failure):
    """The connection was dead before the command started: safe to retry on a new one."""

    def __init__(self) -> None:
        super().__init__(Status.CONNECTION_LOST, "connection lost before the command started")
        self.result: HostResult | None = None


def _handle_channel_request(chan: Channel, m: Message) -> None:
    # paramiko ignores `exit-signal` (a killed command looks like exit -1):
    # record it, hand every other request to paramiko as usual.
    start = m.packet.tell()
    if m.get_text() == "exit-signal":
        m.get_boolean()  # want_reply: never set for exit-signal (RFC 4254 6.10)
        transport = chan.transport
        if isinstance(transport, _FleetTransport):
            transport.exit_signals[chan.chanid] = m.get_text()
        chan.status_event.set()
        return
    m.packet.seek(start)
    Channel._handle_request(chan, m)  # type: ignore[attr-defined]


class _Silent:
    """A logger that drops everything, cheaply."""

    def log(self, *args: object, **kwargs: object) -> None:
        pass

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - the logging API's name
        return False


_SILENT = _Silent()


class _FleetTransport(paramiko.Transport):
    """A Transport that records exit signals and prefers AES-GCM (cheapest here)."""

    # The transport thread polls its socket this often to notice a local close;
    # paramiko's 0.1 s wakes every idle connection ten times a second. Our
    # closes shut the socket down first, which wakes the thread at once.
    _active_check_timeout = 1.0
    _preferred_ciphers = (
        "aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
        "aes128-ctr", "aes192-ctr", "aes256-ctr",
    )
    _channel_handler_table = {
        **paramiko.Transport._channel_handler_table,  # type: ignore[attr-defined]
        MSG_CHANNEL_REQUEST: _handle_channel_request,
    }

    def __init__(self, sock: socket.socket, **kwargs: object) -> None:
        # A smaller window than paramiko's 2 MiB: a session waiting for a bulk
        # slot absorbs at most this much, so the bulk limit really limits.
        super().__init__(sock, default_window_size=_WINDOW, **kwargs)  # type: ignore[arg-type]
        self.exit_signals: dict[int, str] = {}
        # paramiko logs dozens of lines per connection; failures reach us as
        # results, so the per-packet logging calls are pure cost here.
        self.logger = _SILENT  # type: ignore[assignment]
        self.packetizer.set_log(_SILENT)  # type: ignore[arg-type]

    def _parse_debug(self, m: Message) -> None:
        pass  # server debug messages: paramiko formats them byte by byte only to log them


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Unknown host keys: refused (strict) or recorded first (accept-new). Never AutoAdd."""

    def __init__(self, context: WorkerContext, host: Host, known: KnownHosts) -> None:
        self.context, self.host, self.known = context, host, known

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        where = f"{hostname} ({key.get_name()} {fingerprint(key)})"
        if key.get_base64() in self.known.revoked:
            raise _Failure(Status.HOSTKEY_CHANGED, f"host key of {where} is marked @revoked")
        if self.context.options.host_key_policy != "accept-new":
            raise _Failure(
                Status.HOSTKEY_UNKNOWN,
                f"host key of {where} is not in known_hosts; verify it and add it, "
                "or use --host-key-policy accept-new",
            )
        path = expand(self.host.known_hosts_file or self.context.options.accept_new_file)
        try:
            record_host_key(path, hostname, key)
        except OSError as error:
            raise _Failure(
                Status.ERROR, f"cannot record host key in {path}: {error.strerror}"
            ) from None
        self.known.add(hostname, key)


class WorkerContext:
    """What a worker process does once, not once per host."""

    def __init__(self, options: SessionOptions) -> None:
        self.options = options
        self.watchdog = Watchdog()
        self.handshakes = threading.BoundedSemaphore(max(1, options.handshakes_in_flight))
        self.bulk_readers = threading.BoundedSemaphore(_BULK_READERS)
        self._known: dict[tuple[str, ...], KnownHosts] = {}
        self._keys: dict[str, paramiko.PKey] = {}
        self._lock = threading.Lock()
        for path in options.preload_key_files:
            self.key(path)
        # Connections kept for the next command (fleet sessions only).
        self.connections: dict[tuple[object, ...], paramiko.SSHClient] = {}
        self.agent_keys: tuple[paramiko.PKey, ...] = ()
        if options.use_agent and options.agent_socket:
            # Workers inherit the forkserver's environment, not the caller's.
            os.environ["SSH_AUTH_SOCK"] = options.agent_socket
            self.agent_keys = tuple(paramiko.Agent().get_keys())

    def key(self, path: str) -> paramiko.PKey:
        """The private key at `path`, loaded on first use (raises `ConfigError`)."""
        with self._lock:
            if path not in self._keys:
                self._keys[path] = load_private_key(path, self.options.passphrase)
            return self._keys[path]

    def known_hosts(self, host: Host) -> KnownHosts:
        """The parsed known_hosts files that apply to `host`."""
        files = tuple(expand(p) for p in self.options.known_hosts_files)
        if host.known_hosts_file:
            files += (expand(host.known_hosts_file),)
        with self._lock:
            if files not in self._known:
                self._known[files] = KnownHosts.load(files)
            return self._known[files]

    def close_connections(self) -> None:
        """Close every kept connection (a fleet session ends)."""
        for client in self.connections.values():
            _close(client)
        self.connections.clear()


def _close(client: paramiko.SSHClient) -> None:
    transport = client.get_transport()
    if transport is not None:
        with contextlib.suppress(OSError):  # wakes the transport thread now, not at its poll
            transport.sock.shutdown(socket.SHUT_RDWR)
    client.close()


def run_on_host(
    host: Host, command: str, context: WorkerContext, reuse: bool = False,
    on_start: Callable[[], object] = lambda: None,
) -> HostResult:
    """Run `command` on `host` and return what happened. Never raises.

    `on_start` is called if the host had to wait for a handshake slot, when
    its turn comes: its deadlines start then, not when it was dequeued.
    With `reuse`, the authenticated connection is kept in the context for the
    next command on this host; a kept connection that has died is replaced
    transparently (only when the command provably did not start on it).
    """
    kept = context.connections.pop(_identity(host), None) if reuse else None
    if kept is not None:
        try:
            result = _run_once(host, command, context, kept, on_start)
            return _keep_or_close(result, host, context, kept)
        except _StaleConnection:
            _close(kept)  # it died while idle; the command never started: reconnect
    opened: list[paramiko.SSHClient] = []
    try:
        result = _run_once(host, command, context, None, on_start, opened)
    except _StaleConnection as stale:
        assert stale.result is not None  # noqa: S101 - set by _run_once before re-raising
        result = stale.result
    return _keep_or_close(result, host, context, opened[0] if opened else None, reuse)


def _identity(host: Host) -> tuple[object, ...]:
    # What a kept connection was made with: a host whose settings changed gets a new one.
    return (host.name, host.address, host.port, host.user, host.key_files, host.known_hosts_file)


def _keep_or_close(
    result: HostResult, host: Host, context: WorkerContext, client: paramiko.SSHClient | None,
    reuse: bool = True,
) -> HostResult:
    if client is None:
        return result
    transport = client.get_transport()
    if reuse and transport is not None and transport.is_active() and result.status.ran:
        context.connections[_identity(host)] = client
    else:
        _close(client)
    return result


def _run_once(
    host: Host, command: str, context: WorkerContext, client: paramiko.SSHClient | None,
    on_start: Callable[[], object], opened: list[paramiko.SSHClient] | None = None,
) -> HostResult:
    options = context.options
    # Pace set-up: a burst of connects overflows accept queues. The deadlines
    # (and the caller's clock, via on_start) start once this host's turn comes.
    turn = _Turn(context.handshakes if client is None else None, on_start)
    started, begin = time.time(), time.monotonic()
    out, err = _Capped(options.max_output), _Capped(options.max_output)

    def finish(status: Status, error: str | None = None, exit_code: int | None = None,
               signal: str | None = None) -> HostResult:
        return HostResult(
            host=host.name, status=status, exit_code=exit_code, signal=signal,
            stdout=bytes(out.data), stderr=bytes(err.data),
            stdout_truncated=out.truncated, stderr_truncated=err.truncated,
            started=started, duration=round(time.monotonic() - begin, 6), error=error,
        )

    try:
        if client is None:
            client = _connect(host, context, begin)
            if opened is not None:
                opened.append(client)
        turn.release()
        return _execute(client, host, command, context, out, err, finish)
    except _StaleConnection as stale:
        stale.result = finish(stale.status, stale.message)
        raise
    except _Failure as failure:
        return finish(failure.status, failure.message)
    except Exception as error:  # a bug or an unforeseen paramiko error: still a value
        if client is not None:
            _close(client)
        return finish(Status.ERROR, f"unexpected {type(error).__name__}: {error}")
    finally:
        turn.release()


def _nothing() -> None:
    pass


class _Turn:
    """A handshake slot, taken on creation (when a semaphore is given), released once.

    `on_wait_end` is called only if the slot had to be waited for, so that
    the common case costs no message to the parent.
    """

    def __init__(
        self, semaphore: threading.BoundedSemaphore | None, on_wait_end: Callable[[], object]
    ) -> None:
        self._semaphore = semaphore
        if semaphore is not None and not semaphore.acquire(blocking=False):
            semaphore.acquire()
            on_wait_end()

    @property
    def idle(self) -> bool:
        """True when no slot is held (never taken, or released)."""
        return self._semaphore is None

    def release(self) -> None:
        if self._semaphore is not None:
            self._semaphore.release()
            self._semaphore = None


def _connect(host: Host, context: WorkerContext, begin: float) -> paramiko.SSHClient:
    """TCP + banner + key exchange + host key + auth, all under one wall-clock deadline."""
    options = context.options
    timeout = host.connect_timeout if host.connect_timeout is not None else options.connect_timeout
    deadline = begin + timeout
    attempts = 0
    while True:
        sock = _open_socket(host, deadline, timeout)
        if _banner_arrives(sock, host, deadline, timeout):
            break
        sock.close()
        attempts += 1
        # Bounded, backed-off retries for this case only: the deadline or the count ends them.
        pause = min(0.2 * 2 ** (attempts - 1), 2.0) * (1 + random.random())  # noqa: S311
        if attempts > _CLOSED_BEFORE_BANNER_RETRIES or time.monotonic() + pause >= deadline:
            raise _Failure(
                Status.CONNECTION_LOST,
                f"server closed the connection before its SSH banner ({attempts} attempts; "
                "sshd MaxStartups or a firewall?)",
            )
        time.sleep(pause)
    alarm = context.watchdog.arm(deadline, sock)
    client = paramiko.SSHClient()
    try:
        _handshake(client, sock, host, context, alarm, timeout)
    except BaseException:
        _close(client)
        sock.close()
        raise
    finally:
        alarm.cancel()
    return client


def _open_socket(host: Host, deadline: float, timeout: float) -> socket.socket:
    try:
        sock = socket.create_connection(
            (host.address, host.port), timeout=max(0.001, deadline - time.monotonic())
        )
        # Small SSH packets otherwise wait on delayed ACKs (about 40 ms each).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    except socket.gaierror as error:
        raise _Failure(
            Status.UNREACHABLE, f"cannot resolve {host.address}: {error.strerror}"
        ) from None
    except TimeoutError:
        raise _Failure(
            Status.TIMEOUT, f"TCP connect did not complete within {timeout:g}s"
        ) from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise _Failure(
            Status.UNREACHABLE, f"cannot connect to port {host.port}: {reason}"
        ) from None


def _banner_arrives(sock: socket.socket, host: Host, deadline: float, timeout: float) -> bool:
    """Peek at the first line: False if the server hung up before its banner.

    Peeking leaves the bytes for paramiko, and lets us cap a banner line the
    way OpenSSH does (paramiko would accumulate an endless line forever).
    """
    while True:
        remaining = deadline - time.monotonic()
        poller = select.poll()  # not select.select: fds above 1023 are normal here
        poller.register(sock, select.POLLIN)
        if remaining <= 0 or not poller.poll(remaining * 1000):
            raise _Failure(Status.TIMEOUT, f"no SSH banner within {timeout:g}s")
        try:
            data = sock.recv(_BANNER_LINE_MAX, socket.MSG_PEEK)
        except ConnectionResetError:
            return False
        except OSError as error:
            raise _Failure(
                Status.CONNECTION_LOST, f"reading the SSH banner: {error.strerror}"
            ) from None
        if not data or data.startswith(_MAX_STARTUPS_REFUSAL):
            return False
        if b"\n" in data:
            return True
        if len(data) >= _BANNER_LINE_MAX:
            raise _Failure(Status.PROTOCOL_ERROR, f"not an SSH server: a first line over "
                           f"{_BANNER_LINE_MAX} bytes")
        time.sleep(0.01)  # a partial line is still in the buffer: select would not block


def _handshake(
    client: paramiko.SSHClient, sock: socket.socket, host: Host, context: WorkerContext,
    alarm: Alarm, timeout: float,
) -> None:
    options = context.options
    known = context.known_hosts(host)
    for key_type, key_b64 in known.lookup(host.known_hosts_name):
        key = to_pkey(key_type, key_b64)
        if key is not None and key_b64 not in known.revoked:
            client.get_host_keys().add(host.known_hosts_name, key_type, key)
    client.set_missing_host_key_policy(_HostKeyPolicy(context, host, known))
    key_files = host.key_files or options.key_files
    user = host.user or options.default_user
    auth = FleetAuth(user, [context.key(p) for p in key_files], context.agent_keys,
                     options.password)
    remaining = max(0.001, alarm.deadline - time.monotonic())
    try:
        client.connect(
            host.address, port=host.port, username=user, sock=sock, timeout=remaining,
            banner_timeout=remaining, auth_timeout=remaining, channel_timeout=remaining,
            allow_agent=False, look_for_keys=False, auth_strategy=auth,
            transport_factory=_FleetTransport,  # type: ignore[arg-type]
        )
    except _Failure:
        raise
    except paramiko.BadHostKeyException as error:
        raise _Failure(
            Status.HOSTKEY_CHANGED,
            f"HOST KEY CHANGED for {host.known_hosts_name}: server offers "
            f"{error.key.get_name()} {fingerprint(error.key)}, known_hosts has "
            f"{error.expected_key.get_name()} {fingerprint(error.expected_key)}; refusing "
            "(possible man-in-the-middle, or the host was reinstalled)",
        ) from None
    except Exception as error:
        if alarm.fired:
            raise _Failure(
                Status.TIMEOUT, f"connect did not complete within {timeout:g}s"
            ) from None
        if isinstance(error, paramiko.AuthenticationException):
            tried = len(auth.keys) + len(auth.agent_keys) + (auth.password is not None)
            raise _Failure(
                Status.AUTH_FAILED,
                f"authentication failed for user {user!r} ({tried} credential(s) tried)"
                if tried else f"no credentials for user {user!r}: give --key, --use-agent "
                "or a password",
            ) from None
        if isinstance(error, paramiko.SSHException):
            raise _Failure(Status.PROTOCOL_ERROR, f"SSH handshake failed: {error}") from None
        if isinstance(error, EOFError | OSError):
            raise _Failure(
                Status.CONNECTION_LOST, "connection closed during the SSH handshake"
            ) from None
        raise


class _Capped:
    """Keeps the first `cap` bytes of a stream, counts the rest, never blocks the sender."""

    __slots__ = ("cap", "data", "total")

    def __init__(self, cap: int) -> None:
        self.cap, self.data, self.total = cap, bytearray(), 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.data)


def _execute(
    client: paramiko.SSHClient, host: Host, command: str, context: WorkerContext, out: _Capped,
    err: _Capped, finish: Callable[..., HostResult],
) -> HostResult:
    options = context.options
    timeout = host.command_timeout if host.command_timeout is not None else options.command_timeout
    transport = client.get_transport()
    assert isinstance(transport, _FleetTransport)  # noqa: S101 - set by transport_factory
    alarm = context.watchdog.arm(time.monotonic() + timeout, transport.sock) if timeout else None  # type: ignore[arg-type]
    try:
        try:
            channel = transport.open_session(timeout=timeout or None)
            channel.exec_command(command)
        except Exception as error:
            if alarm is not None and alarm.fired:
                return finish(Status.TIMEOUT, f"command did not start within {timeout:g}s")
            if not transport.is_active():
                raise _StaleConnection() from None
            return finish(Status.PROTOCOL_ERROR, f"server refused the command channel: {error}")
        _drain(channel, out, err, context.bulk_readers)
    finally:
        if alarm is not None:
            alarm.cancel()
    if alarm is not None and alarm.fired:
        return finish(Status.TIMEOUT, f"command did not finish within {timeout:g}s "
                      "(output so far kept)")
    signal = transport.exit_signals.get(channel.chanid)
    if signal is not None:
        return finish(Status.KILLED, f"killed by signal {signal}", signal=signal)
    if channel.exit_status_ready() and channel.exit_status >= 0:
        code = channel.exit_status
        return finish(Status.OK if code == 0 else Status.FAILED,
                      None if code == 0 else f"exit code {code}", exit_code=code)
    if not channel.eof_received:
        return finish(Status.CONNECTION_LOST, "connection lost before the command finished "
                      "(output is incomplete)")
    return finish(Status.NO_EXIT_STATUS, "the server reported no exit status")


def _drain(
    channel: Channel, out: _Capped, err: _Capped, bulk_readers: threading.BoundedSemaphore
) -> None:
    """Read stdout and stderr together until EOF, then wait for the exit status.

    Reading one stream first deadlocks once the other fills the ~2 MiB window.
    One event, set by data on either stream and by close, wakes this thread
    (`Channel.fileno()` would do the same with an OS pipe: two more fds and
    syscalls per session).
    """
    ready = threading.Event()
    channel.in_buffer.set_event(ready)
    channel.in_stderr_buffer.set_event(ready)
    bulk = _Turn(None, _nothing)
    try:
        while True:
            ready.clear()
            _read_ready(channel, out, err)
            if channel.eof_received or channel.closed:
                break
            if out.total + err.total > _BULK_BYTES and bulk.idle:
                # A heavy stream now: wait for a bulk slot (the server waits on
                # the window meanwhile). Hundreds of floods at once in one
                # process cost far more CPU, in GIL contention, than in turns.
                bulk = _Turn(bulk_readers, _nothing)
            if not (channel.recv_ready() or channel.recv_stderr_ready()):
                ready.wait()
        _read_ready(channel, out, err)
    finally:
        bulk.release()
    # exit-status may follow EOF; the server's channel close (or a dead
    # transport, or the watchdog) sets status_event too.
    channel.status_event.wait()
    _read_ready(channel, out, err)


def _read_ready(channel: Channel, out: _Capped, err: _Capped) -> None:
    while channel.recv_ready():
        chunk = channel.recv(_READ_SIZE)
        if not chunk:
            break
        out.add(chunk)
    while channel.recv_stderr_ready():
        chunk = channel.recv_stderr(_READ_SIZE)
        if not chunk:
            break
        err.add(chunk)
