"""What the client sends without waiting for an answer: fewer round trips per host.

paramiko waits for every answer before its next request. The protocol does not
ask for that, and each wait costs a round trip. With one accepted key, a command
here takes four flights (plus TCP):

1. our banner and KEXINIT, at once (paramiko sent KEXINIT only after reading the
   server's banner, and sshd sends its KEXINIT only after reading ours);
2. the key exchange's ECDH init (it needs the server's KEXINIT);
3. NEWKEYS, SERVICE_REQUEST ssh-userauth, USERAUTH_REQUEST (signed) and
   CHANNEL_OPEN session, in one go: the user-auth request need not wait for the
   service accept, and RFC 4252 lets a client send requests without waiting for
   answers; the server handles them in order, so the channel is opened as soon as
   the authentication succeeded;
4. the exec request, which names the server's channel number from (3)'s answer.

Each rejected key costs one more flight (paramiko: two, as it asks for the
ssh-userauth service again before each key). The user-auth request is signed at
once, as paramiko always did: a "query" first (publickey without signature, as
OpenSSH sends) would cost a round trip for the accepted key and save only a
signature (microseconds for a key in memory, a local call for an agent's) on a
rejected one, since keys are tried one after another either way.

Falling back: a server answers a CHANNEL_OPEN it received before the
authentication succeeded (a rejected key, a second factor still due) with
CHANNEL_OPEN_FAILURE (paramiko) or UNIMPLEMENTED (OpenSSH, naming the packet's
sequence number); the channel is then opened again, normally, once the
authentication succeeded. Some servers instead drop the connection (Dropbear:
"Received message 90 before userauth"); so the early channel is sent only to
servers whose banner says they answer instead (`early_channel_welcome`), and
only the first flights of anything else are pipelined.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from paramiko.auth_handler import AuthHandler
from paramiko.channel import Channel
from paramiko.common import (
    MSG_SERVICE_ACCEPT,
    cMSG_CHANNEL_OPEN,
    cMSG_SERVICE_REQUEST,
    cMSG_USERAUTH_REQUEST,
)
from paramiko.message import Message
from paramiko.pkey import PKey
from paramiko.util import b

from .drain import WINDOW_START

if TYPE_CHECKING:
    from .transport import FleetTransport

__all__ = [
    "EarlyChannel", "PipelinedAuth", "early_channel_welcome", "hold_clear_to_send",
    "session_channel",
]

E = TypeVar("E", bound=threading.Event)

# Servers known to answer a channel opened before the authentication succeeded
# (rather than hang up), and to keep it for after the authentication when it succeeds.
_EARLY_CHANNEL_SOFTWARE = ("OpenSSH_", "paramiko_")
# paramiko's packetizer keeps these name-mangled: the sequence number of the next packet
# we send (UNIMPLEMENTED names a packet by it) and the lock that orders sending.
_SEQ_OUT = "_Packetizer__sequence_number_out"
_WRITE_LOCK = "_Packetizer__write_lock"


def early_channel_welcome(remote_version: str) -> bool:
    """Whether the server (by its banner, ``SSH-2.0-OpenSSH_9.2p1 ...``) may be sent a
    CHANNEL_OPEN before its authentication answer."""
    parts = remote_version.split("-", 2)
    return len(parts) == 3 and parts[2].startswith(_EARLY_CHANNEL_SOFTWARE)


class EarlyChannel:
    """A session channel asked for behind a user-auth request: `state` is "pending"
    until the server answers, then "open" or "refused"."""

    __slots__ = ("chan", "chanid", "event", "seqno", "state")

    def __init__(self, chan: Channel, seqno: int, event: threading.Event,
                 state: str = "pending") -> None:
        # The transport maps channel numbers to channels weakly: this keeps it alive.
        self.chan, self.chanid, self.seqno, self.event = chan, chan.chanid, seqno, event
        self.state = state  # pending, open, refused; taken (handed out) or abandoned


def session_channel(fleet: FleetTransport, event_for: Callable[[Channel], E]
                    ) -> tuple[Channel, E, Message]:
    """A session channel registered as `Transport.open_channel` registers one (with the
    drain's small window), the event the transport sets when the server answers, made by
    `event_for(channel)`, and its CHANNEL_OPEN, not sent yet."""
    transport: Any = fleet  # paramiko's private parts, which its type stubs leave out
    window = WINDOW_START  # as the drain's flow control expects of any session channel
    packet = transport._sanitize_packet_size(None)  # noqa: SLF001
    with transport.lock:
        chanid = transport._next_channel()  # noqa: SLF001
        m = Message()
        m.add_byte(cMSG_CHANNEL_OPEN)
        m.add_string("session")
        m.add_int(chanid)
        m.add_int(window)
        m.add_int(packet)
        chan = Channel(chanid)
        transport._channels.put(chanid, chan)  # noqa: SLF001
        transport.channel_events[chanid] = event = event_for(chan)
        transport.channels_seen[chanid] = True
        chan._set_transport(transport)  # type: ignore[attr-defined]  # noqa: SLF001
        chan._set_window(window, packet)  # type: ignore[attr-defined]  # noqa: SLF001
    return chan, event, m


def new_early_channel(fleet: FleetTransport) -> tuple[EarlyChannel, Message]:
    """A session channel to open ahead, and its CHANNEL_OPEN (`send_early` sends it)."""
    chan, event, m = session_channel(fleet, lambda chan: threading.Event())
    return EarlyChannel(chan, -1, event), m


def send_early(fleet: FleetTransport, early: EarlyChannel, m: Message,
               register: Callable[[EarlyChannel], None]) -> None:
    """Send `early`'s CHANNEL_OPEN now, without waiting for the answer. `register` gets
    the channel (its sequence number known) before it is sent, so the transport's
    handlers know it when the answer comes; a channel that could not be sent is
    forgotten."""
    def numbered(seqno: int) -> None:
        early.seqno = seqno
        register(early)

    if not send_numbered(fleet, m, numbered):
        transport: Any = fleet
        with transport.lock:
            transport._channels.delete(early.chanid)  # noqa: SLF001
            transport.channel_events.pop(early.chanid, None)


def hold_clear_to_send(transport: Any, wait: bool = True) -> bool:
    """Take the transport's `clear_to_send_lock` with no key exchange running, waiting
    for one to end as paramiko's `_send_user_message` does (`wait`); True once held
    (the caller releases it). False, holding nothing, when the connection is not
    active, the wait timed out, or (without `wait`) a key exchange runs or another
    thread holds the lock: the transport's own thread must never wait for that."""
    lock, clear = transport.clear_to_send_lock, transport.clear_to_send
    if not wait:
        if not lock.acquire(blocking=False):
            return False
        if clear.is_set():
            return True
        lock.release()
        return False
    deadline = time.monotonic() + transport.clear_to_send_timeout
    while True:
        clear.wait(0.1)
        if not transport.active:
            return False
        lock.acquire()
        if clear.is_set():
            return True
        lock.release()
        if time.monotonic() > deadline:
            return False


def send_numbered(fleet: FleetTransport, m: Message,
                  numbered: Callable[[int], None] = lambda seqno: None) -> bool:
    """Send `m` as a user message (after the key exchange); `numbered` gets its sequence
    number just before it goes. False if the connection died first."""
    transport: Any = fleet
    packetizer = transport.packetizer
    if packetizer.corked_here():
        # The write lock is ours: a key exchange that starts now sends its KEXINIT after
        # this message, which is allowed; one that started before has cleared the flag.
        if not transport.active or not transport.clear_to_send.is_set():
            return False
        numbered(getattr(packetizer, _SEQ_OUT))
        transport._send_message(m)  # noqa: SLF001
        return True
    if not hold_clear_to_send(transport):
        return False  # dropped, as paramiko drops user messages on a dead connection
    try:
        with getattr(packetizer, _WRITE_LOCK):
            numbered(getattr(packetizer, _SEQ_OUT))
            transport._send_message(m)  # noqa: SLF001
    finally:
        transport.clear_to_send_lock.release()
    return True


class PipelinedAuth(AuthHandler):
    """paramiko's client `AuthHandler`, sending without waiting where the protocol allows.

    One SERVICE_REQUEST per connection, sent together with the first user-auth
    request (the SERVICE_ACCEPT is merely noted); each request is followed at once
    by the early session channel (`FleetTransport.new_early`), then answered as
    paramiko's handler answers it.
    """

    def __init__(self, transport: FleetTransport) -> None:
        super().__init__(transport)
        self.service_requested = False
        self.service_accepted = False

    @property
    def _client_handler_table(self) -> dict[int, Callable[[Message], None]]:
        table: dict[int, Callable[[Message], None]] = dict(
            super()._client_handler_table)  # type: ignore[misc]
        table[MSG_SERVICE_ACCEPT] = self._note_service_accept
        return table

    def _note_service_accept(self, m: Message) -> None:
        # paramiko's handler sends its user-auth request from here; ours went already.
        if m.get_text() == "ssh-userauth":
            self.service_accepted = True

    def send_request(self, username: str, method: str,
                     finish: Callable[[Message], None] = lambda m: None) -> list[str]:
        """Send one USERAUTH_REQUEST (after the service request, the first time) and the
        early channel; wait for the answer as paramiko does (raises on failure)."""
        m = Message()
        m.add_byte(cMSG_USERAUTH_REQUEST)
        m.add_string(username)
        m.add_string("ssh-connection")
        m.add_string(method)
        finish(m)
        self.auth_method, self.username = method, username
        self.auth_event = event = threading.Event()
        transport: Any = self.transport
        early = transport.new_early()  # allocated first: its lock is never taken inside
        with transport.packetizer.corked():  # one write for the flight, in order
            if not self.service_requested:
                request = Message()
                request.add_byte(cMSG_SERVICE_REQUEST)
                request.add_string("ssh-userauth")
                transport._send_message(request)
                self.service_requested = True
            transport._send_message(m)
            if early is not None:
                transport.send_early(*early)
        result: list[str] = self.wait_for_response(event)
        return result

    def auth_publickey(self, username: str, key: PKey) -> list[str]:  # type: ignore[override]
        handler: Any = self  # AuthHandler's helpers, which its type stubs leave out
        key_type, bits = handler._get_key_type_and_bits(key)
        algorithm = handler._finalize_pubkey_algorithm(key_type)
        blob = handler._get_session_blob(key, "ssh-connection", username, algorithm)

        def finish(m: Message) -> None:
            m.add_boolean(True)  # signed: no query first (see the module docstring)
            m.add_string(algorithm)
            m.add_string(bits)
            m.add_string(key.sign_ssh_data(blob, algorithm))

        return self.send_request(username, "publickey", finish)

    def auth_password(self, username: str, password: str) -> list[str]:  # type: ignore[override]
        def finish(m: Message) -> None:
            m.add_boolean(False)
            m.add_string(b(password))

        return self.send_request(username, "password", finish)

    def auth_interactive(self, username: str, handler: Callable[..., list[str]],  # type: ignore[override]
                         submethods: str = "") -> list[str]:
        self.interactive_handler = handler

        def finish(m: Message) -> None:
            m.add_string("")
            m.add_string(submethods)

        return self.send_request(username, "keyboard-interactive", finish)

    def auth_none(self, username: str) -> list[str]:  # type: ignore[override]
        return self.send_request(username, "none")
