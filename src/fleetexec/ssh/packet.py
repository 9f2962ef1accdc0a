"""The packet layer as fleetexec drives it: paramiko's Packetizer, with fewer system calls.

paramiko reads exactly the bytes it needs next, twice per packet, writes each packet
with its own `send`, asks the kernel for random padding bytes per packet, and times
each key exchange with a thread of its own. Each of those is a system call or a thread
hand-off that lets the GIL go, and with hundreds of connections in one process the
hand-offs cost more than the protocol work. `FleetPacketizer` reads a flight of packets
at once, writes a flight at once (`corked`), takes padding from a pool, and keeps a
deadline instead of a timer thread. The bytes on the wire are the same.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from collections.abc import Iterator

from paramiko.packet import NeedRekeyException, Packetizer

__all__ = ["FleetPacketizer"]

_READ_AHEAD = 64 * 1024
# paramiko's Packetizer keeps these name-mangled.
_REMAINDER, _SOCKET = "_Packetizer__remainder", "_Packetizer__socket"
_CLOSED, _NEED_REKEY = "_Packetizer__closed", "_Packetizer__need_rekey"
_WRITE_LOCK = "_Packetizer__write_lock"
_SDCTR_OUT, _ENGINE_OUT = "_Packetizer__sdctr_out", "_Packetizer__block_engine_out"
_BLOCK_OUT, _ETM_OUT, _AEAD_OUT = ("_Packetizer__block_size_out", "_Packetizer__etm_out",
                                   "_Packetizer__aead_out")
_POOL = 512  # random padding bytes fetched at once (4 to 19 per packet)


class FleetPacketizer(Packetizer):
    """paramiko's Packetizer without the thread it starts per connection, reading and
    writing a flight at a time.

    paramiko times the key exchange (`handshake_timeout`, 15 s) with a
    `threading.Timer`: a thread per connection that only sets a flag, which
    `read_all` polls before each read; after the handshake the timer is
    cancelled again after every message. A deadline read at the same points
    decides the same way without the thread (one of three per host).
    """

    _handshake_deadline: float | None = None
    _handshake_done = False

    def start_handshake(self, timeout: float) -> None:
        if self._handshake_deadline is None:
            self._handshake_deadline = time.monotonic() + float(timeout)

    def handshake_timed_out(self) -> bool:
        deadline = self._handshake_deadline
        return (deadline is not None and not self._handshake_done
                and time.monotonic() >= deadline)

    def complete_handshake(self) -> None:
        if self._handshake_deadline is not None:
            self._handshake_done = True

    # Reading: paramiko asks the socket for exactly the bytes it needs next, twice per
    # packet (the first block, then the rest), and each `recv` on a socket with a
    # timeout is a poll and a read, each letting the GIL go. A server's flight of a
    # dozen packets cost ~50 system calls and as many GIL hand-offs; read ahead, it
    # costs one or two. What is read past a packet waits here for the next read.
    _ahead = b""
    _ahead_at = 0

    def read_all(self, n: int, check_rekey: bool = False) -> bytes:
        banner_rest = getattr(self, _REMAINDER)
        if banner_rest:  # bytes read with the banner line (see banner.give_back)
            setattr(self, _REMAINDER, b"")
            self._ahead, self._ahead_at = banner_rest + self._ahead[self._ahead_at:], 0
        ahead, at = self._ahead, self._ahead_at
        if at + n < len(ahead):
            self._ahead_at = at + n
            return ahead[at:at + n]
        # All of it, and maybe more: a buffer read to its end is not kept (up to 64 KiB
        # per idle connection).
        out = ahead[at:]
        self._ahead, self._ahead_at = b"", 0
        sock = getattr(self, _SOCKET)
        while len(out) < n:
            if self.handshake_timed_out():
                raise EOFError()
            try:
                got = sock.recv(max(n - len(out), _READ_AHEAD))
            except (TimeoutError, BlockingIOError):  # Python's timeout, or the kernel's
                if getattr(self, _CLOSED):
                    raise EOFError() from None
                if check_rekey and not out and getattr(self, _NEED_REKEY):
                    raise NeedRekeyException() from None
                self._check_keepalive()  # type: ignore[attr-defined]
                continue
            except OSError:
                if getattr(self, _CLOSED):
                    raise EOFError() from None
                raise
            if not got:
                raise EOFError()
            want = n - len(out)
            if len(got) > want:
                self._ahead, self._ahead_at = got, want
                got = got[:want]
            out += got
        return out

    def wait_in_kernel(self) -> None:
        """From now on, the socket's calls wait in the kernel, as long as its timeout
        (SO_RCVTIMEO, SO_SNDTIMEO), not in a poll Python makes before each of them:
        one GIL hand-off per call instead of two. Only for a connection past its
        handshake (paramiko's banner read knows only Python's timeouts); the reads
        above take the kernel's EAGAIN as their timeout, paramiko's writes retry on it.
        Not for a bastion's channel or a ProxyCommand: those are not sockets."""
        sock = getattr(self, _SOCKET)
        seconds = sock.gettimeout() if isinstance(sock, socket.socket) else None
        if not seconds:  # not a socket, or waiting in the kernel already
            return
        wait = struct.pack("ll", int(seconds), int(seconds % 1 * 1_000_000))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, wait)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, wait)
        sock.settimeout(None)

    # Padding: paramiko asks the kernel for random bytes for every encrypted packet it
    # builds (a system call that lets the GIL go, ~6 per host); they come from a pool
    # refilled from os.urandom instead. Same source, same bytes per packet.
    _pool = b""

    def _build_packet(self, payload: bytes) -> bytes:
        if getattr(self, _SDCTR_OUT) or getattr(self, _ENGINE_OUT) is None:
            packet: bytes = super()._build_packet(payload)  # type: ignore[misc]
            return packet  # zero padding: paramiko's (and OpenSSH's) choice here
        size = getattr(self, _BLOCK_OUT)
        length = 4 if getattr(self, _ETM_OUT) or getattr(self, _AEAD_OUT) else 8
        padding = 3 + size - ((len(payload) + length) % size)
        pool = self._pool
        if len(pool) < padding:
            pool = os.urandom(_POOL)
        self._pool = pool[padding:]
        return b"".join((struct.pack(">IB", len(payload) + padding + 1, padding), payload,
                         pool[:padding]))

    # Writing: one write per flight, not one per packet. Messages sent together
    # (`corked`) go out in one `send` (each is a poll and a send, each letting the GIL go).
    # Not by file descriptor (`os.write`, which would skip the poll): paramiko closes a
    # transport's socket from whichever thread closes it, and a write by number after
    # that lands in whatever connection got the number next (seen in the 1000-host soak
    # test: another host's sshd read our bytes as its client's banner).
    _corked: list[bytes] | None = None

    @contextlib.contextmanager
    def corked(self) -> Iterator[None]:
        """Send what is sent inside in one write at the end (holding the write lock, so
        the packets stay in sequence order)."""
        with getattr(self, _WRITE_LOCK):
            if self._corked is not None:  # nested: the outer one writes
                yield
                return
            self.hold()
            try:
                yield
            finally:
                self.release()

    def corked_here(self) -> bool:
        """Whether this thread is inside `corked` (it holds the write lock)."""
        return self._corked is not None and getattr(self, _WRITE_LOCK)._is_owned()

    def hold(self) -> None:
        """Keep what is written from now on until `release` (the caller makes sure no
        other thread writes meanwhile: `corked`, or before the transport's thread runs)."""
        self._corked = []

    def release(self) -> None:
        """Write what `hold` kept, in one write."""
        pending = self._corked
        self._corked = None
        if pending:
            super().write_all(b"".join(pending))

    def write_all(self, out: bytes) -> None:  # type: ignore[override]
        if self._corked is not None:
            self._corked.append(out)
            return
        super().write_all(out)
