"""Starting a command: open a session channel and exec on it, without waiting in between.

paramiko's `open_session` blocks the session thread until the server confirms
the channel, and `exec_command` again until it answers the request: two
wake-ups of the session thread (and two round trips) per command before any
output. Over a kept connection, where a command costs little else, those
wake-ups were a large part of the client's CPU with hundreds of sessions in
one process. Here the transport thread, on the server's confirmation, sends
exec and EOF itself (as paramiko itself answers a channel close from that
thread), and the session thread waits once, for the command's end.

The transport thread never blocks for this: during a key exchange (or while
another thread is sending on the connection) the exec is sent by a helper
thread instead, as soon as the connection is clear to send.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from paramiko.channel import Channel
from paramiko.common import cMSG_CHANNEL_REQUEST
from paramiko.message import Message
from paramiko.ssh_exception import SSHException

from .drain import install_pipes
from .pipeline import hold_clear_to_send, session_channel
from .transport import FleetTransport

__all__ = ["Opening", "exec_request", "open_and_exec", "send_exec"]


def exec_request(channel: Channel, command: str) -> Message:
    """The `exec` request for `command` on `channel` (answer wanted), channel marked pending."""
    if channel.closed or channel.eof_received or channel.eof_sent or not channel.active:
        raise SSHException("Channel is not open")
    message = Message()
    message.add_byte(cMSG_CHANNEL_REQUEST)
    message.add_int(channel.remote_chanid)
    message.add_string("exec")
    message.add_boolean(True)
    message.add_string(command)
    channel._event_pending()  # type: ignore[attr-defined]
    return message


class Opening(threading.Event):
    """Stands where paramiko's `open_channel` keeps the event it waits on; the transport
    thread sets it when the server answers the channel open, and then (on success)
    sends the command.

    `state`: "pending" (no answer yet), "sent" (exec and EOF are on their way),
    "deferred" (a helper thread sends them), "refused" (the server refused the
    channel: the channel is closed, `error` says why).
    """

    def __init__(self, transport: FleetTransport, channel: Channel, command: str) -> None:
        super().__init__()
        self.transport, self.channel, self.command = transport, channel, command
        self.state = "pending"
        self.error: str | None = None

    def set(self) -> None:  # the transport thread, holding transport.lock
        if self.channel.active:
            self.state = "sent" if self._send(blocking=False) else "deferred"
            if self.state == "deferred":
                threading.Thread(target=self._send, args=(True,), daemon=True).start()
        else:  # an open failure: paramiko dropped the channel; close it for the drain
            error = self.transport.saved_exception
            self.error = str(error) if error is not None else "channel open refused"
            self.state = "refused"
            with self.channel.lock:
                self.channel._set_closed()  # type: ignore[attr-defined]
        super().set()

    def _send(self, blocking: bool) -> bool:
        """exec, then EOF (no input), if the connection is clear to send; False if not."""
        try:
            return send_exec(self.transport, self.channel, self.command, eof=True,
                             wait=blocking)
        except (OSError, EOFError, SSHException):
            return True  # the connection died: the drain ends, and the result says so


def send_exec(transport: FleetTransport, channel: Channel, command: str, eof: bool,
              wait: bool = True) -> bool:
    """Send the exec request for `command` and, with `eof`, end of input, in one write.

    As paramiko's `_send_user_message`, it waits while a key exchange runs (`wait`);
    without `wait` it sends nothing and returns False unless the connection is clear
    to send now (the transport's own thread must never wait for that). Raises
    `SSHException` if the channel is not open.
    """
    if not hold_clear_to_send(transport, wait):
        if not wait:
            return False
        if not transport.active:  # type: ignore[attr-defined]
            raise EOFError("connection closed")
        raise SSHException("Key-exchange timed out waiting for key negotiation")
    try:
        with transport.packetizer.corked():
            transport._send_message(exec_request(channel, command))
            if eof:
                with channel.lock:
                    message = channel._send_eof()  # type: ignore[attr-defined]
                if message is not None:
                    transport._send_message(message)
    finally:
        transport.clear_to_send_lock.release()
    return True


def open_and_exec(transport: FleetTransport, command: str, live: bool,
                  on_first: Callable[[], object] | None = None) -> tuple[Channel, Opening]:
    """A session channel (our pipes installed, `on_first` as `install_pipes` takes it) on
    which `command` runs with no input, once the server confirms it; returns at once.
    Raises `SSHException` if the connection is not active. What `open_channel` does, but
    the wait is the drain's."""
    if not transport.active:  # type: ignore[attr-defined]
        raise SSHException("SSH session not active")
    channel, opening, message = session_channel(
        transport, lambda channel: Opening(transport, channel, command))
    install_pipes(channel, live, on_first)  # before the open is sent: nothing came yet
    transport._send_user_message(message)  # type: ignore[attr-defined]
    return channel, opening
