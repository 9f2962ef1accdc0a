"""Running the command on a connected host: exec, drain both streams, read how it ended."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import paramiko
from paramiko.channel import Channel

from ..host import Host
from ..results import HostResult, Status
from .failure import StaleConnection
from .pacing import Turn, nothing
from .sudo import SudoGate
from .transport import FleetTransport

if TYPE_CHECKING:
    from .session import WorkerContext

__all__ = ["Capped", "exec_and_drain"]

_READ_SIZE = 65536
_BULK_BYTES = 128 * 1024  # a session past this much output reads in turns...
BULK_READERS = 16  # ...with at most this many such sessions reading at once per process


class _Sink(Protocol):
    total: int

    def add(self, chunk: bytes) -> None: ...


class Capped:
    """Keeps the first `cap` bytes of a stream, counts the rest, never blocks the sender."""

    __slots__ = ("cap", "data", "listener", "total")

    def __init__(self, cap: int, listener: Callable[[bytes], object] | None = None) -> None:
        self.cap, self.data, self.total = cap, bytearray(), 0
        self.listener = listener  # live output: every chunk, kept or not

    def add(self, chunk: bytes) -> None:
        if self.listener is not None:
            self.listener(chunk)
        self.total += len(chunk)
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.data)


def exec_and_drain(
    client: paramiko.SSHClient, host: Host, command: str, context: WorkerContext, out: Capped,
    err: Capped, finish: Callable[..., HostResult], stdin: bytes | None = None,
) -> HostResult:
    timeout = host.command_timeout or 0.0  # resolve() filled it; 0 = no deadline
    transport = client.get_transport()
    assert isinstance(transport, FleetTransport)  # noqa: S101 - set by transport_factory
    options = context.options
    # --sudo: the gate wraps the command and stands between the channel's stderr and `err`.
    sudo = SudoGate(err, options.sudo_user, options.sudo_password) if options.sudo else None
    alarm = context.watchdog.arm(time.monotonic() + timeout, transport.sock) if timeout else None
    try:
        try:
            channel = transport.open_session(timeout=timeout or None)
            if sudo is None:
                channel.exec_command(command)
                _send_stdin(channel, stdin)
            else:  # stdin waits until sudo has asked for the password or is done
                channel.exec_command(sudo.wrap(command))
                sudo.attach(channel, lambda: _send_stdin(channel, stdin))
        except Exception as error:
            if alarm is not None and alarm.fired:
                return finish(Status.TIMEOUT, f"command did not start within {timeout:g}s")
            if not transport.is_active():
                raise StaleConnection() from None
            return finish(Status.PROTOCOL_ERROR, f"server refused the command channel: {error}")
        _drain(channel, out, err if sudo is None else sudo, context.bulk_readers)
        if sudo is not None:
            sudo.close()
    finally:
        if alarm is not None:
            alarm.cancel()
    if alarm is not None and alarm.fired:
        return finish(Status.TIMEOUT, f"command did not finish within {timeout:g}s "
                      "(output so far kept)")
    signal = transport.exit_signals.get(channel.chanid)
    if signal is not None:
        return finish(Status.KILLED, f"killed by signal {signal}", signal=signal)
    if sudo is not None and not sudo.ran and channel.exit_status_ready():
        # sudo ended without running the command: not the command's failure
        return finish(Status.AUTH_FAILED, sudo.failure())
    if channel.exit_status_ready() and channel.exit_status >= 0:
        code = channel.exit_status
        return finish(Status.OK if code == 0 else Status.FAILED,
                      None if code == 0 else f"exit code {code}", exit_code=code)
    if not channel.eof_received:
        return finish(Status.CONNECTION_LOST, "connection lost before the command finished "
                      "(output is incomplete)")
    return finish(Status.NO_EXIT_STATUS, "the server reported no exit status")


def _send_stdin(channel: Channel, data: bytes | None) -> None:
    """`data`, then end of file, so a command reading its input never waits for more."""
    if not data:
        channel.shutdown_write()
        return

    def send() -> None:
        # On its own thread: a command that answers while it reads would otherwise fill
        # our window while we block on its, and both would wait forever.
        try:
            channel.sendall(data)
            channel.shutdown_write()
        except OSError:
            pass  # the channel closed early: the drain reports what happened

    threading.Thread(target=send, daemon=True).start()


def _drain(
    channel: Channel, out: _Sink, err: _Sink, bulk_readers: threading.BoundedSemaphore
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
    bulk = Turn(None, nothing)
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
                bulk = Turn(bulk_readers, nothing)
            if not (channel.recv_ready() or channel.recv_stderr_ready()):
                ready.wait()
        _read_ready(channel, out, err)
    finally:
        bulk.release()
    # exit-status may follow EOF; the server's channel close (or a dead
    # transport, or the watchdog) sets status_event too.
    channel.status_event.wait()
    _read_ready(channel, out, err)


def _read_ready(channel: Channel, out: _Sink, err: _Sink) -> None:
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
