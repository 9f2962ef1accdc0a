"""The paramiko Transport as fleetexec drives it, and how a client is closed.

paramiko drops `exit-signal` (a killed command looks like exit -1), logs
dozens of lines per connection, its transport thread notices a local
close only at its next socket poll, and a close racing a send can put data on
a channel the server has freed (which OpenSSH answers by dropping the whole
connection). This subclass records the signal, stays silent, sends nothing on
a closed channel, and `close_client` shuts the socket down so the thread exits
at once.

It also sends without waiting where the protocol allows (`pipeline`): its
KEXINIT right behind its banner, before the server's banner is read (`banner`
reads that, capped, telling a MaxStartups drop apart); the user-auth requests
through `PipelinedAuth`; and a session channel opened behind each of them,
which `open_session` hands out once the server confirmed it. Its packets go
through `packet.FleetPacketizer` (a flight read or written at once).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import paramiko
from paramiko.channel import Channel
from paramiko.common import (
    MSG_CHANNEL_CLOSE,
    MSG_CHANNEL_FAILURE,
    MSG_CHANNEL_REQUEST,
    MSG_CHANNEL_WINDOW_ADJUST,
    MSG_UNIMPLEMENTED,
    cMSG_CHANNEL_WINDOW_ADJUST,
    cMSG_GLOBAL_REQUEST,
)
from paramiko.message import Message
from paramiko.ssh_exception import BadAuthenticationType, SSHException

from .banner import ClosedBeforeBanner, read_ahead
from .packet import FleetPacketizer
from .pipeline import (
    EarlyChannel,
    PipelinedAuth,
    early_channel_welcome,
    new_early_channel,
    send_early,
)

__all__ = ["FleetTransport", "close_client", "hang_up"]

# paramiko logs connection errors at WARNING; with no handler configured Python
# would print them on stderr, between our sanitised lines. Failures are reported
# as results instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

_WINDOW = 1024 * 1024
# The messages that name the server's channel right after their type byte (RFC 4254).
_CHANNEL_MESSAGES = (MSG_CHANNEL_WINDOW_ADJUST, MSG_CHANNEL_FAILURE)


def _handle_channel_request(chan: Channel, m: Message) -> None:
    # paramiko ignores `exit-signal` (a killed command looks like exit -1):
    # record it, hand every other request to paramiko as usual.
    start = m.packet.tell()
    if m.get_text() == "exit-signal":
        m.get_boolean()  # want_reply: never set for exit-signal (RFC 4254 6.10)
        transport = chan.transport
        if isinstance(transport, FleetTransport):
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


def _kex_order(available: Sequence[str]) -> tuple[str, ...]:
    """paramiko's key exchanges (those its cryptography supports), cheapest secure first."""
    first = ("mlkem768x25519-sha256", "ecdh-sha2-nistp256", "curve25519-sha256@libssh.org",
             "ecdh-sha2-nistp384", "ecdh-sha2-nistp521", "diffie-hellman-group14-sha256")
    return (*(k for k in first if k in available), *(k for k in available if k not in first))


class FleetTransport(paramiko.Transport):
    """A Transport that records exit signals and offers the cheapest secure algorithms first.

    Measured with `bench/algorithms.py` against OpenSSH 9.2 (N=200, `true`, medians of
    3-8 repeats, CPU ms per connection, sshd / this client; the results file is
    bench/results/2026-11-30-algorithms.md):

    - Key exchange: ecdh-sha2-nistp256 costs the sshd ~1.9 ms less per connection
      than curve25519 (17.4 against 19.3 over 8 repeats; the ranges do not overlap),
      because OpenSSH computes X25519 with its own portable reference C code and P-256
      with OpenSSL's assembly (perf: the difference is all in sshd's own code); OpenSSH's
      `ssh` client pays the same (8.6 against 10.3 ms). For paramiko both are OpenSSL:
      0.07 against 0.06 ms, lost in the noise of the ~4.5 ms per host. So P-256 comes
      before curve25519: both are 128-bit ECDH, both are in OpenSSH's default list and
      RFC 9142's "SHOULD"s; a server configured without NIST curves still gets curve25519.
      The post-quantum hybrid mlkem768x25519 stays first: a server that offers it
      (OpenSSH >= 9.9) gets protection against recorded traffic being decrypted later,
      which is worth more than a millisecond (OpenSSH 9.2 here does not offer it, so it
      is unmeasured). Finite-field DH is only a fallback and costs paramiko pow() in
      Python: group14-sha256 (2048-bit, 112-bit security, RFC 9142's "MUST") 26-27 ms,
      group-exchange 47-49 ms, group16 80-88 ms (two runs), so group14 comes first of them.
    - Ciphers: aes128-gcm is as cheap as anything here (AES-CTR with an EtM MAC costs
      the same within the noise on both ends) and needs no separate MAC.
    - MACs (used with CTR only): the encrypt-then-MAC SHA-2 ones first; nothing weaker
      than SHA-2 is offered (paramiko also lists hmac-sha1, hmac-md5 and truncated ones).
    - Host keys: SSHClient asks first for the key type known_hosts holds for the host,
      so known_hosts decides. ed25519 and ecdsa-p256 cost the same; an rsa-3072 host key
      costs the sshd ~2.1 ms more per connection (RSA signing).

    No SHA-1 key exchange, no CBC cipher and no ssh-rsa (SHA-1) host key signature is
    offered; paramiko's strict-kex (Terrapin) marker is added to the key exchange list by
    paramiko itself and is unchanged.
    """

    # The transport thread polls its socket this often to notice a local close;
    # paramiko's 0.1 s wakes every idle connection ten times a second. Our
    # closes shut the socket down first, which wakes the thread at once.
    _active_check_timeout = 1.0
    packetizer: FleetPacketizer
    _preferred_kex = _kex_order(paramiko.Transport._preferred_kex)  # type: ignore[attr-defined]
    _preferred_ciphers = (
        "aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
        "aes128-ctr", "aes192-ctr", "aes256-ctr",
    )
    _preferred_macs = (
        "hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com",
        "hmac-sha2-256", "hmac-sha2-512",
    )
    _channel_handler_table = {
        **paramiko.Transport._channel_handler_table,  # type: ignore[attr-defined]
        MSG_CHANNEL_REQUEST: _handle_channel_request,
    }

    def __init__(self, sock: socket.socket | Channel, *,
                 on_banner: Callable[[], object] | None = None,
                 early_channel: bool | None = None,
                 run_on: Callable[[Callable[[], None]], object] | None = None,
                 **kwargs: object) -> None:
        """`on_banner` is called (on the transport's thread) once the server's banner came;
        `early_channel` forces the channel opened behind the user-auth requests on or off
        (default: by the server's banner, `early_channel_welcome`). `run_on(job)` runs
        the transport's loop on a thread kept for it (a `Crew`'s), instead of the thread
        of its own that paramiko starts."""
        # A smaller window than paramiko's 2 MiB: a session waiting for a bulk
        # slot absorbs at most this much, so the bulk limit really limits.
        super().__init__(sock, default_window_size=_WINDOW, packetizer_class=FleetPacketizer,
                         **kwargs)  # type: ignore[arg-type]
        self.exit_signals: dict[int, str] = {}
        self._closed_channels: set[int] = set()  # server channel ids we have sent a close for
        self._closing = threading.Lock()
        self._alive_unanswered = 0
        # paramiko logs dozens of lines per connection; failures reach us as
        # results, so the per-packet logging calls are pure cost here.
        self.logger = _SILENT  # type: ignore[assignment]
        self.packetizer.set_log(_SILENT)  # type: ignore[arg-type]
        self.on_banner = on_banner
        self._run_on = run_on
        self._running = False  # run() started on run_on's thread...
        self._ended = threading.Event()  # ...and ended
        self._banner_read = False  # _check_banner started (our banner was written)
        self.banner_received = False
        self._kexinit_sent = False  # sent behind our banner...
        self._kexinit_skip = False  # ...so run()'s own first call must not send another
        self.early_channel = early_channel
        self._early: list[EarlyChannel] = []
        # The parsed known_hosts and the name a kept connection was last found trusted
        # under (WorkerContext.still_trusted).
        self.trusted_under: tuple[object, str] | None = None
        self._handler_table[MSG_UNIMPLEMENTED] = self._parse_unimplemented  # type: ignore[attr-defined]

    # -- the transport's thread: paramiko's own, or one kept for it (run_on) --------------
    def start(self) -> None:
        if self._run_on is None:
            super().start()
            return
        self._running = True
        self._run_on(self._run_and_end)

    def _run_and_end(self) -> None:
        try:
            self.run()
        finally:
            self._ended.set()

    def is_alive(self) -> bool:
        if self._run_on is None:
            return super().is_alive()
        return self._running and not self._ended.is_set()

    def join(self, timeout: float | None = None) -> None:
        if self._run_on is None:
            super().join(timeout)
            return
        self._ended.wait(timeout)

    # -- banner and KEXINIT ------------------------------------------------------------
    def start_client(self, event: threading.Event | None = None,
                     timeout: float | None = None) -> None:
        self.packetizer.hold()  # run() writes our banner first: it goes with our KEXINIT
        super().start_client(event, timeout)

    def _check_banner(self) -> None:
        if self.server_mode:
            super()._check_banner()  # type: ignore[misc]
            return
        # Our KEXINIT goes right behind our banner (run() wrote it): the server's KEXINIT
        # waits for our banner, and nothing of ours waits for the server's banner.
        self._banner_read = True
        try:
            try:
                super()._send_kex_init()  # type: ignore[misc]
            finally:
                self.packetizer.release()  # our banner (held by start_client) and KEXINIT
            self._kexinit_sent = self._kexinit_skip = True  # only once it was written
        except (EOFError, OSError):
            pass  # the server is gone already: the read below tells how
        read_ahead(self.packetizer, self.banner_timeout)
        super()._check_banner()  # type: ignore[misc]  # parses what read_ahead gave back
        self.banner_received = True
        if not self._kexinit_sent:
            raise EOFError()
        if self.early_channel is None:
            self.early_channel = early_channel_welcome(self.remote_version)
        if self.on_banner is not None:
            self.on_banner()

    def closed_before_banner(self, error: BaseException) -> bool:
        """Whether `error` (what the handshake failed with) means the server hung up before
        saying anything: before its banner, or even before ours was written."""
        return isinstance(error, ClosedBeforeBanner) or (
            isinstance(error, EOFError | OSError) and not self._banner_read)

    def _send_kex_init(self) -> None:
        if self._kexinit_skip:  # run() asks for the first one; it went with our banner
            self._kexinit_skip = False
            return
        super()._send_kex_init()  # type: ignore[misc]

    # -- authentication: pipelined (see pipeline.py) -------------------------------------
    def _pipelined_auth(self) -> PipelinedAuth:
        if not self.active or not self.initial_kex_done:  # type: ignore[attr-defined]
            raise SSHException("No existing session")  # paramiko's words, for our callers
        if not isinstance(self.auth_handler, PipelinedAuth):
            self.auth_handler = PipelinedAuth(self)
        return self.auth_handler

    def auth_none(self, username: str) -> list[str]:
        return self._pipelined_auth().auth_none(username)

    def auth_publickey(self, username: str, key: paramiko.PKey,
                       event: Any = None) -> list[str]:
        if event is not None or self.server_mode:
            result: list[str] = super().auth_publickey(username, key, event)
            return result
        return self._pipelined_auth().auth_publickey(username, key)

    def auth_password(self, username: str, password: str, event: Any = None,
                      fallback: bool = True) -> list[str]:
        if event is not None or self.server_mode:
            result: list[str] = super().auth_password(username, password, event, fallback)
            return result
        try:
            return self._pipelined_auth().auth_password(username, password)
        except BadAuthenticationType as error:
            # As paramiko: no "password", but "keyboard-interactive" with one prompt.
            if not fallback or "keyboard-interactive" not in error.allowed_types:
                raise
            try:
                return self.auth_interactive(username, _one_answer(password))
            except SSHException:
                raise error from None

    def auth_interactive(self, username: str, handler: Callable[..., list[str]],
                         submethods: str = "") -> list[str]:
        return self._pipelined_auth().auth_interactive(username, handler, submethods)

    # -- the session channel opened behind the user-auth request -------------------------
    def new_early(self) -> tuple[EarlyChannel, Message] | None:
        """A session channel to ask for behind the user-auth request about to be sent (one
        per request: a channel asked for before a rejection is refused), and its
        CHANNEL_OPEN for `send_early`; None when the server gets none."""
        if self.early_channel and self.active:  # type: ignore[attr-defined]
            return new_early_channel(self)
        return None

    def send_early(self, early: EarlyChannel, message: Message) -> None:
        """Send the CHANNEL_OPEN of `new_early`'s channel now, without waiting."""
        send_early(self, early, message, self._early.append)

    def open_session(self, window_size: int | None = None, max_packet_size: int | None = None,
                     timeout: float | None = None) -> Channel:
        if window_size is None and max_packet_size is None:
            chan = self._take_early(self.channel_timeout if timeout is None else timeout)
            if chan is not None:  # with the window this caller expects (SFTP reads with it)
                _widen_window(self, chan, self.default_window_size)
                return chan
        return super().open_session(window_size, max_packet_size, timeout)

    def early_session(self, timeout: float) -> Channel | None:
        """The session channel opened behind the user-auth requests, once the server
        confirmed it; None if there is none (a kept connection) or the server refused or
        closed it."""
        return self._take_early(timeout)

    def _take_early(self, timeout: float) -> Channel | None:
        """The newest early channel once the server confirmed it; None when refused (then
        the caller opens one as usual). Older ones were asked for before a rejection."""
        waiting = [e for e in self._early if e.state in ("pending", "open")]
        if not waiting:
            return None
        newest = waiting[-1]
        deadline = time.monotonic() + timeout
        while not newest.event.wait(0.1):
            if not self.active or time.monotonic() > deadline:  # type: ignore[attr-defined]
                return None
        for other in waiting[:-1]:
            self._abandon(other)
        # Those answered are forgotten: only what may still be answered is looked up.
        self._early = [e for e in self._early if e.state in ("pending", "abandoned")
                       and e is not newest]
        if newest.state != "open" or newest.chan.closed:  # refused, or closed while idle
            return None
        newest.state = "taken"
        return newest.chan

    def _abandon(self, early: EarlyChannel) -> None:
        """An older early channel is not needed: closed if the server opened it (or later)."""
        opened = early.state == "open"
        early.state = "abandoned"
        if opened:
            with contextlib.suppress(Exception):
                early.chan.close()

    def _early_by(self, chanid: int | None = None, seqno: int | None = None
                  ) -> EarlyChannel | None:
        """The early channel still awaiting the server's answer with this channel number (they
        are reused once refused) or packet sequence number."""
        for early in self._early:
            if early.state in ("pending", "abandoned") and (
                    early.chanid == chanid or early.seqno == seqno):
                return early
        return None

    def _parse_channel_open_success(self, m: Message) -> None:
        start = m.packet.tell()
        early = self._early_by(chanid=m.get_int())
        reused = m.get_int()  # the server may give a freed channel id to a new channel
        m.packet.seek(start)
        with self._closing:
            self._closed_channels.discard(reused)
        if early is not None and early.state == "pending":
            early.state = "open"  # before paramiko sets the event _take_early waits on
        super()._parse_channel_open_success(m)  # type: ignore[misc]
        if early is not None:
            early.event.set()
            if early.state == "abandoned":  # asked for before a rejection, opened anyway
                early.state = "closed"
                with contextlib.suppress(Exception):
                    early.chan.close()

    def _parse_channel_open_failure(self, m: Message) -> None:
        start = m.packet.tell()
        early = self._early_by(chanid=m.get_int())
        if early is None:
            m.packet.seek(start)
            super()._parse_channel_open_failure(m)  # type: ignore[misc]
            return
        self._refuse(early)  # an early one: no saved_exception, the caller opens anew

    def _parse_unimplemented(self, m: Message) -> None:
        # OpenSSH's answer to a channel opened before the authentication succeeded.
        early = self._early_by(seqno=m.get_int())
        if early is not None:
            self._refuse(early)

    def _refuse(self, early: EarlyChannel) -> None:
        with self.lock:
            self._channels.delete(early.chanid)  # type: ignore[attr-defined]
            event = self.channel_events.pop(early.chanid, None)
        early.state = "refused"
        early.event.set()
        if event is not None:
            event.set()

    # paramiko filters each list against `disabled_algorithms` on every read (16 reads
    # and ~100 generator steps per connection); fleetexec disables none, so the
    # lists are returned as they are. (preferred_keys also lists the -cert variants.)
    def _offered(self, kind: str) -> Sequence[str]:
        if self.disabled_algorithms:
            filtered: Sequence[str] = self._filter_algorithm(kind)  # type: ignore[attr-defined]
            return filtered
        offered: Sequence[str] = getattr(self, "_preferred_" + kind)
        return offered

    @property
    def preferred_kex(self) -> Sequence[str]:
        return self._offered("kex")

    @property
    def preferred_keys(self) -> Sequence[str]:
        keys = tuple(self._offered("keys"))
        return keys + tuple([f"{key}-cert-v01@openssh.com" for key in keys])

    @property
    def preferred_ciphers(self) -> Sequence[str]:
        return self._offered("ciphers")

    @property
    def preferred_macs(self) -> Sequence[str]:
        return self._offered("macs")

    @property
    def preferred_compression(self) -> Sequence[str]:
        return self._offered("compression")

    @property
    def preferred_pubkeys(self) -> Sequence[str]:
        return self._offered("pubkeys")

    def _log(self, level: int, msg: object, *args: object) -> None:
        pass  # self.logger is silent anyway: this skips the call into it (~35 per host)

    def _send_message(self, data: Message) -> None:
        # paramiko checks that a channel is open, lets go of its lock, then sends: another
        # thread's close can go out in between, and OpenSSH's answer to data on a channel
        # it has freed is to drop the whole connection ("data packet referred to
        # nonexistent channel"): through a bastion, every host behind it. So nothing is
        # sent on a channel after its close. (Here, not in _send_user_message: that one
        # waits for a key exchange to end, which must not happen under our lock.)
        view = data.packet.getbuffer()
        kind = view[0]
        channel = int.from_bytes(view[1:5], "big") if _CHANNEL_MESSAGES[0] <= kind <= \
            _CHANNEL_MESSAGES[1] else None
        view.release()
        if channel is None:
            super()._send_message(data)  # type: ignore[misc]
            return
        with self._closing:
            if channel in self._closed_channels:
                return
            if kind == MSG_CHANNEL_CLOSE:
                self._closed_channels.add(channel)
            super()._send_message(data)  # type: ignore[misc]

    def _parse_debug(self, m: Message) -> None:
        pass  # server debug messages: paramiko formats them byte by byte only to log them

    def start_keepalive(self, interval: int, count_max: int | None = None) -> None:
        """ServerAliveInterval / ServerAliveCountMax, as ssh does them: after `interval`
        seconds without traffic, ask the server for an answer; once more than
        `count_max` (default 3) asks went unanswered, hang up, so the host ends
        `connection_lost` instead of waiting for its command deadline."""
        limit = 3 if count_max is None else count_max

        def ask() -> None:  # runs on the transport's own thread
            self._alive_unanswered += 1
            if self._alive_unanswered > limit:
                hang_up(self.sock)
                return
            message = Message()
            message.add_byte(cMSG_GLOBAL_REQUEST)
            message.add_string("keepalive@openssh.com")
            message.add_boolean(True)  # want a reply: that is the point
            self._send_user_message(message)  # type: ignore[attr-defined]

        self._alive_unanswered = 0
        self.packetizer.set_keepalive(interval, ask)

    def _parse_request_success(self, m: Message) -> None:
        self._alive_unanswered = 0
        super()._parse_request_success(m)  # type: ignore[misc]

    def _parse_request_failure(self, m: Message) -> None:
        self._alive_unanswered = 0  # "request failed" is an answer too
        super()._parse_request_failure(m)  # type: ignore[misc]


def _widen_window(transport: FleetTransport, chan: Channel, size: int) -> None:
    """Grant the server a window of `size` on `chan` (opened with a smaller one)."""
    more = size - chan.in_window_size
    if more <= 0:
        return
    chan.in_window_size, chan.in_window_threshold = size, size // 10
    message = Message()
    message.add_byte(cMSG_CHANNEL_WINDOW_ADJUST)
    message.add_int(chan.remote_chanid)
    message.add_int(more)
    transport._send_user_message(message)  # type: ignore[attr-defined]


def _one_answer(answer: str) -> Callable[..., list[str]]:
    def handler(title: str, instructions: str, fields: list[tuple[str, bool]]) -> list[str]:
        if len(fields) > 1:
            raise SSHException("Fallback authentication failed.")
        return [answer] if fields else []

    return handler


def close_client(client: paramiko.SSHClient) -> None:
    """Close `client` now; never raises (the host's result is already made: a close that
    fails must not lose it)."""
    transport = client.get_transport()
    if transport is not None:
        hang_up(transport.sock)  # wakes the transport thread now, not at its poll
    with contextlib.suppress(Exception):
        client.close()


def hang_up(sock: object) -> None:
    """End a connection now, waking whatever reads it: a socket is shut down; a channel
    through a bastion, whose `shutdown` wakes no reader, is closed."""
    with contextlib.suppress(OSError, EOFError):
        if isinstance(sock, Channel):
            sock.close()
        elif isinstance(sock, socket.socket):
            sock.shutdown(socket.SHUT_RDWR)
