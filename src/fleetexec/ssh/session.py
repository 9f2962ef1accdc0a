"""One host, one command, one `HostResult`: connect, verify, authenticate, exec, drain.

`run_on_host` never raises: every failure becomes a `Status` and a one-line,
secret-free message. Runs inside worker processes; `WorkerContext` holds what
is done once per process (known_hosts parsed, keys loaded, the watchdog, the
slots that pace handshakes and heavy reads, connections kept for reuse).
The steps live beside this module: `connect`, `command`, `transport`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import paramiko

from ..host import Host
from ..results import HostResult, Status
from .command import BULK_READERS, Capped, execute
from .connect import connect
from .credentials import load_private_key
from .failure import Failure, StaleConnection
from .hostkeys import KnownHosts
from .options import SessionOptions, expand
from .pacing import Turn
from .transport import close_client
from .watchdog import Watchdog

__all__ = ["WorkerContext", "run_on_host"]


class WorkerContext:
    """What a worker process does once, not once per host."""

    def __init__(self, options: SessionOptions) -> None:
        self.options = options
        self.watchdog = Watchdog()
        self.handshakes = threading.BoundedSemaphore(max(1, options.handshakes_in_flight))
        self.bulk_readers = threading.BoundedSemaphore(BULK_READERS)
        self._known: dict[tuple[str, ...], KnownHosts] = {}
        self._keys: dict[str, paramiko.PKey] = {}
        self._lock = threading.Lock()
        for path in options.preload_key_files:
            self.key(path)
        # Connections kept for the next command (fleet sessions only).
        self.connections: dict[tuple[object, ...], paramiko.SSHClient] = {}
        self.agent_keys: tuple[paramiko.PKey, ...] = ()
        if options.use_agent and options.agent_socket:
            # Workers inherit the forkserver's environment, not the caller's.
            os.environ["SSH_AUTH_SOCK"] = options.agent_socket
            self.agent_keys = tuple(paramiko.Agent().get_keys())

    def key(self, path: str) -> paramiko.PKey:
        """The private key at `path`, loaded on first use (raises `ConfigError`)."""
        with self._lock:
            if path not in self._keys:
                self._keys[path] = load_private_key(path, self.options.passphrase)
            return self._keys[path]

    def known_hosts(self, host: Host) -> KnownHosts:
        """The parsed known_hosts files that apply to `host`."""
        files = tuple(expand(p) for p in self.options.known_hosts_files)
        if host.known_hosts_file:
            files += (expand(host.known_hosts_file),)
        with self._lock:
            if files not in self._known:
                self._known[files] = KnownHosts.load(files)
            return self._known[files]

    def close_connections(self) -> None:
        """Close every kept connection (a fleet session ends)."""
        for client in self.connections.values():
            close_client(client)
        self.connections.clear()


def run_on_host(
    host: Host, command: str, context: WorkerContext, reuse: bool = False,
    on_start: Callable[[], object] = lambda: None,
) -> HostResult:
    """Run `command` on `host` and return what happened. Never raises.

    `on_start` is called if the host had to wait for a handshake slot, when
    its turn comes: its deadlines start then, not when it was dequeued.
    With `reuse`, the authenticated connection is kept in the context for the
    next command on this host; a kept connection that has died is replaced
    transparently (only when the command provably did not start on it).
    """
    kept = context.connections.pop(_identity(host), None) if reuse else None
    if kept is not None:
        try:
            result = _run_once(host, command, context, kept, on_start)
            return _keep_or_close(result, host, context, kept)
        except StaleConnection:
            close_client(kept)  # it died while idle; the command never started: reconnect
    opened: list[paramiko.SSHClient] = []
    try:
        result = _run_once(host, command, context, None, on_start, opened)
    except StaleConnection as stale:
        assert stale.result is not None  # noqa: S101 - set by _run_once before re-raising
        result = stale.result
    return _keep_or_close(result, host, context, opened[0] if opened else None, reuse)


def _identity(host: Host) -> tuple[object, ...]:
    # What a kept connection was made with: a host whose settings changed gets a new one.
    return (host.name, host.address, host.port, host.user, host.key_files, host.known_hosts_file)


def _keep_or_close(
    result: HostResult, host: Host, context: WorkerContext, client: paramiko.SSHClient | None,
    reuse: bool = True,
) -> HostResult:
    if client is None:
        return result
    transport = client.get_transport()
    if reuse and transport is not None and transport.is_active() and result.status.ran:
        context.connections[_identity(host)] = client
    else:
        close_client(client)
    return result


def _run_once(
    host: Host, command: str, context: WorkerContext, client: paramiko.SSHClient | None,
    on_start: Callable[[], object], opened: list[paramiko.SSHClient] | None = None,
) -> HostResult:
    options = context.options
    # Pace set-up: a burst of connects overflows accept queues. The deadlines
    # (and the caller's clock, via on_start) start once this host's turn comes.
    turn = Turn(context.handshakes if client is None else None, on_start)
    started, begin = time.time(), time.monotonic()
    out, err = Capped(options.max_output), Capped(options.max_output)

    def finish(status: Status, error: str | None = None, exit_code: int | None = None,
               signal: str | None = None) -> HostResult:
        return HostResult(
            host=host.name, status=status, exit_code=exit_code, signal=signal,
            stdout=bytes(out.data), stderr=bytes(err.data),
            stdout_truncated=out.truncated, stderr_truncated=err.truncated,
            started=started, duration=round(time.monotonic() - begin, 6), error=error,
        )

    try:
        if client is None:
            client = connect(host, context, begin)
            if opened is not None:
                opened.append(client)
        turn.release()
        return execute(client, host, command, context, out, err, finish)
    except StaleConnection as stale:
        stale.result = finish(stale.status, stale.message)
        raise
    except Failure as failure:
        return finish(failure.status, failure.message)
    except Exception as error:  # a bug or an unforeseen paramiko error: still a value
        if client is not None:
            close_client(client)
        return finish(Status.ERROR, f"unexpected {type(error).__name__}: {error}")
    finally:
        turn.release()
