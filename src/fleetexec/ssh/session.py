"""One host, one command, one `HostResult`: connect, verify, authenticate, exec, drain.

`run_on_host` never raises: every failure becomes a `Status` and a one-line,
secret-free message. Runs inside worker processes; `WorkerContext` holds what
is done once per process (known_hosts parsed and keys loaded, both again
when their files change; the watchdog, the slots that pace handshakes and
heavy reads, connections kept for reuse, bastion connections).
The steps live beside this module: `connect`, `command`, `transport`.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import paramiko

from ..crew import Crew
from ..host import Host
from ..options import Options, expand
from ..resolve import known_hosts_files
from ..results import HostResult, Status
from ..sshconfig import DEFAULT_IDENTITY_FILES, public_key_blob
from .command import BULK_READERS, Capped, Running, exec_and_drain, start_command
from .connect import connect
from .credentials import AgentKeys, NeedsPassphrase, load_private_key, try_private_key
from .failure import Failure, StaleConnection
from .filecache import FileCache
from .hostkeys import KnownHosts
from .pacing import Turn
from .transport import FleetTransport, close_client
from .tunnel import Bastions
from .watchdog import Watchdog

__all__ = ["Attempt", "KeptCommand", "WorkerContext", "over_connection", "run_on_host"]


class WorkerContext:
    """What a worker process does once, not once per host."""

    def __init__(self, options: Options, handshakes: int = 64,
                 preload_key_files: Sequence[str] = ()) -> None:
        self.options = options
        self.watchdog = Watchdog()
        self.transport_threads = Crew("fleetexec-transport")  # each connection's reader
        # Paces set-up: a burst of connects overflows accept queues.
        self.handshakes = threading.BoundedSemaphore(max(1, handshakes))
        self.bulk_readers = threading.BoundedSemaphore(BULK_READERS)
        # Re-read when they change on disk: workers outlive edits (see key(), known_hosts()).
        self._known = FileCache(KnownHosts.load)
        self._known_files: dict[tuple[object, ...], tuple[str, ...]] = {}
        self._keys = FileCache(lambda paths: load_private_key(paths[0], self.options.passphrase))
        # ~/.ssh/id_*, offered when no key file is configured: None when missing or unusable
        # (skipped as ssh skips them in batch mode; the parent has said why).
        self._default_keys = FileCache(
            lambda paths: try_private_key(paths[0], self.options.passphrase))
        self.agents = AgentKeys()
        for path in preload_key_files:  # a bad key is a ConfigError before any connection
            try:
                self.key(path)
            except NeedsPassphrase:  # fine if the agent holds it (as ssh uses it then)
                if _agent_copy(self.agent_keys(Host("localhost")), path) is None:
                    raise
        # Connections kept for the next command (fleet sessions only).
        self.connections: dict[tuple[object, ...], paramiko.SSHClient] = {}
        # Bastion connections, shared by every host behind them, for the worker's life.
        self.bastions = Bastions(self)

    def default_keys(self) -> list[paramiko.PKey]:
        """The default identity files (`~/.ssh/id_rsa` … in OpenSSH's order) that load."""
        keys = (self._default_keys.get((expand(p),)) for p in DEFAULT_IDENTITY_FILES)
        return [key for key in keys if key is not None]

    def agent_keys(self, host: Host) -> tuple[paramiko.PKey, ...]:
        """The keys of the agent `host` uses (IdentityAgent, else $SSH_AUTH_SOCK); none for
        `none`, or when the agent cannot be reached."""
        agent = host.identity_agent or ("none" if self.options.use_agent is False
                                        else "SSH_AUTH_SOCK")
        if agent == "none":
            return ()
        if agent == "SSH_AUTH_SOCK" or (agent.startswith("$") and not agent.startswith("${")):
            agent = os.environ.get(agent.removeprefix("$"), "")
        return self.agents.keys(agent) if agent else ()

    def key(self, path: str) -> paramiko.PKey:
        """The private key at `path`, loaded again whenever the file changed (one stat per use).

        Raises `ConfigError` naming the file when it is missing (deleted since
        the last use), readable by others, encrypted without a passphrase or
        not a key. `connect` calls this for each new connection before opening
        it, so a deleted key file no longer authenticates: that host ends
        `error` with this one-line message (a configuration problem, not a
        refusal by the server, hence not `auth_failed`), no connection made.
        A connection kept open from before stays usable, like a ControlMaster.
        """
        return self._keys.get((expand(path),))

    def configured_key(self, host: Host, path: str) -> paramiko.PKey:
        """`key(path)`, or, for a file encrypted with no passphrase given, the agent's copy of
        its key (matched by its public key, as ssh matches it), when `host`'s agent holds it.
        Raises `ConfigError` as `key` does otherwise."""
        try:
            return self.key(path)
        except NeedsPassphrase:
            copy = _agent_copy(self.agent_keys(host), path)
            if copy is None:
                raise
            return copy

    def known_hosts(self, host: Host) -> KnownHosts:
        """The parsed known_hosts files that apply to `host`, parsed again when one changed.

        Called for each new connection and each reuse of a kept one; costs one
        `os.stat` per file unless a file changed. With accept-new the file it
        records into is always read too, even when it is not one of the
        known_hosts files: a host with any entry there is not new.
        """
        key = (host.user_known_hosts, host.global_known_hosts, host.known_hosts_file,
               host.host_key_policy)  # all that known_hosts_files reads of a host
        files = self._known_files.get(key)
        if files is None:
            files = self._known_files[key] = known_hosts_files(host, self.options)
        return self._known.get(files)

    def has_kept(self, host: Host) -> bool:
        """Whether a connection to `host` is kept from an earlier command."""
        return _identity(host) in self.connections

    def still_trusted(self, host: Host, client: paramiko.SSHClient) -> bool:
        """Whether a kept connection's host key is still in known_hosts and not revoked
        (False for a connection that has died)."""
        transport = client.get_transport()
        try:
            key = transport.get_remote_server_key() if transport is not None else None
        except paramiko.SSHException:  # it died while idle: not usable either way
            return False
        if key is None:
            return False
        known, name = self.known_hosts(host), host.known_hosts_name
        # The same parsed files (known_hosts() parses again any that changed) give the
        # same answer for the same name: looked up once per connection, not per command.
        trusted = getattr(transport, "trusted_under", None)
        if trusted is not None and trusted[0] is known and trusted[1] == name:
            return True
        if not known.trusts(name, key):
            return False
        transport.trusted_under = (known, name)  # type: ignore[union-attr]
        return True

    def close_connections(self) -> None:
        """Close every kept connection and bastion connection (a fleet session ends)."""
        for client in self.connections.values():
            close_client(client)
        self.connections.clear()
        self.bastions.close()
        self.agents.close()
        self.transport_threads.stop(wait=False)  # each ends with its connection


def run_on_host(
    host: Host, command: str, context: WorkerContext, reuse: bool = False,
    on_start: Callable[[], object] = lambda: None,
    on_output: Callable[[str, bytes], object] | None = None, stdin: bytes | None = None,
    turn: Turn | None = None,
) -> HostResult:
    """Run `command` on `host` and return what happened. Never raises.

    `on_start` is called if the host had to wait for a handshake slot, when
    its turn comes: its deadlines start then, not when it was dequeued.
    `turn`: the host's handshake slot, when the caller waited for it already.
    `on_output("stdout" | "stderr", chunk)` sees output as it arrives. `stdin` is
    sent to the command's standard input; it gets end of file either way.
    With `reuse`, the authenticated connection is kept in the context for the
    next command on this host; a kept connection that has died is replaced
    transparently (only when the command provably did not start on it).
    """
    def attempt(started: float, begin: float) -> _Command:
        return _Command(host, command, context, on_output, stdin, started, begin)

    return over_connection(host, context, attempt, reuse, on_start, turn)


class Attempt(Protocol):
    """One try at a host's work on a connected client (a command, a file transfer).

    `run` does the work and returns the result; it raises `StaleConnection`
    when the connection proved dead before anything started (the work is
    then tried once more on a new connection) and `Failure` for a host-level
    failure. `finish` makes a result of a status and a one-line error.
    """

    def run(self, client: paramiko.SSHClient) -> HostResult: ...

    def finish(self, status: Status, error: str | None = None) -> HostResult: ...


def over_connection(
    host: Host, context: WorkerContext, attempt: Callable[[float, float], Attempt],
    reuse: bool = False, on_start: Callable[[], object] = lambda: None,
    turn: Turn | None = None,
) -> HostResult:
    """Connect to `host` (or reuse its kept connection) and run one `Attempt` there.

    `attempt(started, begin)` makes the attempt once this host's handshake
    turn has come (`started`: epoch seconds, `begin`: the monotonic clock its
    deadlines count from). The pacing, the connect deadline, the
    kept-connection rules and the turning of failures into results are
    `run_on_host`'s; never raises.
    """
    kept = context.connections.pop(_identity(host), None) if reuse else None
    if kept is not None and not context.still_trusted(host, kept):
        close_client(kept)  # key revoked or removed since: a new connection verifies afresh
        kept = None
    if kept is not None:
        if turn is not None:
            turn.release()  # no handshake: the slot goes to the next host
            turn = None
        try:
            result = _run_once(host, context, kept, on_start, attempt)
            return _keep_or_close(result, host, context, kept)
        except StaleConnection:
            close_client(kept)  # it died while idle; the command never started: reconnect
    return _over_new_connection(host, context, attempt, reuse, on_start, turn)


def _over_new_connection(
    host: Host, context: WorkerContext, attempt: Callable[[float, float], Attempt],
    reuse: bool, on_start: Callable[[], object], turn: Turn | None = None,
) -> HostResult:
    opened: list[paramiko.SSHClient] = []
    try:
        result = _run_once(host, context, None, on_start, attempt, opened, turn)
    except StaleConnection as stale:
        assert stale.result is not None  # noqa: S101 - set by _run_once before re-raising
        result = stale.result
    return _keep_or_close(result, host, context, opened[0] if opened else None, reuse)


class KeptCommand:
    """A plain command (no input, no sudo, no live output) started on a host's kept
    connection with no thread waiting for it.

    `start` sends it and returns; the transport's own thread then confirms the
    channel and sends exec. Once there is something to do (output to read, the
    end), `on_ready` is called (once, from whichever thread saw it) and a
    session thread calls `finish`, which drains, makes the result and keeps the
    connection: one wake-up of a session thread per command, where waiting
    from the start cost two.
    """

    def __init__(self, host: Host, command: str, context: WorkerContext) -> None:
        self.host, self.command, self.context = host, command, context
        self._attempt_at = functools.partial(_Command, host, command, context, None, None)
        self.on_ready: Callable[[], object] = lambda: None  # set before `start`
        self._lock = threading.Lock()
        self._awaited = 2  # `start` done, and the first output or end: in either order
        self._client: paramiko.SSHClient | None = None
        self._running: Running | HostResult | None = None
        self._attempt: _Command | None = None

    def start(self) -> bool:
        """Start the command on the kept connection; False (nothing sent, the connection
        left as it was) when there is none or it cannot be used: then `run_on_host`."""
        context, host = self.context, self.host
        identity = _identity(host)
        client = context.connections.get(identity)
        if client is None or not context.still_trusted(host, client):
            return False  # run_on_host closes an untrusted one and connects afresh
        del context.connections[identity]
        attempt = self._attempt_at(time.time(), time.monotonic())
        try:
            running = start_command(client, host, self.command, context, attempt.out,
                                    attempt.err, attempt.finish, on_first=self._ready)
        except Exception:  # noqa: BLE001 - a dead connection: run_on_host reconnects
            context.connections[identity] = client
            return False
        self._client, self._running, self._attempt = client, running, attempt
        if isinstance(running, HostResult):  # it could not start: that is the end
            self._ready()
        self._ready()  # started
        return True

    def _ready(self) -> None:
        # Called once by `start`, once by the channel's first event (the transport's
        # thread), once more if it could not start: `on_ready` when the count hits 0.
        with self._lock:
            self._awaited -= 1
            hand = self._awaited == 0
        if hand:
            self.on_ready()

    def finish(self, on_start: Callable[[], object] = lambda: None) -> HostResult:
        """Wait for the end (on a session thread, after `on_ready`); the host's result."""
        host, context, client, attempt = self.host, self.context, self._client, self._attempt
        running = self._running
        assert client is not None and attempt is not None  # noqa: S101 - start() returned True
        try:
            result = running if isinstance(running, HostResult) else running.end()  # type: ignore[union-attr]
        except StaleConnection:  # it died while idle; the command never started: reconnect
            close_client(client)
            return _over_new_connection(host, context, self._attempt_at, True, on_start)
        except Exception as error:  # a bug or an unforeseen paramiko error: still a value
            close_client(client)
            return attempt.finish(Status.ERROR, f"unexpected {type(error).__name__}: {error}")
        return _keep_or_close(result, host, context, client)


def _agent_copy(agent_keys: Sequence[paramiko.PKey], path: str) -> paramiko.PKey | None:
    """The agent key whose public key is that of key file `path` (or its `.pub`)."""
    blob = public_key_blob(expand(path))
    return next((k for k in agent_keys if blob is not None and k.asbytes() == blob), None)


def _identity(host: Host) -> tuple[object, ...]:
    # What a kept connection was made with: a host whose settings changed gets a new one.
    return (host.name, host.address, host.port, host.user, host.key_files, host.known_hosts_file,
            host.identity_agent, host.identities_only, host.default_keys, host.via,
            host.proxy_command)


def _keep_or_close(
    result: HostResult, host: Host, context: WorkerContext, client: paramiko.SSHClient | None,
    reuse: bool = True,
) -> HostResult:
    if client is None:
        return result
    transport = client.get_transport()
    if reuse and transport is not None and transport.is_active() and result.status.ran:
        if isinstance(transport, FleetTransport):
            # A kept connection's commands are a few socket calls each: no poll before them.
            transport.packetizer.wait_in_kernel()
        context.connections[_identity(host)] = client
    else:
        close_client(client)
    return result


class _Command:
    """`run_on_host`'s attempt: exec the command, drain its output."""

    def __init__(self, host: Host, command: str, context: WorkerContext,
                 on_output: Callable[[str, bytes], object] | None, stdin: bytes | None,
                 started: float, begin: float) -> None:
        options = context.options
        self.host, self.command, self.context, self.stdin = host, command, context, stdin
        self.started, self.begin = started, begin
        self.out = Capped(options.max_output, on_output and functools.partial(on_output, "stdout"))
        self.err = Capped(options.max_output, on_output and functools.partial(on_output, "stderr"))

    def finish(self, status: Status, error: str | None = None, exit_code: int | None = None,
               signal: str | None = None) -> HostResult:
        out, err = self.out, self.err
        return HostResult(
            host=self.host.name, status=status, exit_code=exit_code, signal=signal,
            stdout=out.data, stderr=err.data,
            stdout_truncated=out.truncated, stderr_truncated=err.truncated,
            started=self.started, duration=round(time.monotonic() - self.begin, 6), error=error,
        )

    def run(self, client: paramiko.SSHClient) -> HostResult:
        return exec_and_drain(client, self.host, self.command, self.context, self.out, self.err,
                              self.finish, self.stdin)


def _run_once(
    host: Host, context: WorkerContext, client: paramiko.SSHClient | None,
    on_start: Callable[[], object], make: Callable[[float, float], Attempt],
    opened: list[paramiko.SSHClient] | None = None, turn: Turn | None = None,
) -> HostResult:
    # Pace set-up: a burst of connects overflows accept queues. The deadlines
    # (and the caller's clock, via on_start) start once this host's turn comes
    # (now, or already: `turn`); connect gives the slot back as soon as the
    # server's banner came.
    if turn is None:
        turn = Turn(context.handshakes if client is None else None, on_start)
    started, begin = time.time(), time.monotonic()
    attempt = make(started, begin)
    try:
        if client is None:
            client = connect(host, context, begin, turn)
            if opened is not None:
                opened.append(client)
        turn.release()
        return attempt.run(client)
    except StaleConnection as stale:
        stale.result = attempt.finish(stale.status, stale.message)
        raise
    except Failure as failure:
        return attempt.finish(failure.status, failure.message)
    except Exception as error:  # a bug or an unforeseen paramiko error: still a value
        if client is not None:
            close_client(client)
        return attempt.finish(Status.ERROR, f"unexpected {type(error).__name__}: {error}")
    finally:
        turn.release()
