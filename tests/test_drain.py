"""Reading output: chunk pipes, our flow control, the caps, turns (no sockets, no sshd)."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from paramiko.common import cMSG_CHANNEL_WINDOW_ADJUST

from fleetexec import Options
from fleetexec.backends.worker import Finished, HostRunner, Setup, Work
from fleetexec.host import Host
from fleetexec.results import HostResult, Status
from fleetexec.ssh import drain
from fleetexec.ssh.drain import (
    BULK_BYTES,
    WINDOW_BULK,
    WINDOW_START,
    Capped,
    ChunkPipe,
    install_pipes,
)
from fleetexec.ssh.pacing import Turn

PACKET = 32 * 1024
WAIT = 30  # seconds: a generous bound for a thread to finish, never a measured time


class FakeTransport:
    def __init__(self, server: FakeServer) -> None:
        self.server = server

    def _send_user_message(self, message: object) -> None:
        message.rewind()  # type: ignore[attr-defined]
        assert message.get_byte() == cMSG_CHANNEL_WINDOW_ADJUST  # type: ignore[attr-defined]
        assert message.get_int() == 7  # type: ignore[attr-defined]
        self.server.adjust(message.get_int())  # type: ignore[attr-defined]


class FakeServer:
    """The far end of one channel: sends what it is given, never more than its credit."""

    def __init__(self, live: bool = False) -> None:
        self.closed = self.eof_received = False
        self.remote_chanid = 7
        self.in_window_size = WINDOW_START  # what open_session(window_size=...) leaves
        self.status_event = threading.Event()
        self.transport = FakeTransport(self)
        install_pipes(self, live)  # type: ignore[arg-type]
        self.credit = WINDOW_START
        self.most_credit = WINDOW_START
        self.adjustments = 0
        self._cv = threading.Condition()

    def adjust(self, size: int) -> None:
        with self._cv:
            self.credit += size
            self.adjustments += 1
            self.most_credit = max(self.most_credit, self.credit)
            self._cv.notify_all()

    def send(self, data: bytes, stream: str = "stdout") -> None:
        """Blocks while the window is shut, as a server must."""
        pipe = self.in_buffer if stream == "stdout" else self.in_stderr_buffer  # type: ignore[attr-defined]
        while data:
            with self._cv:
                assert self._cv.wait_for(lambda: self.credit > 0, WAIT), "window never opened"
                size = min(len(data), PACKET, self.credit)
                self.credit -= size
            pipe.feed(data[:size])
            data = data[size:]

    def end(self) -> None:
        self.eof_received = True
        self.in_buffer.close()  # type: ignore[attr-defined]
        self.in_stderr_buffer.close()  # type: ignore[attr-defined]
        self.status_event.set()


def drained(server: FakeServer, out: Capped, err: Capped,
            readers: threading.BoundedSemaphore) -> threading.Thread:
    thread = threading.Thread(target=drain.drain, args=(server, out, err, readers), daemon=True)
    thread.start()
    return thread


def pattern(size: int) -> bytes:
    return (b"0123456789abcdef" * (size // 16 + 1))[:size]


# ---- ChunkPipe ----------------------------------------------------------------------------


def test_a_pipe_keeps_chunks_as_they_came_and_take_empties_it() -> None:
    pipe = ChunkPipe()
    first, second = b"a" * 10, b"b" * 20
    pipe.feed(first)
    pipe.feed(second)
    assert len(pipe) == 30 and pipe.read_ready()
    chunks = pipe.take()
    assert chunks == [first, second] and chunks[0] is first  # no copies
    assert len(pipe) == 0 and pipe.take() == []


def test_a_pipe_wakes_its_reader_only_once_wake_at_bytes_wait_or_it_closes() -> None:
    pipe, event = ChunkPipe(wake_at=100), threading.Event()
    pipe.set_event(event)
    pipe.feed(b"x" * 60)
    assert not event.is_set() and not pipe.due()
    pipe.feed(b"x" * 40)
    assert event.is_set() and pipe.due()
    event.clear()
    pipe.take()
    pipe.feed(b"y")
    assert not event.is_set()
    pipe.close()
    assert event.is_set() and pipe.due()


def test_set_event_on_a_pipe_already_due_sets_it() -> None:
    pipe, event = ChunkPipe(wake_at=0), threading.Event()
    pipe.feed(b"z")
    pipe.set_event(event)
    assert event.is_set()


def test_read_keeps_paramikos_semantics() -> None:
    from paramiko.buffered_pipe import PipeTimeout

    pipe = ChunkPipe()
    with pytest.raises(PipeTimeout):
        pipe.read(10, timeout=0.0)
    pipe.feed(b"hello ")
    pipe.feed(b"world")
    assert pipe.read(8) == b"hello wo" and pipe.read(100) == b"rld"
    threading.Timer(0.05, pipe.feed, (b"late",)).start()
    assert pipe.read(100) == b"late"  # blocks until data comes
    pipe.close()
    assert pipe.read(100) == b""  # closed and empty: end of stream


# ---- Capped -------------------------------------------------------------------------------


def test_capped_keeps_exactly_the_first_cap_bytes_across_chunks() -> None:
    seen: list[bytes] = []
    capped = Capped(25, seen.append)
    capped.add_all([b"a" * 10, b"b" * 10])
    capped.add(b"c" * 10)
    capped.add_all([b"d" * 10])
    assert capped.data == b"a" * 10 + b"b" * 10 + b"c" * 5
    assert capped.total == 40 and capped.truncated
    assert seen == [b"a" * 10 + b"b" * 10, b"c" * 10, b"d" * 10]  # a batch reaches it as one


def test_capped_at_zero_keeps_nothing_and_counts() -> None:
    capped = Capped(0)
    capped.add(b"abc")
    assert capped.data == b"" and capped.total == 3 and capped.truncated


# ---- drain: flow control and turns --------------------------------------------------------


def test_a_flood_arrives_whole_with_few_window_adjustments() -> None:
    server, readers = FakeServer(), threading.BoundedSemaphore(1)
    out, err = Capped(16 << 20), Capped(1 << 20)
    thread = drained(server, out, err, readers)
    data = pattern(8 << 20)
    server.send(data)
    server.end()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert out.data == data and out.total == len(data) and err.total == 0
    # the small window until the turn, then one adjustment per half of the wide window
    assert server.adjustments <= BULK_BYTES // (WINDOW_START // 2) + len(data) // (
        WINDOW_BULK // 2) + 2
    assert server.most_credit <= WINDOW_BULK
    assert readers._value == 1  # type: ignore[attr-defined]  # the turn was given back


def test_both_streams_at_once_never_deadlock() -> None:
    server, readers = FakeServer(), threading.BoundedSemaphore(1)
    out, err = Capped(4 << 20), Capped(4 << 20)
    thread = drained(server, out, err, readers)
    size = 3 << 20
    sender = threading.Thread(target=server.send, args=(b"e" * size, "stderr"))
    sender.start()
    server.send(b"o" * size)
    sender.join(WAIT)
    server.end()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert out.data == b"o" * size and err.data == b"e" * size


def test_a_session_without_a_turn_has_only_the_small_window() -> None:
    readers = threading.BoundedSemaphore(1)
    readers.acquire()  # someone else reads
    server = FakeServer()
    out, err = Capped(1 << 20), Capped(1 << 20)
    thread = drained(server, out, err, readers)
    sender = threading.Thread(target=server.send, args=(pattern(1 << 20),), daemon=True)
    sender.start()
    sender.join(0.5)  # it blocks on the shut window, however long we wait
    assert sender.is_alive()
    assert out.total <= BULK_BYTES + WINDOW_START
    assert server.most_credit - out.total - len(server.in_buffer) <= WINDOW_START  # type: ignore[attr-defined]
    readers.release()
    sender.join(WAIT)
    server.end()
    thread.join(WAIT)
    assert out.data == pattern(1 << 20)


def test_a_quiet_session_gives_its_turn_up_to_a_busy_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drain, "TURN_IDLE", 0.01)
    readers = threading.BoundedSemaphore(1)
    quiet, busy = FakeServer(), FakeServer()
    quiet_out, busy_out = Capped(1 << 20), Capped(1 << 20)
    quiet_thread = drained(quiet, quiet_out, Capped(0), readers)
    quiet.send(pattern(2 * BULK_BYTES))  # heavy, so it takes the one turn; then it pauses
    for _ in range(WAIT * 20):
        if readers._value == 0:  # type: ignore[attr-defined]
            break
        threading.Event().wait(0.05)
    busy_thread = drained(busy, busy_out, Capped(0), readers)
    busy.send(pattern(4 << 20))
    busy.end()
    busy_thread.join(WAIT)  # finishes while the quiet one still has not ended
    assert not busy_thread.is_alive() and busy_out.total == 4 << 20
    quiet.send(b"more")
    quiet.end()
    quiet_thread.join(WAIT)
    assert quiet_out.data == pattern(2 * BULK_BYTES) + b"more"


def test_live_output_reaches_the_listener_chunk_by_chunk() -> None:
    seen: list[bytes] = []
    server, readers = FakeServer(live=True), threading.BoundedSemaphore(1)
    out = Capped(1 << 20, seen.append)
    thread = drained(server, out, Capped(0), readers)
    server.send(b"line 1\n")
    for _ in range(200):  # the first line is delivered before the command ends
        if seen:
            break
        threading.Event().wait(0.05)
    assert seen == [b"line 1\n"]
    server.end()
    thread.join(WAIT)


# ---- worker threads -----------------------------------------------------------------------


def test_a_session_thread_keeps_no_finished_result_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    import fleetexec.ssh.session as session

    entered, go = threading.Event(), threading.Event()

    def fake_run(host: Host, *args: object, **kwargs: object) -> HostResult:
        if host.name == "second":
            entered.set()
            go.wait(WAIT)
        return HostResult(host.name, Status.OK, stdout=bytes(bytearray(1 << 20)))

    monkeypatch.setattr(session, "run_on_host", fake_run)
    finished: list[Finished] = []
    done = threading.Event()

    def emit(event: object) -> None:
        if isinstance(event, Finished):
            finished.append(event)
            done.set()

    runner = HostRunner(Setup(Options(), threads=1, handshakes=1), emit)
    runner.submit(Work(1, 0, Host("first"), "true", False))
    assert done.wait(WAIT)
    result = finished.pop().result
    runner.submit(Work(1, 1, Host("second"), "true", False))
    assert entered.wait(WAIT)  # the one thread is busy with the next host now
    assert sys.getrefcount(result) == 2  # ours and getrefcount's: the thread let it go
    go.set()
    runner.stop()


class _Blocking:
    """A fake `run_on_host` whose hosts block until `go` is set, counting them."""

    def __init__(self, release_slot: bool) -> None:
        self.release_slot = release_slot  # as a real connect does once the banner came
        self.go = threading.Event()
        self.lock = threading.Lock()
        self.running = self.most = 0
        self.threads: set[int] = set()

    def __call__(self, host: Host, *args: object, turn: Turn, **kwargs: object) -> HostResult:
        if self.release_slot:
            turn.release()
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.get_ident())
        self.go.wait(WAIT)
        with self.lock:
            self.running -= 1
        return HostResult(host.name, Status.OK)

    def wait_running(self, count: int) -> None:
        deadline = time.monotonic() + WAIT
        while self.running != count and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # room for a wrong extra one to start


def _ten_hosts(monkeypatch: pytest.MonkeyPatch, fake: _Blocking, threads: int,
               handshakes: int) -> tuple[HostRunner, list[Finished]]:
    import fleetexec.ssh.session as session

    monkeypatch.setattr(session, "run_on_host", fake)
    finished: list[Finished] = []
    runner = HostRunner(Setup(Options(), threads=threads, handshakes=handshakes),
                        lambda event: finished.append(event) if isinstance(event, Finished)
                        else None)
    for i in range(10):
        runner.submit(Work(1, i, Host(f"h{i}"), "true", False))
    return runner, finished


def test_hosts_waiting_for_a_handshake_slot_have_no_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _Blocking(release_slot=False)
    runner, finished = _ten_hosts(monkeypatch, fake, threads=10, handshakes=2)
    fake.wait_running(2)
    assert fake.running == 2 and len(fake.threads) == 2
    fake.go.set()
    runner.stop()
    assert sorted(f.index for f in finished) == list(range(10))
    assert len(fake.threads) == 2  # the next hosts reused them


def test_hosts_past_their_banner_run_side_by_side_up_to_the_session_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _Blocking(release_slot=True)
    runner, finished = _ten_hosts(monkeypatch, fake, threads=4, handshakes=1)
    fake.wait_running(4)
    assert fake.most == 4  # the one slot was given back each time: four at once, no more
    fake.go.set()
    runner.stop()
    assert sorted(f.index for f in finished) == list(range(10))
    assert len(fake.threads) == 4


# ---- starting a command without waiting in between ------------------------------------------


class _Packetizer:
    """Records which messages went out in one write (`corked`)."""

    def __init__(self) -> None:
        self.writes = 0
        self.corked_now = False

    @contextlib.contextmanager
    def corked(self) -> Iterator[None]:
        self.corked_now = True
        try:
            yield
        finally:
            self.corked_now = False
            self.writes += 1


class StartTransport:
    """What `Opening` uses of a transport; `clear` is False during a key exchange."""

    def __init__(self, clear: bool) -> None:
        self.clear_to_send = threading.Event()
        if clear:
            self.clear_to_send.set()
        self.clear_to_send_lock = threading.Lock()
        self.clear_to_send_timeout = WAIT
        self.active = True
        self.packetizer = _Packetizer()
        self.saved_exception: Exception | None = None
        self.sent: list[tuple[str, int]] = []  # (thread, message type)
        self.done = threading.Event()
        self.main = threading.current_thread()

    def get_log_channel(self) -> str:
        return "test"

    def _sanitize_packet_size(self, size: int) -> int:
        return size

    def _send_message(self, message: object) -> None:
        assert self.packetizer.corked_now and self.clear_to_send.is_set()
        sender = "transport thread" if threading.current_thread() is self.main else "helper"
        self.sent.append((sender, message.asbytes()[0]))  # type: ignore[attr-defined]
        if len(self.sent) == 2:
            self.done.set()


def opened_channel(transport: StartTransport, confirmed: bool) -> tuple[object, object]:
    from paramiko.channel import Channel

    from fleetexec.ssh.start import Opening

    channel = Channel(3)
    channel._set_transport(transport)  # type: ignore[attr-defined]
    channel._set_window(WINDOW_START, PACKET)  # type: ignore[attr-defined]
    install_pipes(channel, live=False)
    if confirmed:
        channel._set_remote_channel(9, 1 << 20, PACKET)  # type: ignore[attr-defined]
    opening = Opening(transport, channel, "uptime")  # type: ignore[arg-type]
    return channel, opening


def test_the_transport_thread_sends_exec_and_eof_once_the_channel_is_confirmed() -> None:
    from paramiko.common import MSG_CHANNEL_EOF, MSG_CHANNEL_REQUEST

    transport = StartTransport(clear=True)
    channel, opening = opened_channel(transport, confirmed=True)
    opening.set()  # type: ignore[attr-defined]
    assert opening.state == "sent"  # type: ignore[attr-defined]
    assert transport.sent == [("transport thread", MSG_CHANNEL_REQUEST),
                              ("transport thread", MSG_CHANNEL_EOF)]
    assert transport.packetizer.writes == 1  # both in one write
    assert channel.eof_sent and not channel.closed  # type: ignore[attr-defined]


def test_during_a_key_exchange_a_helper_sends_them_once_clear() -> None:
    from paramiko.common import MSG_CHANNEL_EOF, MSG_CHANNEL_REQUEST

    transport = StartTransport(clear=False)
    _, opening = opened_channel(transport, confirmed=True)
    opening.set()  # type: ignore[attr-defined]  # returns at once: never blocks that thread
    assert opening.state == "deferred" and transport.sent == []  # type: ignore[attr-defined]
    transport.clear_to_send.set()  # the key exchange ends
    assert transport.done.wait(WAIT)
    assert transport.sent == [("helper", MSG_CHANNEL_REQUEST), ("helper", MSG_CHANNEL_EOF)]


def test_a_refused_channel_is_closed_with_the_servers_reason() -> None:
    from paramiko.ssh_exception import ChannelException

    transport = StartTransport(clear=True)
    transport.saved_exception = ChannelException(1, "Administratively prohibited")
    channel, opening = opened_channel(transport, confirmed=False)
    opening.set()  # type: ignore[attr-defined]
    assert opening.state == "refused" and transport.sent == []  # type: ignore[attr-defined]
    assert channel.closed and channel.status_event.is_set()  # type: ignore[attr-defined]
    assert "Administratively prohibited" in (opening.error or "")  # type: ignore[attr-defined]
