"""Reading a command's output: chunk pipes, the channel window, the caps, reading in turns.

paramiko keeps a channel's incoming data in a `BufferedPipe`: an `array` that
every packet is copied onto and every read is copied (and the rest moved)
off, and whose reader is woken for every 32 KiB packet. At hundreds of
sessions with megabytes each, that copying and waking was most of the client's
CPU. `ChunkPipe` stands in for it on our command channels: it keeps the packets
as they came, a read takes all of them at once, and the reader is woken only
once enough has come to be worth a turn (always at once for live output and
for stderr, which carries sudo's prompt).

The window: a channel opens with a small one (`WINDOW_START`), so that the
hundreds of sessions waiting for a turn to read hold little; a session that
gets a turn (`Turn(bulk_readers)`, past `BULK_BYTES` of output) widens it
(`WINDOW_BULK`) and acknowledges only every half window, so a flood costs a
few window adjustments, not hundreds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from paramiko.channel import Channel
from paramiko.common import cMSG_CHANNEL_WINDOW_ADJUST
from paramiko.message import Message

from .pacing import Turn, nothing

__all__ = [
    "BULK_BYTES", "BULK_READERS", "TURN_IDLE", "WINDOW_BULK", "WINDOW_START", "Capped",
    "ChunkPipe", "drain", "install_pipes",
]

BULK_BYTES = 64 * 1024  # a session past this much output reads in turns...
BULK_READERS = 4  # ...with at most this many such sessions reading at once per process
WINDOW_START = 32 * 1024  # what a session may have in flight before it reads in turns
WINDOW_BULK = 2 * 1024 * 1024  # ...and once it has a turn
TURN_IDLE = 0.2  # seconds without output after which a session gives its turn up
LIVE_BATCH = 0.02  # seconds live output of a heavy session may wait to be sent with more


class Sink(Protocol):
    total: int

    def add(self, chunk: bytes) -> None: ...


class Capped:
    """Keeps the first `cap` bytes of a stream, counts the rest, never blocks the sender."""

    __slots__ = ("_kept", "_pieces", "cap", "listener", "total")

    def __init__(self, cap: int, listener: Callable[[bytes], object] | None = None) -> None:
        self.cap, self.total = cap, 0
        self._pieces: list[bytes] = []
        self._kept = 0
        self.listener = listener  # live output: every chunk, kept or not

    def add(self, chunk: bytes) -> None:
        if self.listener is not None:
            self.listener(chunk)
        self._keep(chunk)

    def add_all(self, chunks: list[bytes]) -> None:
        """Several chunks that arrived together (the listener gets them as one)."""
        if self.listener is not None:
            self.listener(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        for chunk in chunks:
            self._keep(chunk)

    def _keep(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.cap - self._kept
        if room > 0:
            piece = chunk if len(chunk) <= room else chunk[:room]
            self._pieces.append(piece)
            self._kept += len(piece)

    @property
    def data(self) -> bytes:
        """The bytes kept (at most `cap`)."""
        if len(self._pieces) > 1:
            self._pieces = [b"".join(self._pieces)]
        return self._pieces[0] if self._pieces else b""

    @property
    def truncated(self) -> bool:
        return self.total > self._kept


class ChunkPipe:
    """What paramiko's `BufferedPipe` does for a channel, without copying data around.

    `feed` (the transport thread) appends a packet's bytes; `take` (the session's
    reader) removes every chunk at once. The event given to `set_event` is set
    when `wake_at` bytes are waiting (0: at every chunk) or the pipe closes.
    `read` keeps paramiko's blocking semantics for any caller of `Channel.recv`.
    """

    __slots__ = ("_chunks", "_closed", "_cv", "_event", "_lock", "_size", "_waiters", "wake_at")

    def __init__(self, wake_at: int = 0) -> None:
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._chunks: list[bytes] = []
        self._size = 0
        self._closed = False
        self._event: threading.Event | None = None
        self._waiters = 0
        self.wake_at = wake_at

    def set_event(self, event: threading.Event) -> None:
        with self._lock:
            self._event = event
            if self._closed or (self._size and self._size >= self.wake_at):
                event.set()

    def feed(self, data: bytes) -> None:
        with self._lock:
            self._chunks.append(data)
            self._size += len(data)
            event = self._event
            if event is not None and self._size >= self.wake_at and not event.is_set():
                event.set()
            if self._waiters:
                self._cv.notify_all()

    def take(self) -> list[bytes]:
        """Every chunk waiting, oldest first (an empty list when none)."""
        with self._lock:
            chunks, self._chunks, self._size = self._chunks, [], 0
        return chunks

    def due(self) -> bool:
        """Enough is waiting to be read now (or the pipe closed)."""
        return self._closed or (self._size > 0 and self._size >= self.wake_at)

    def read_ready(self) -> bool:
        return self._size > 0

    def read(self, nbytes: int, timeout: float | None = None) -> bytes:
        from paramiko.buffered_pipe import PipeTimeout

        with self._lock:
            if not self._size and not self._closed:
                if timeout == 0.0:
                    raise PipeTimeout()
                self._waiters += 1
                try:
                    if not self._cv.wait_for(lambda: self._size or self._closed, timeout):
                        raise PipeTimeout()
                finally:
                    self._waiters -= 1
            data = b"".join(self._chunks)
            out, rest = data[:nbytes], data[nbytes:]
            self._chunks = [rest] if rest else []
            self._size = len(rest)
            return out

    def empty(self) -> bytes:
        return b"".join(self.take())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._event is not None:
                self._event.set()
            self._cv.notify_all()

    def __len__(self) -> int:
        return self._size


def install_pipes(channel: Channel, live: bool,
                  on_first: Callable[[], object] | None = None) -> None:
    """Our pipes on a channel just opened (before exec: nothing can have come yet).

    stdout wakes its reader at every chunk for live output, else once a quarter
    of the window has come; stderr always at once (sudo's prompt is on it). The
    exit status wakes it too (one event for all), so a command's end is one
    wake-up of the session, not one for EOF and one for the status. `on_first` is
    called the first time that event is set (a command nobody waits on yet).
    """
    ready = threading.Event() if on_first is None else _FirstSet(on_first)
    stdout, stderr = ChunkPipe(0 if live else WINDOW_START // 4), ChunkPipe(0)
    stdout.set_event(ready)
    stderr.set_event(ready)
    channel.in_buffer, channel.in_stderr_buffer = stdout, stderr  # type: ignore[assignment]
    channel.status_event = _Relay(ready)


class _FirstSet(threading.Event):
    """An event that also calls `hook`, once, the first time it is set."""

    def __init__(self, hook: Callable[[], object]) -> None:
        super().__init__()
        self._hook: Callable[[], object] | None = hook
        self._hook_lock = threading.Lock()

    def set(self) -> None:
        super().set()
        with self._hook_lock:
            hook, self._hook = self._hook, None
        if hook is not None:
            hook()


class _Relay(threading.Event):
    """A channel's `status_event` that also sets the session's one event."""

    def __init__(self, also: threading.Event) -> None:
        super().__init__()
        self.also = also

    def set(self) -> None:
        super().set()
        self.also.set()


class _Window:
    """Our half of the channel's flow control (paramiko's is only used by `Channel.recv`).

    The server may send what was granted and not yet consumed; once at least
    half of `target` can be granted again, it is, in one window adjustment.
    Lowering `target` (a session giving up its turn) grants nothing until the
    server's credit has fallen below it.
    """

    __slots__ = ("channel", "consumed", "granted", "target")

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.granted = self.target = channel.in_window_size
        self.consumed = 0

    def consume(self, size: int) -> None:
        self.consumed += size
        self._grant()

    def aim(self, target: int) -> None:
        self.target = target
        self._grant()

    def _grant(self) -> None:
        room = self.target - (self.granted - self.consumed)
        channel = self.channel
        if room < self.target // 2 or channel.closed or channel.eof_received:
            return
        self.granted += room
        message = Message()
        message.add_byte(cMSG_CHANNEL_WINDOW_ADJUST)
        message.add_int(channel.remote_chanid)
        message.add_int(room)
        channel.transport._send_user_message(message)  # type: ignore[union-attr]


def drain(
    channel: Channel, out: Sink, err: Sink, bulk_readers: threading.BoundedSemaphore
) -> None:
    """Read stdout and stderr together until EOF, then wait for the exit status.

    Reading one stream first deadlocks once the other fills the window. One
    event, set by either pipe when it is due and by close, wakes this thread.
    Past `BULK_BYTES`, a session reads only in a turn (`bulk_readers`): hundreds
    of floods at once in one process cost far more CPU, in GIL contention, than
    a few at a time. A session whose output pauses for `TURN_IDLE` seconds gives
    its turn up, so slow talkers do not keep the floods waiting. Live output goes
    to its listener as it comes, in batches once the session is heavy.
    """
    stdout, stderr, status = channel.in_buffer, channel.in_stderr_buffer, channel.status_event
    assert isinstance(stdout, ChunkPipe) and isinstance(stderr, ChunkPipe)  # noqa: S101
    assert isinstance(status, _Relay)  # noqa: S101 - install_pipes ran
    ready = status.also
    window = _Window(channel)
    live = stdout.wake_at == 0
    bulk = Turn(None, nothing)
    heavy = False
    try:
        while True:
            ready.clear()
            if heavy and bulk.idle and not channel.eof_received:
                # Wait for a turn (the server waits on the small window meanwhile).
                bulk = Turn(bulk_readers, nothing)
                _aim(window, stdout, WINDOW_BULK)
            _read_ready(window, stdout, stderr, out, err)
            if channel.closed or (channel.eof_received and status.is_set()):
                break
            if channel.eof_received:
                # All output came; the exit status follows (one wake-up for both, mostly).
                bulk.release()
                ready.wait()
                continue
            heavy = heavy or out.total + err.total > BULK_BYTES
            if stdout.due() or stderr.due():
                continue
            if live and heavy and len(stdout):
                ready.wait(LIVE_BATCH)  # a flood to a terminal: batches, not packets
                continue
            if bulk.idle:
                if not heavy:
                    ready.wait()
            elif not ready.wait(TURN_IDLE):
                bulk.release()  # quiet for a while: let another session read
                _aim(window, stdout, WINDOW_START)
                if not (stdout.due() or stderr.due()):
                    ready.wait()
    finally:
        bulk.release()
    # The server's channel close, a dead transport or the watchdog set status_event too.
    status.wait()
    _read_ready(window, stdout, stderr, out, err)


def _aim(window: _Window, stdout: ChunkPipe, size: int) -> None:
    """Let the server send up to `size` ahead (a heavy session); wake for stdout at a quarter
    of it (live output too: its reader also wakes `LIVE_BATCH` after data came)."""
    stdout.wake_at = size // 4
    window.aim(size)


def _read_ready(window: _Window, stdout: ChunkPipe, stderr: ChunkPipe, out: Sink,
                err: Sink) -> None:
    size = 0
    for pipe, sink in ((stdout, out), (stderr, err)):
        chunks = pipe.take()
        if chunks:
            if isinstance(sink, Capped):
                sink.add_all(chunks)
            else:
                for chunk in chunks:
                    sink.add(chunk)
            size += sum(map(len, chunks))
    if size:
        window.consume(size)
