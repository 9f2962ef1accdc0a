"""Counting round trips without a clock: a lock-step connection between an SSH client and server.

`LockstepPipe` is an in-memory connection with two socket-like ends (`recv`,
`send`, timeouts, `shutdown`; no `MSG_PEEK`, no socket options: what a paramiko
`Channel` offers too). What the client sends reaches the server at once; what the
server sends is held back, and handed to the client in one piece at a *tick*:
when the server is idle (blocked reading, nothing unread) and the client is too
(its transport thread blocked reading, its session thread waiting on an event).
A tick that hands over data after the client sent something since the last one
is a round trip: the client had to wait for the server's answer to go on.

This is how a network with a long round-trip time would order things (everything
one side sends before it waits arrives together, and the other side answers all
of it), with no timing involved: the count is the same on a loaded machine. The
server must answer only when asked (`ReactiveServer` runs the exec request's
"command" on its transport thread, so its answer is complete when it waits).
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable

import paramiko
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    MSG_CHANNEL_CLOSE,
    MSG_CHANNEL_OPEN,
    MSG_CHANNEL_REQUEST,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
    cMSG_UNIMPLEMENTED,
)
from paramiko.message import Message

_BLOCKING_WAIT = threading.Condition.wait.__code__  # where Event.wait really blocks


class _End:
    """One end of the pipe, socket-like."""

    def __init__(self, pipe: LockstepPipe, side: str) -> None:
        self.pipe, self.side = pipe, side
        self.timeout: float | None = None
        self._closed = False  # the name paramiko looks at (socket.socket._closed)

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def gettimeout(self) -> float | None:
        return self.timeout

    def setsockopt(self, *args: object) -> None:
        pass  # connect() sets TCP_NODELAY on what it believes is a TCP socket

    def recv(self, size: int) -> bytes:
        return self.pipe.read(self.side, size, self.timeout)

    def send(self, data: bytes) -> int:
        self.pipe.write(self.side, bytes(data))
        return len(data)

    def sendall(self, data: bytes) -> None:
        self.send(data)

    def shutdown(self, how: int) -> None:
        self.pipe.hang_up(self.side)

    def close(self) -> None:
        self._closed = True
        self.pipe.hang_up(self.side)


class LockstepPipe:
    """See the module docstring. `rounds` counts round trips; `session_thread` (the
    thread that runs the client's connect and command) must be set by the test."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.to_server = bytearray()
        self.held = bytearray()
        self.to_client = bytearray()
        self.blocked = {"client": False, "server": False}
        self.gone = {"client": False, "server": False}
        self.sent_since_tick = False
        self.rounds = 0
        self.flights: list[int] = []  # bytes handed over at each counted tick
        self.session_thread: int | None = None
        self.client, self.server = _End(self, "client"), _End(self, "server")
        self._stop = False
        self._ticker = threading.Thread(target=self._tick_loop, daemon=True)
        self._ticker.start()

    # -- the two ends --------------------------------------------------------------
    def read(self, side: str, size: int, timeout: float | None) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            buffer = self.to_client if side == "client" else self.to_server
            other = "server" if side == "client" else "client"
            while not buffer:
                if self.gone[other] or self.gone[side]:
                    if side == "client" and self.held:
                        self._hand_over()  # what the server said before it hung up
                        continue
                    return b""
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    self.blocked[side] = False
                    raise TimeoutError("timed out")
                self.blocked[side] = True
                self.cond.notify_all()
                self.cond.wait(remaining)
            self.blocked[side] = False
            data = bytes(buffer[:size])
            del buffer[:size]
            return data

    def write(self, side: str, data: bytes) -> None:
        with self.cond:
            if self.gone[side]:
                raise BrokenPipeError("closed")
            if side == "client":
                self.to_server += data
                self.sent_since_tick = True
            else:
                self.held += data
            self.cond.notify_all()

    def hang_up(self, side: str) -> None:
        with self.cond:
            self.gone[side] = True
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self._stop = True
            self.cond.notify_all()

    # -- ticks -----------------------------------------------------------------------
    def _session_waiting(self) -> bool:
        """Whether the client's session thread is blocked in a wait (on an event)."""
        if self.session_thread is None:
            return False
        frame = sys._current_frames().get(self.session_thread)  # noqa: SLF001
        return frame is None or frame.f_code is _BLOCKING_WAIT

    def _tick_loop(self) -> None:
        with self.cond:
            while not self._stop:
                ready = (self.held and self.blocked["client"] and self.blocked["server"]
                         and not self.to_server and self._session_waiting())
                if ready:
                    self._hand_over()
                else:
                    self.cond.wait(0.001)

    def _hand_over(self) -> None:
        if self.sent_since_tick:
            self.rounds += 1
            self.flights.append(len(self.held))
            self.sent_since_tick = False
        self.to_client += self.held
        self.held.clear()
        self.cond.notify_all()


class ReactiveServer(paramiko.ServerInterface):
    """A paramiko SSH server that answers only when asked: `accepted` is the one public key
    it lets in; an exec request runs nothing and ends at once with exit status 0.

    `channels`: "normal" (paramiko refuses a channel opened before the authentication
    succeeded with CHANNEL_OPEN_FAILURE), "unimplemented" (answers it with UNIMPLEMENTED,
    as OpenSSH does), "refuse-first" (refuses the first session channel whenever it
    comes, as a server that opens channels only after its authentication finished
    elsewhere would) or "pre-auth" (opens channels before any authentication succeeded:
    a lax server). `closed` counts the channels the client closed.
    """

    def __init__(self, end: _End, host_key: paramiko.PKey, accepted: paramiko.PKey,
                 channels: str = "normal") -> None:
        self.accepted, self.channels = accepted, channels
        self.opened = 0
        self.auth_requests: list[str] = []
        self.transport = paramiko.Transport(end)  # type: ignore[arg-type]
        self.transport.add_server_key(host_key)
        table = dict(paramiko.Transport._channel_handler_table)  # type: ignore[attr-defined]
        table[MSG_CHANNEL_REQUEST] = self._channel_request
        self.transport._channel_handler_table = table  # type: ignore[attr-defined]
        if channels == "unimplemented":
            ensure: Callable[[int, Message], Message | None] = self.transport._ensure_authed  # type: ignore[attr-defined]

            def unimplemented(ptype: int, m: Message) -> Message | None:
                if ptype == MSG_CHANNEL_OPEN and not self.transport.is_authenticated():
                    reply = Message()
                    reply.add_byte(cMSG_UNIMPLEMENTED)
                    reply.add_int(m.seqno)  # type: ignore[attr-defined]
                    return reply
                return ensure(ptype, m)

            self.transport._ensure_authed = unimplemented  # type: ignore[attr-defined]
        if channels == "pre-auth":
            self.transport._ensure_authed = lambda ptype, m: None  # type: ignore[attr-defined]
        self.closed = 0
        table[MSG_CHANNEL_CLOSE] = self._channel_close
        self.transport.start_server(event=threading.Event(), server=self)  # not blocking

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        self.auth_requests.append(key.get_base64())
        return AUTH_SUCCESSFUL if key == self.accepted else AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        self.opened += 1
        if kind != "session" or (self.channels == "refuse-first" and self.opened == 1):
            return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        return OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        return True

    def _channel_request(self, channel: paramiko.Channel, m: Message) -> None:
        start = m.packet.tell()
        kind = m.get_text()
        m.packet.seek(start)
        paramiko.Channel._handle_request(channel, m)  # type: ignore[attr-defined]
        if kind == "exec":  # the "command" ends at once, on this thread: a complete answer
            channel.send_exit_status(0)
            channel.shutdown_write()
            channel.close()

    def _channel_close(self, channel: paramiko.Channel, m: Message) -> None:
        if not channel.closed:  # the client's close, not the answer to ours
            self.closed += 1
        paramiko.Channel._handle_close(channel, m)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.transport.close()


def hand_over(pipe: LockstepPipe) -> Callable[..., socket.socket]:
    """A stand-in for `connect._create_connection`: the pipe's client end, once."""
    def create_connection(host: object, timeout: float) -> socket.socket:
        pipe.session_thread = threading.get_ident()
        return pipe.client  # type: ignore[return-value]

    return create_connection
