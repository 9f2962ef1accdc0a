"""Running the command on a connected host: exec, drain both streams, read how it ended."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import paramiko
from paramiko.channel import Channel

from ..host import Host
from ..results import HostResult, Status
from .drain import BULK_READERS, WINDOW_START, Capped, drain, install_pipes
from .failure import StaleConnection
from .start import Opening, open_and_exec, send_exec
from .sudo import SudoGate
from .transport import FleetTransport

if TYPE_CHECKING:
    from .session import WorkerContext
    from .watchdog import Alarm

__all__ = ["BULK_READERS", "Capped", "Running", "exec_and_drain", "start_command"]


def exec_and_drain(
    client: paramiko.SSHClient, host: Host, command: str, context: WorkerContext, out: Capped,
    err: Capped, finish: Callable[..., HostResult], stdin: bytes | None = None,
) -> HostResult:
    """Run `command` on the connected `client` and wait for its end: its `HostResult`.

    Raises `StaleConnection` when the connection proved dead before the command started.
    """
    started = start_command(client, host, command, context, out, err, finish, stdin)
    return started if isinstance(started, HostResult) else started.end()


def start_command(
    client: paramiko.SSHClient, host: Host, command: str, context: WorkerContext, out: Capped,
    err: Capped, finish: Callable[..., HostResult], stdin: bytes | None = None,
    on_first: Callable[[], object] | None = None,
) -> Running | HostResult:
    """Start `command` (its deadline armed): `Running`, whose `end` waits for the end; or the
    result, when it could not start. `on_first` (a plain command on a kept connection only)
    is called, once, when there is first something for `end` to do (output, the end).

    Raises `StaleConnection` when the connection proved dead before the command started.
    """
    timeout = host.command_timeout or 0.0  # resolve() filled it; 0 = no deadline
    transport = client.get_transport()
    assert isinstance(transport, FleetTransport)  # noqa: S101 - set by transport_factory
    options = context.options
    # --sudo: the gate wraps the command and stands between the channel's stderr and `err`.
    sudo = SudoGate(err, options.sudo_user, options.sudo_password) if options.sudo else None
    alarm = context.watchdog.arm(time.monotonic() + timeout, transport.sock) if timeout else None
    opening: Opening | None = None
    try:
        # A new connection has a session channel opened already, behind the user-auth
        # requests (pipeline.py); a kept one opens and execs without waiting in between.
        early = transport.early_session(timeout or transport.channel_timeout)
        if early is None and sudo is None and not stdin:  # no wait until the command ends
            channel, opening = open_and_exec(transport, command, out.listener is not None,
                                             on_first)
        else:
            assert on_first is None  # noqa: S101 - only plain commands on kept connections
            channel = early or transport.open_session(window_size=WINDOW_START,
                                                      timeout=timeout or None)
            install_pipes(channel, live=out.listener is not None)
            if sudo is None:
                send_exec(transport, channel, command, eof=not stdin)
                if stdin:
                    _send_stdin(channel, stdin)
            else:  # stdin waits until sudo has asked for the password or is done
                send_exec(transport, channel, sudo.wrap(command), eof=False)
                sudo.attach(channel, lambda: _send_stdin(channel, stdin))
    except Exception as error:
        if alarm is not None:
            alarm.cancel()
        if alarm is not None and alarm.fired:
            return finish(Status.TIMEOUT, f"command did not start within {timeout:g}s")
        if not transport.is_active() or isinstance(error, EOFError):  # a write found it dead
            raise StaleConnection() from None
        return finish(Status.PROTOCOL_ERROR, f"server refused the command channel: {error}")
    return Running(transport, channel, opening, alarm, timeout, out, err, sudo, finish,
                   context.bulk_readers)


class Running:
    """A command started on its channel; `end` drains it and reads how it ended."""

    def __init__(self, transport: FleetTransport, channel: Channel, opening: Opening | None,
                 alarm: Alarm | None, timeout: float, out: Capped, err: Capped,
                 sudo: SudoGate | None, finish: Callable[..., HostResult],
                 bulk_readers: threading.BoundedSemaphore) -> None:
        self.transport, self.channel, self.opening = transport, channel, opening
        self.alarm, self.timeout, self.sudo, self.finish = alarm, timeout, sudo, finish
        self.out, self.err, self.bulk_readers = out, err, bulk_readers

    def end(self) -> HostResult:
        """Wait for the command's end; its result. Raises `StaleConnection` when the
        connection proved dead before the command started."""
        channel, sudo, alarm = self.channel, self.sudo, self.alarm
        try:
            drain(channel, self.out, self.err if sudo is None else sudo, self.bulk_readers)
            if sudo is not None:
                sudo.close()
        finally:
            if alarm is not None:
                alarm.cancel()
        return self._how_it_ended()

    def _how_it_ended(self) -> HostResult:
        transport, channel, opening, alarm = self.transport, self.channel, self.opening, self.alarm
        finish, timeout, sudo = self.finish, self.timeout, self.sudo
        if opening is not None and opening.state in ("pending", "refused"):  # never started
            if alarm is not None and alarm.fired:
                return finish(Status.TIMEOUT, f"command did not start within {timeout:g}s")
            if not transport.is_active():
                raise StaleConnection()
            return finish(Status.PROTOCOL_ERROR, f"server refused the command channel: "
                          f"{opening.error}")
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
        if not channel.event_ready and transport.is_active():
            return finish(Status.PROTOCOL_ERROR, "server refused the command channel: "
                          "it refused to run the command")
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
