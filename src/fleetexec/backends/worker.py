"""One process's share of a run: many sessions on threads, and the typed messages about them.

`HostRunner` is used in the caller's process (`InProcessBackend`) and in each
worker process of `ProcessBackend`, which runs `main()` here: it reads
`Setup` and `Work` from its socket to the parent and answers with `Ready`,
`Taken`, `Started` and `Finished` (or `SetupFailed`). Frames are
length-prefixed pickles on a private socketpair between a parent and the
child it started, never a socket anyone else can reach.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import queue
import signal
import socket
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..crew import Crew
from ..exceptions import ConfigError
from ..host import Host
from ..options import Options
from ..results import HostResult
from ..transfer import Transfer

if TYPE_CHECKING:
    from ..ssh.pacing import Turn
    from ..ssh.session import KeptCommand

__all__ = [
    "Channel", "Chunk", "Finished", "HostRunner", "Ready", "Setup", "SetupFailed", "Skip",
    "Started", "Stdin", "Stop", "Taken", "Work",
]


# ---- messages, parent -> worker ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setup:
    """Load keys and known_hosts once; run up to `threads` sessions at a time."""

    options: Options
    threads: int
    handshakes: int
    preload_key_files: tuple[str, ...] = ()

    @classmethod
    def for_hosts(cls, options: Options, hosts: Sequence[Host], threads: int,
                  handshakes: int) -> Setup:
        """The setup of a run on `hosts`: their key files are loaded before any connection."""
        preload = tuple(dict.fromkeys(p for h in hosts for p in h.key_files))
        return cls(options, threads, handshakes, preload)


@dataclass(frozen=True, slots=True)
class Work:
    """Run `command` on `host` (host number `index` of run `run`), or do `transfer`."""

    run: int
    index: int
    host: Host
    command: str
    keep_connection: bool
    stream_output: bool = False
    transfer: Transfer | None = None  # files to move instead of running `command`


@dataclass(frozen=True, slots=True)
class Stdin:
    """What run `run` sends to each command's standard input (once per worker, not per host)."""

    run: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Skip:
    """Drop queued work of every run before `run` (an earlier run was abandoned)."""

    run: int


@dataclass(frozen=True, slots=True)
class Stop:
    """Close kept connections and exit."""


# ---- messages, worker -> parent ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    """Set up; `pid` is the worker process."""

    pid: int


@dataclass(frozen=True, slots=True)
class SetupFailed:
    """The settings cannot work (an unreadable key, a wrong passphrase): nothing ran."""

    message: str


@dataclass(frozen=True, slots=True)
class Taken:
    """A session thread took the host: from now on, it may run."""

    run: int
    index: int


@dataclass(frozen=True, slots=True)
class Started:
    """The host's turn to connect came: its deadlines start now."""

    run: int
    index: int


@dataclass(frozen=True, slots=True)
class Chunk:
    """Output as it arrived (`stream` is "stdout" or "stderr")."""

    run: int
    index: int
    stream: Literal["stdout", "stderr"]
    data: bytes


@dataclass(frozen=True, slots=True)
class Finished:
    """The host's result."""

    run: int
    index: int
    result: HostResult


Event = Ready | SetupFailed | Taken | Started | Chunk | Finished


class HostRunner:
    """Runs `Work` on session threads against one `WorkerContext`, at most `threads` at once.

    A host gets its session thread only once its handshake slot is free (a
    dispatcher waits for the slots): a thousand queued hosts are a thousand
    queue entries, not a thousand threads waiting on the slots. Threads are
    started as they are first needed and kept for the next host; there are as
    many as were ever busy at once (a handshake-bound run of `true` on 1000
    hosts needs about 150; one of `sleep 60`, one per host).
    """

    def __init__(self, setup: Setup, emit: Callable[[Event], object]) -> None:
        from ..ssh.session import WorkerContext

        self.context = WorkerContext(setup.options, setup.handshakes, setup.preload_key_files)
        self._emit = emit
        self._inbox: queue.SimpleQueue[Work | None] = queue.SimpleQueue()
        self._skip_below = 0  # runs before this one were cancelled: drop their queued work
        self._stdin: dict[int, bytes] = {}  # only the latest run's
        self._threads_max = setup.threads
        self._sessions = threading.BoundedSemaphore(setup.threads)  # in flight at most
        self._crew = Crew("fleetexec-session")
        self._lock = threading.Lock()
        self._kept: set[KeptCommand] = set()  # started with no thread waiting (yet)
        self._dispatcher = threading.Thread(target=self._dispatch, daemon=True)
        self._dispatcher.start()

    def submit(self, work: Work) -> None:
        """Queue `work` for the next free session thread."""
        self._inbox.put(work)

    def set_stdin(self, run: int, data: bytes) -> None:
        """Run `run` sends `data` to each command's standard input."""
        self._stdin = {run: data}

    def cancel_before(self, run: int) -> None:
        """Queued work of runs before `run` is dropped, not started."""
        self._skip_below = run

    def stop(self) -> None:
        """Let the sessions finish what they hold, then close the kept connections."""
        self._inbox.put(None)
        self._dispatcher.join()
        for _ in range(self._threads_max):  # every session in flight has ended
            self._sessions.acquire()
        self._crew.stop()
        self.context.close_connections()
        self.context.watchdog.stop()

    def _dispatch(self) -> None:
        from ..ssh.pacing import Turn
        from ..ssh.session import KeptCommand

        while (work := self._inbox.get()) is not None:
            if work.run < self._skip_below:
                continue
            self._sessions.acquire()
            self._emit(Taken(work.run, work.index))
            on_start = functools.partial(self._emit, Started(work.run, work.index))
            if work.keep_connection and self._plain(work):
                # Started now, on its kept connection; a session thread only when it is due.
                kept = KeptCommand(work.host, work.command, self.context)
                kept.on_ready = functools.partial(self._hand, functools.partial(
                    self._finish_kept, work, kept, on_start))
                # Held here until it ends: paramiko holds its channels only weakly, and
                # nothing else reaches it (it would be collected, its channel closed).
                with self._lock:
                    self._kept.add(kept)
                try:
                    started = kept.start()
                except Exception:  # noqa: BLE001 - never lose the dispatcher: run_on_host says why
                    started = False
                if started:
                    continue
                with self._lock:
                    self._kept.discard(kept)
            # A kept connection needs no handshake; if it proves dead, the session thread
            # waits for a slot itself (session.over_connection).
            handshakes = None if work.keep_connection and self.context.has_kept(work.host) \
                else self.context.handshakes
            turn = Turn(handshakes, on_start)
            self._hand(functools.partial(self._run, work, turn, on_start))
            del work, turn  # an idle dispatcher must not keep a host's work alive

    def _plain(self, work: Work) -> bool:
        """A command with no input, no sudo, no live output, no transfer."""
        return not (work.transfer is not None or work.stream_output or self._stdin.get(work.run)
                    or self.context.options.sudo)

    def _hand(self, job: Callable[[], object]) -> None:
        """Run `job` (holding a session slot) on a session thread (from any thread)."""
        self._crew.hand(functools.partial(self._session, job))

    def _session(self, job: Callable[[], object]) -> None:
        try:
            job()
        finally:
            self._sessions.release()

    def _finish_kept(self, work: Work, kept: KeptCommand, on_start: Callable[[], object]
                     ) -> None:
        try:
            result = kept.finish(on_start)
        finally:
            with self._lock:
                self._kept.discard(kept)
        self._emit(Finished(work.run, work.index, result))

    def _run(self, work: Work, turn: Turn, on_start: Callable[[], object]) -> None:
        try:
            if work.run >= self._skip_below:
                self._emit(Finished(work.run, work.index, self._result(work, turn, on_start)))
        finally:
            turn.release()

    def _result(self, work: Work, turn: Turn, on_start: Callable[[], object]) -> HostResult:
        from ..ssh.session import run_on_host

        if work.transfer is not None:
            from ..ssh.transfer import transfer_on_host

            return transfer_on_host(work.host, work.transfer, self.context,
                                    work.keep_connection, on_start=on_start, turn=turn)
        on_output = None
        if work.stream_output:
            def on_output(stream: str, data: bytes, work: Work = work) -> None:
                name: Literal["stdout", "stderr"] = "stderr" if stream == "stderr" else "stdout"
                self._emit(Chunk(work.run, work.index, name, data))
        return run_on_host(work.host, work.command, self.context, work.keep_connection,
                           on_start=on_start, on_output=on_output,
                           stdin=self._stdin.get(work.run), turn=turn)


_JOIN_BELOW = 64 * 1024


class Channel:
    """Length-prefixed pickle frames over a socket; `send` is safe from any thread."""

    _HEADER = struct.Struct("!I")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader = sock.makefile("rb")
        self._sending = threading.Lock()
        # Closing a buffered reader while another thread is inside its read frees the
        # buffer under that read (a ValueError from CPython, seen in CI): `close` wakes
        # the reader with a shutdown and closes it only once no read is running.
        self._reading = threading.Lock()

    def send(self, message: object) -> None:
        """Send one message (raises `OSError` if the other end is gone)."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        header = self._HEADER.pack(len(data))
        with self._sending:
            if len(data) < _JOIN_BELOW:
                self.sock.sendall(header + data)
            else:  # a result with megabytes of output: not copied once more to join them
                self.sock.sendall(header)
                self.sock.sendall(data)

    def receive(self) -> object | None:
        """The next message, or None when the other end has gone."""
        with self._reading:
            if self._reader.closed:
                return None
            try:
                header = self._reader.read(self._HEADER.size)
                if len(header) < self._HEADER.size:
                    return None
                size = self._HEADER.unpack(header)[0]
                data = self._reader.read(size)
            except OSError:
                return None
            if len(data) < size:  # cut off: the other end died or was closed mid-message
                return None
        # Only our own parent or child holds the other end of this socketpair.
        message: object = pickle.loads(data)  # noqa: S301
        return message

    def close(self) -> None:
        """Close both directions; a `receive` running in another thread returns None."""
        with contextlib.suppress(OSError):  # already shut down or closed
            self.sock.shutdown(socket.SHUT_RDWR)
        with self._reading:
            self._reader.close()
        self.sock.close()


def command_line(fds: Sequence[int]) -> list[str]:
    """How worker processes are started: a safe path, never the caller's directory first."""
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *safe_path, "-m", "fleetexec.backends", *map(str, fds)]


def main(argv: Sequence[str] | None = None) -> None:
    """Serve one worker slot per socket fd in `argv`, one process each.

    The heavy imports happen once, here; the other slots' processes are then
    forked from this one before any thread exists (so forking is safe), which
    costs a run one interpreter start-up, not one per worker.
    """
    # The parent owns Ctrl-C: it stops the run and ends the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fds = [int(arg) for arg in (argv or sys.argv[1:])]
    # paramiko's own ssh-config reader imports invoke, when installed (Fabric brings it),
    # for `Match exec`: ~45 ms of every run's start. fleetexec reads ssh config itself,
    # and nothing else runs in this process, so it goes without.
    sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]
    from ..ssh import session  # noqa: F401 - imported before forking, shared by every fork

    children = []
    still_open = list(fds)  # ours, and the sockets of the slots not yet forked
    for fd in fds[1:]:
        pid = os.fork()
        if pid == 0:
            for other in still_open:
                if other != fd:
                    os.close(other)
            _serve(fd)
            os._exit(0)
        children.append(pid)
        os.close(fd)
        still_open.remove(fd)
    _serve(fds[0])
    for pid in children:  # reaped here, so their CPU is accounted to our parent
        os.waitpid(pid, 0)


def _serve(fd: int) -> None:
    from . import FDS_RESERVED, raise_open_files

    channel = Channel(socket.socket(fileno=fd))
    setup = channel.receive()
    if not isinstance(setup, Setup):
        return
    raise_open_files(setup.threads + FDS_RESERVED)  # one socket per session thread
    try:
        runner = HostRunner(setup, channel.send)
    except ConfigError as error:
        channel.send(SetupFailed(str(error)))
        return
    channel.send(Ready(os.getpid()))
    while True:
        message = channel.receive()
        if isinstance(message, Work):
            runner.submit(message)
        elif isinstance(message, Skip):
            runner.cancel_before(message.run)
        elif isinstance(message, Stdin):
            runner.set_stdin(message.run, message.data)
        elif isinstance(message, Stop):
            runner.stop()
            return
        else:  # the parent is gone: nobody is left to read our results
            os._exit(0)
