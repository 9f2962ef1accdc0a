"""Loopback servers that misbehave at the TCP or SSH-banner level, for tests.

Each `FaultServer` binds an ephemeral port on one loopback address (any
127.x.y.z; anything else is refused), serves every connection from its own
thread, and stops cleanly on exit: sockets closed, threads joined.

    >>> with FaultServer("ssh1") as srv:                      # doctest: +SKIP
    ...     run_on_host(Host("h1", srv.address, port=srv.port), "true", opts)

Kinds (the numbers are rows of the fault catalogue, research/faults.md §2):

=================  ==========================================================
``tarpit``         accepts TCP, never sends a byte (12)
``blackhole``      SYNs are dropped, so ``connect()`` times out (11)
``http``           an HTTP 400 response, then close (15)
``binary``         4 KiB of (deterministic) random bytes, then close (15)
``lines``          200 junk lines carrying an OSC title escape, then silence (16)
``ssh1``           ``SSH-1.5-OpenSSH_1`` (17)
``banner-silence`` a valid SSH-2.0 banner, then nothing (19)
``bad-packet``     a valid banner, then bytes that are no SSH packet (18)
``no-newline``     ``SSH-2.0-`` and then ``cap`` bytes with no newline (20)
``slow-drip``      the banner one byte per ``interval``; ``endless=True``
                   never finishes the line (21, 22)
``accept-close``   accepts TCP and closes at once, before any byte: how a
                   firewall or an older sshd over ``MaxStartups`` drops (13)
``maxstartups``    ``Exceeded MaxStartups`` and a line end, then close: how
                   OpenSSH 9.2p1 drops a connection over ``MaxStartups`` (13)
=================  ==========================================================

`closed_port()` gives a port with nothing listening (row 9).
"""

from __future__ import annotations

import hashlib
import ipaddress
import selectors
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Final, Literal, get_args

__all__ = ["BANNER", "MAXSTARTUPS", "FaultKind", "FaultServer", "closed_port"]

FaultKind = Literal[
    "tarpit", "blackhole", "http", "binary", "lines", "ssh1",
    "banner-silence", "bad-packet", "no-newline", "slow-drip", "accept-close", "maxstartups",
]
BANNER: Final = b"SSH-2.0-OpenSSH_9.2\r\n"
_HTTP: Final = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 12\r\nConnection: close\r\n\r\nBad Request\n"
)
# A packet length of 0xffffffff is not a multiple of any cipher block size,
# so paramiko fails at once ("Invalid packet blocking") instead of waiting.
_BAD_PACKET: Final = b"\xff" * 64
# What sshd writes (best effort) before closing a connection over MaxStartups.
MAXSTARTUPS: Final = b"Exceeded MaxStartups\r\n"
_CHUNK: Final = 4096


def _check_loopback(address: str) -> str:
    if not ipaddress.IPv4Address(address).is_loopback:
        raise ValueError(f"fault servers bind loopback addresses only, not {address!r}")
    return address


def closed_port(address: str = "127.0.0.1") -> int:
    """Return a port on `address` where nothing listens (connect is refused).

    >>> socket.create_connection(("127.0.0.1", closed_port()))  # doctest: +SKIP
    ConnectionRefusedError: [Errno 111] Connection refused
    """
    with socket.socket() as sock:
        sock.bind((_check_loopback(address), 0))
        port: int = sock.getsockname()[1]
    return port


def _binary_bytes(size: int = 4096) -> bytes:
    # Deterministic "random" bytes (NUL, ESC, CR, LF included) so runs repeat.
    out = b"".join(hashlib.sha256(b"fleetexec-binary-%d" % i).digest() for i in range(size // 32))
    return out[:size]


class _Stop(Exception):
    """The server is stopping or the peer went away: end this connection."""


class FaultServer:
    """A misbehaving loopback server of one `kind`, used as a context manager.

    `address` is any 127.x.y.z; `port` is chosen by the kernel. `interval`
    paces ``slow-drip``; `endless` makes ``slow-drip`` never end the line;
    `cap` bounds ``no-newline``. `accepted` counts accepted connections.

    >>> with FaultServer("tarpit", "127.0.3.1") as srv:      # doctest: +SKIP
    ...     socket.create_connection((srv.address, srv.port))
    """

    def __init__(
        self, kind: FaultKind, address: str = "127.0.0.1", *,
        interval: float = 1.0, endless: bool = False, cap: int = 64 * 1024,
    ) -> None:
        if kind not in get_args(FaultKind):
            raise ValueError(f"unknown fault kind {kind!r}; one of {get_args(FaultKind)}")
        self.kind: FaultKind = kind
        self.address = _check_loopback(address)
        self.interval = interval
        self.endless = endless
        self.cap = cap
        self.accepted = 0
        self.port = 0
        self._listener: socket.socket | None = None
        self._fillers: list[socket.socket] = []
        # One byte is written on stop and never read, so the read end stays
        # readable: every thread waiting on it wakes, with no polling.
        self._wake_r, self._wake_w = socket.socketpair()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------
    def __enter__(self) -> FaultServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Bind and start serving (called by ``with``); on failure, clean up and raise."""
        listener = self._listener = socket.socket()
        try:
            listener.bind((self.address, 0))
            self.port = listener.getsockname()[1]
            if self.kind == "blackhole":
                listener.listen(0)
                self._fill_accept_queue()
                return
            listener.listen(128)
            self._spawn(self._accept_loop, f"fault-{self.kind}-accept", listener)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 2.0) -> None:
        """Wake and join every thread, close every socket. Idempotent."""
        if self._wake_w.fileno() != -1:
            self._wake_w.send(b"x")
        deadline = time.monotonic() + timeout
        # The accept thread is first in the list; once it has ended no thread
        # is added, so a second pass sees every connection thread.
        for _ in range(2):
            with self._lock:
                threads = list(self._threads)
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
        for sock in [*self._fillers, self._listener, self._wake_r, self._wake_w]:
            if sock is not None:
                sock.close()
        self._fillers.clear()

    @property
    def alive_threads(self) -> int:
        """How many of this server's threads still run (0 after `stop`)."""
        with self._lock:
            return sum(t.is_alive() for t in self._threads)

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _fill_accept_queue(self) -> None:
        # listen(0) leaves room for one queued connection; once the accept
        # queue is full, Linux drops new SYNs (tcp_conn_request) and the
        # client's connect() times out. We fill it ourselves and stop at the
        # first filler that cannot connect: that proves SYNs are now dropped.
        for _ in range(8):
            filler = socket.socket()
            self._fillers.append(filler)
            filler.settimeout(0.25)
            try:
                filler.connect((self.address, self.port))
            except TimeoutError:
                return
        raise RuntimeError("blackhole: the kernel kept accepting SYNs on a full listen(0) queue")

    # -- serving -----------------------------------------------------------
    def _accept_loop(self, listener: socket.socket) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(listener, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in sel.select()}
                if self._wake_r in ready:
                    return
                conn, _ = listener.accept()
                self.accepted += 1
                self._spawn(self._serve, f"fault-{self.kind}-conn", conn)

    def _serve(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        with conn, selectors.DefaultSelector() as sel:
            sel.register(self._wake_r, selectors.EVENT_READ)
            sel.register(conn, selectors.EVENT_READ)
            try:
                self._behave(_Conn(conn, sel, self._wake_r))
            except (_Stop, OSError):
                pass  # server stopping, or the client hung up: both are normal

    def _behave(self, c: _Conn) -> None:
        kind = self.kind
        if kind == "accept-close":
            return  # _serve closes the connection; the client has sent nothing: a FIN
        if kind == "maxstartups":
            c.send(MAXSTARTUPS)
            return
        if kind in ("http", "binary"):
            c.send(_HTTP if kind == "http" else _binary_bytes())
            # Half-close, then read until the client hangs up: closing with
            # unread input would send RST and could discard what we sent.
            c.sock.shutdown(socket.SHUT_WR)
        elif kind == "lines":
            for n in range(200):
                c.send(b"220 not ssh \x1b]0;pwned-by-banner\x07 line %d\r\n" % n)
        elif kind == "ssh1":
            c.send(b"SSH-1.5-OpenSSH_1\r\n")
        elif kind == "banner-silence":
            c.send(BANNER)
        elif kind == "bad-packet":
            c.send(BANNER + _BAD_PACKET)
        elif kind == "no-newline":
            c.send(b"SSH-2.0-")
            for sent in range(0, self.cap, _CHUNK):
                c.send(b"A" * min(_CHUNK, self.cap - sent))
        elif kind == "slow-drip":
            for byte in BANNER[:-2] if self.endless else BANNER:
                c.send(bytes([byte]))
                c.idle(self.interval)
            while self.endless:  # the line never ends; every byte resets paramiko's timer
                c.send(b"x")
                c.idle(self.interval)
        c.idle(None)  # tarpit, and the silence after every banner above


class _Conn:
    """One non-blocking connection whose every wait also watches the stop socket."""

    def __init__(self, sock: socket.socket, sel: selectors.BaseSelector, wake: socket.socket):
        self.sock, self.sel, self.wake = sock, sel, wake
        self.eof = False  # the client half-closed: keep sending, stop reading

    def send(self, data: bytes) -> None:
        """Send all of `data`, waiting for the peer to read (without spinning)."""
        view = memoryview(data)
        while view:
            self._watch(selectors.EVENT_WRITE)
            events = self._wait(None)
            if events & selectors.EVENT_READ:
                self._discard()
            if events & selectors.EVENT_WRITE:
                view = view[self.sock.send(view):]
        self._watch(0)

    def idle(self, seconds: float | None) -> None:
        """Send nothing for `seconds` (None: until stop or hang-up), discarding input."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            if self.eof and seconds is None:
                raise _Stop  # the client is gone or done: nothing left to wait for
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0 or not self._wait(left):
                return
            self._discard()

    def _watch(self, extra: int) -> None:
        events = extra | (0 if self.eof else selectors.EVENT_READ)
        registered = self.sock.fileno() in self.sel.get_map()
        if events and registered:
            self.sel.modify(self.sock, events)
        elif events:
            self.sel.register(self.sock, events)
        elif registered:
            self.sel.unregister(self.sock)

    def _wait(self, timeout: float | None) -> int:
        mask = 0
        for key, events in self.sel.select(timeout):
            if key.fileobj is self.wake:
                raise _Stop
            mask |= events
        return mask

    def _discard(self) -> None:
        try:
            if not self.sock.recv(65536):
                self.eof = True
                self._watch(0)
        except BlockingIOError:
            pass
