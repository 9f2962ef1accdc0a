"""The persistent agent behind `fleetexec run --persist`, in the spirit of OpenSSH ControlPersist.

A per-user background process keeps each host's authenticated connection
open between CLI calls, so the next `fleetexec run --persist` skips the
handshakes. It listens on a Unix socket in a private directory (0700 and
owned by the user, socket 0600, peers checked with SO_PEERCRED), speaks
newline-delimited JSON (never pickle), and exits after `idle` seconds without
a request. Whoever can open that socket can run commands on your hosts
without authenticating, which is why the directory is checked on every use.

Results, statuses and host key checks are those of `FleetSession`: a
connection is verified when it is made, and a dead one is replaced.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .exceptions import ConfigError, FleetError
from .host import Host
from .results import Collector, FleetResult, HostResult, OnResult, Status
from .ssh.options import expand

__all__ = ["run_via_agent", "socket_path", "stop_agent"]

_MAX_REQUEST = 64 * 1024 * 1024
_SPAWN_WAIT = 10.0


def socket_path() -> Path:
    """Where this user's agent listens (`$XDG_RUNTIME_DIR/fleetexec` or `/tmp/fleetexec-UID`)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "fleetexec" / "agent.sock"
    return Path(tempfile.gettempdir()) / f"fleetexec-{os.getuid()}" / "agent.sock"


def _private_directory(path: Path) -> None:
    directory = path.parent
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    info = os.lstat(directory)
    if (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid()
            or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO)):
        raise ConfigError(f"{directory} must be a directory owned by you with mode 0700; "
                          "refusing to use its agent socket")


# ---- the wire format ---------------------------------------------------------------


def _encode_result(result: HostResult) -> dict[str, Any]:
    fields = dataclasses.asdict(result)
    fields["status"] = result.status.value
    fields["stdout"] = base64.b64encode(result.stdout).decode()
    fields["stderr"] = base64.b64encode(result.stderr).decode()
    return fields


def _decode_result(fields: dict[str, Any]) -> HostResult:
    fields = dict(fields, status=Status(fields["status"]))
    fields["stdout"] = base64.b64decode(fields["stdout"])
    fields["stderr"] = base64.b64decode(fields["stderr"])
    return HostResult(**fields)


def _decode_host(fields: dict[str, Any]) -> Host:
    return Host(**dict(fields, key_files=tuple(fields["key_files"]),
                       groups=tuple(fields["groups"])))


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


# ---- the client (the CLI process) ------------------------------------------------------


def run_via_agent(
    hosts: Sequence[Host], command: str, *, idle: float, on_result: OnResult | None = None,
    **options: Any,
) -> FleetResult:
    """Like `fleetexec.run`, through this user's agent (started on first use).

    `options` are `fleetexec.run` keyword arguments (JSON-serialisable ones).
    """
    if options.get("use_agent"):
        raise ConfigError("--use-agent cannot be combined with --persist")
    begin = time.monotonic()
    collector = Collector([h.name for h in hosts], on_result)
    # Paths are relative to this process, not to the agent's directory.
    hosts = [dataclasses.replace(h, key_files=tuple(expand(p) for p in h.key_files),
                                 known_hosts_file=h.known_hosts_file and expand(h.known_hosts_file))
             for h in hosts]
    options["known_hosts"] = [expand(p) for p in options.get("known_hosts", ())]
    conn = _connect_or_spawn(idle)
    interrupted = False
    try:
        request = {"type": "run", "command": command, "options": options,
                   "hosts": [dataclasses.asdict(h) for h in hosts]}
        _send(conn, request)
        for line in conn.makefile("rb"):
            message = json.loads(line)
            if message["type"] == "result":
                collector.add(_decode_result(message["result"]))
            elif message["type"] == "error":
                raise ConfigError(message["message"])
            elif message["type"] == "end":
                interrupted = message["interrupted"]
                break
    except KeyboardInterrupt:
        interrupted = True  # closing the socket makes the agent interrupt the run
    finally:
        conn.close()
    for name in collector.pending:
        collector.add(HostResult(name, Status.INTERRUPTED if interrupted else Status.ERROR,
                                 error="interrupted" if interrupted else "the agent went away"))
    return collector.result(round(time.monotonic() - begin, 6), interrupted)


def stop_agent() -> bool:
    """Ask this user's agent to close its connections and exit; False if none runs."""
    try:
        conn = _connect(socket_path())
    except OSError:
        return False
    with conn:
        _send(conn, {"type": "stop"})
        conn.makefile("rb").readline()
    return True


def _connect(path: Path) -> socket.socket:
    _private_directory(path)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        raise
    return conn


def _connect_or_spawn(idle: float) -> socket.socket:
    path = socket_path()
    try:
        return _connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        pass
    log = open(path.parent / "agent.log", "ab")  # noqa: SIM115 - handed to the child
    with log:
        subprocess.Popen(  # noqa: S603 - our own interpreter and module, fixed arguments
            [sys.executable, "-m", "fleetexec.agent", "--socket", str(path), "--idle", str(idle)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
    deadline = time.monotonic() + _SPAWN_WAIT
    while True:
        try:
            return _connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise FleetError(f"the fleetexec agent did not start; see "
                                 f"{path.parent / 'agent.log'}") from None
            time.sleep(0.05)


# ---- the agent process -----------------------------------------------------------------


class _Agent:
    """Serves run requests on kept connections; one worker pool per distinct set of options."""

    def __init__(self, path: Path, idle: float) -> None:
        self.path, self.idle = path, idle
        self.pools: dict[str, Any] = {}  # options key -> (WorkerPool, its lock)
        self.lock = threading.Lock()
        self.active = 0
        self.last_used = time.monotonic()
        self.stopping = threading.Event()
        self.withdrawn = False

    def serve(self) -> None:
        listener = self._listen()
        listener.settimeout(1.0)
        try:
            while not self.stopping.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    with self.lock:
                        idle_for = time.monotonic() - self.last_used
                        if not self.active and idle_for > self.idle:
                            break
                    continue
                threading.Thread(target=self._handle, args=(conn,), daemon=True).start()
        finally:
            self._withdraw()
            listener.close()
            for pool, _ in self.pools.values():
                pool.close(graceful=True)

    def _withdraw(self) -> None:
        # Once only: a later agent may already listen at the same path.
        with self.lock:
            if not self.withdrawn:
                self.withdrawn = True
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()

    def _listen(self) -> socket.socket:
        _private_directory(self.path)
        with contextlib.suppress(FileNotFoundError, ConnectionRefusedError):
            _connect(self.path).close()
            raise SystemExit("fleetexec agent: another agent already listens")  # lost a race
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # stale: its agent is gone
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is 0600 from its first moment
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old_umask)
        listener.listen(16)
        return listener

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            if struct.unpack("3i", creds)[1] != os.getuid():
                return  # the directory should make this impossible; refuse anyway
            line = conn.makefile("rb").readline(_MAX_REQUEST)
            try:
                request = json.loads(line)
            except ValueError:
                return
            if request.get("type") == "stop":
                self.stopping.set()
                self._withdraw()  # gone from the moment `agent stop` returns
                _send(conn, {"type": "stopped"})
                return
            with self.lock:
                self.active += 1
            try:
                self._run(conn, request)
            except (FleetError, ValueError, TypeError) as error:
                with contextlib.suppress(OSError):
                    _send(conn, {"type": "error", "message": str(error)})
            finally:
                with self.lock:
                    self.active -= 1
                    self.last_used = time.monotonic()

    def _run(self, conn: socket.socket, request: dict[str, Any]) -> None:
        from .api import DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, _prepare
        from .executor import WorkerPool, plan

        options = request["options"]
        # The CLI sends every run() option except these; its hosts carry their own
        # user, port, keys and timeouts.
        settings = {k: v for k, v in options.items() if k not in ("parallel", "processes")}
        hosts, session_options = _prepare(
            [_decode_host(h) for h in request["hosts"]], user=None, port=None, key_files=(),
            connect_timeout=DEFAULT_CONNECT_TIMEOUT, timeout=DEFAULT_TIMEOUT, **settings)
        key = json.dumps(options, sort_keys=True)
        with self.lock:
            entry = self.pools.get(key)
            if entry is None or entry[0].closed:
                sizing = plan(max(len(hosts), 64), options.get("parallel"),
                              options.get("processes"))
                entry = self.pools[key] = (WorkerPool(session_options, sizing, reuse=True),
                                           threading.Lock())
        pool, pool_lock = entry
        cancel = threading.Event()
        threading.Thread(target=_watch_for_hangup, args=(conn, cancel), daemon=True).start()
        with pool_lock:  # one run at a time per pool: its results queue is shared
            def forward(result: HostResult) -> None:
                _send(conn, {"type": "result", "result": _encode_result(result)})

            result = pool.run(hosts, request["command"], forward, cancel=cancel)
        _send(conn, {"type": "end", "interrupted": result.interrupted})


def _watch_for_hangup(conn: socket.socket, cancel: threading.Event) -> None:
    # The client sends nothing after its request: EOF means it went away (Ctrl-C).
    with contextlib.suppress(OSError):
        if conn.recv(1) == b"":
            cancel.set()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the agent process (`python -m fleetexec.agent`)."""
    parser = argparse.ArgumentParser(prog="fleetexec-agent")
    parser.add_argument("--socket", type=Path, default=socket_path())
    parser.add_argument("--idle", type=float, default=600.0)
    args = parser.parse_args(argv)
    _Agent(args.socket, args.idle).serve()


if __name__ == "__main__":
    main()
