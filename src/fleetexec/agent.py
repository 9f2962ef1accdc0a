"""The persistent agent behind `fleetexec run --persist`, in the spirit of OpenSSH ControlPersist.

A per-user background process keeps each host's authenticated connection
open between CLI calls, so the next `fleetexec run --persist` skips the
handshakes. `AgentBackend` is the client side (a `Backend`); the agent runs
one `FleetSession` engine per distinct set of options. It listens on a Unix
socket in a private directory (0700 and owned by the user, socket 0600, peers
checked with SO_PEERCRED), speaks newline-delimited JSON (never pickle), and
exits after `idle` seconds without a request. Whoever can open that socket can
run commands on your hosts without authenticating, which is why the directory
is checked on every use.

Secrets travel only in a request's `secrets` field over that socket; the
agent's environment never holds them, and its engines are keyed by an HMAC
of the options, never by a password.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import os
import secrets
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .backends import Job, Output
from .exceptions import ConfigError, FleetError
from .host import Host
from .options import Options
from .results import HostResult, Status

__all__ = ["AgentBackend", "choose_socket_path", "socket_path", "stop_agent"]

_MAX_REQUEST = 64 * 1024 * 1024
_REQUEST_WAIT = 10.0  # a client that does not finish its request by then is dropped
_MAX_CLIENTS = 32
_SPAWN_WAIT = 10.0
_SECRET_VARIABLES = ("FLEETEXEC_PASSWORD", "FLEETEXEC_PASSPHRASE", "FLEETEXEC_SUDO_PASSWORD")


def socket_path() -> Path:
    """Where this user's agent listens (see `choose_socket_path`)."""
    return choose_socket_path()[0]


def choose_socket_path() -> tuple[Path, list[str]]:
    """The first usable private directory of `$XDG_RUNTIME_DIR/fleetexec`,
    `$TMPDIR/fleetexec-UID` and `~/.fleetexec/run`, and why earlier ones were skipped.

    A directory someone else made (to block or spy on the agent) is skipped,
    so another local user cannot disable `--persist` by creating it first.
    """
    candidates = [Path(tempfile.gettempdir()) / f"fleetexec-{os.getuid()}",
                  Path.home() / ".fleetexec" / "run"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        candidates.insert(0, Path(os.environ["XDG_RUNTIME_DIR"]) / "fleetexec")
    skipped: list[str] = []
    for directory in candidates:
        try:
            _private_directory(directory)
        except (OSError, ConfigError) as error:
            skipped.append(str(error))
            continue
        return directory / "agent.sock", skipped
    raise ConfigError("no private directory for the agent socket: " + "; ".join(skipped))


def _private_directory(directory: Path) -> None:
    with contextlib.suppress(FileExistsError):
        directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.mkdir(mode=0o700)
    info = os.lstat(directory)
    if (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid()
            or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO)):
        raise ConfigError(f"{directory} is not a directory owned by you with mode 0700")


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


def _encode_host(host: Host) -> dict[str, Any]:
    fields = dataclasses.asdict(host)
    fields["explicit"] = sorted(host.explicit)
    return fields


def _decode_host(fields: object) -> Host:
    if not isinstance(fields, dict):
        raise ConfigError("a host must be a JSON object")
    lists = {k: tuple(v) for k, v in fields.items()
             if k in ("key_files", "groups", "user_known_hosts", "global_known_hosts")
             and isinstance(v, list)}
    try:
        return Host(**dict(fields, **lists, explicit=frozenset(fields.get("explicit", ()))))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"bad host: {error}") from None


def _agent_socket(agent: str | None) -> str | None:
    """An IdentityAgent read from the environment (SSH_AUTH_SOCK, $VAR), as a path."""
    if agent == "SSH_AUTH_SOCK" or (agent or "").startswith("$") and not (
            agent or "").startswith("${"):
        return os.environ.get((agent or "").removeprefix("$")) or "none"
    return agent


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


# ---- the client (the CLI process) ------------------------------------------------------


class AgentBackend:
    """Runs jobs in this user's agent (started on first use), on its kept connections."""

    def __init__(self, idle: float = 600.0) -> None:
        self.idle = idle
        self._conn: socket.socket | None = None
        self.notes: list[str] = []  # directories skipped for the socket, for the user

    def start(self, hosts: Sequence[Host], job: Job) -> Iterator[HostResult | Output]:
        """Send the job to the agent; yield each result as the agent forwards it."""
        if job.transfer is not None:
            raise ConfigError("put/get cannot be combined with --persist (the agent runs "
                              "commands only)")
        # The agent outlives this shell: it uses the ssh-agent this client uses now.
        hosts = [dataclasses.replace(h, identity_agent=_agent_socket(h.identity_agent))
                 for h in hosts]
        path, skipped = choose_socket_path()
        self.notes = [f"{reason}; the agent uses {path.parent} instead" for reason in skipped]
        conn = self._conn = _connect_or_spawn(path, self.idle)
        _send(conn, {"type": "run", "command": job.command, "options": job.options.to_json(),
                     "secrets": job.options.secrets(), "stream_output": job.stream_output,
                     "stdin": None if job.stdin is None else base64.b64encode(job.stdin).decode(),
                     "hosts": [_encode_host(h) for h in hosts]})
        return self._results(conn, [h.name for h in hosts])

    def _results(self, conn: socket.socket, names: list[str]) -> Iterator[HostResult | Output]:
        pending = set(names)
        try:
            for line in conn.makefile("rb"):
                message = json.loads(line)
                if message["type"] == "result":
                    result = _decode_result(message["result"])
                    pending.discard(result.host)
                    yield result
                elif message["type"] == "output":
                    yield Output(message["host"], "stderr" if message["stream"] == "stderr"
                                 else "stdout", base64.b64decode(message["data"]))
                elif message["type"] == "error":
                    raise ConfigError(message["message"])
                elif message["type"] == "end":
                    return
        except OSError:
            if self._conn is None:  # cancelled: our own close ended the read
                return
        finally:
            self._close()
        for name in names:
            if name in pending:
                yield HostResult(name, Status.ERROR, error="the fleetexec agent went away "
                                 "mid-run; the command may or may not have run")

    def cancel(self) -> None:
        """Hang up: the agent stops this run (and only this run)."""
        self._close()

    def close(self) -> None:
        """Nothing to release here: the agent keeps the connections."""
        self._close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


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
    _private_directory(path.parent)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        raise
    return conn


def _connect_or_spawn(path: Path, idle: float) -> socket.socket:
    try:
        return _connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        pass
    # No secret in the agent's environment: it outlives this run.
    env = {k: v for k, v in os.environ.items() if k not in _SECRET_VARIABLES}
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    with open(path.parent / "agent.log", "ab") as log:
        # The agent detaches itself (it forks and this child exits), so waiting here is brief.
        subprocess.run(  # noqa: S603 - our own interpreter and module, fixed arguments
            [sys.executable, *safe_path, "-m", "fleetexec.agent", "--socket", str(path),
             "--idle", str(idle), "--detach"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            cwd="/", env=env, check=False, timeout=_SPAWN_WAIT,
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
    """Serves run requests; one engine (backend with kept connections) per set of options."""

    def __init__(self, path: Path, idle: float) -> None:
        from .backends.process import ProcessBackend

        self.path, self.idle = path, idle
        self.engines: dict[str, tuple[ProcessBackend, threading.Lock]] = {}
        self.key = secrets.token_bytes(32)  # engines are keyed by an HMAC, not by secrets
        self.lock = threading.Lock()
        self.clients = threading.BoundedSemaphore(_MAX_CLIENTS)
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
                if not self.clients.acquire(blocking=False):
                    with conn, contextlib.suppress(OSError):
                        _send(conn, {"type": "error", "message": "the agent is busy "
                                     f"({_MAX_CLIENTS} clients); try again"})
                    continue
                threading.Thread(target=self._handle, args=(conn,), daemon=True).start()
        finally:
            self._withdraw()
            listener.close()
            for backend, _ in self.engines.values():
                backend.close()

    def _withdraw(self) -> None:
        # Once only: a later agent may already listen at the same path.
        with self.lock:
            if not self.withdrawn:
                self.withdrawn = True
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()

    def _listen(self) -> socket.socket:
        _private_directory(self.path.parent)
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
        try:
            with conn:
                creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                        struct.calcsize("3i"))
                if struct.unpack("3i", creds)[1] != os.getuid():
                    return  # the directory should make this impossible; refuse anyway
                try:
                    request = self._read_request(conn)
                    if request["type"] == "stop":
                        self.stopping.set()
                        self._withdraw()  # gone from the moment `agent stop` returns
                        _send(conn, {"type": "stopped"})
                        return
                    self._serve_run(conn, request)
                except (FleetError, ValueError, TypeError, KeyError, RecursionError) as error:
                    with contextlib.suppress(OSError):
                        _send(conn, {"type": "error", "message": f"bad request: {error}"})
                except OSError:
                    pass  # the client went away
        finally:
            self.clients.release()

    def _read_request(self, conn: socket.socket) -> dict[str, Any]:
        conn.settimeout(_REQUEST_WAIT)
        line = conn.makefile("rb").readline(_MAX_REQUEST)
        conn.settimeout(None)
        request = json.loads(line)
        if not isinstance(request, dict) or request.get("type") not in ("run", "stop"):
            raise ValueError("expected an object with type 'run' or 'stop'")
        if request["type"] == "run" and not (
                isinstance(request.get("command"), str) and isinstance(request.get("hosts"), list)
                and isinstance(request.get("secrets", {}), dict)):
            raise ValueError("a run needs a command string, a host list and options")
        return request

    def _serve_run(self, conn: socket.socket, request: dict[str, Any]) -> None:
        from .api import FleetSession
        from .backends.process import ProcessBackend

        options = Options.from_json(request.get("options", {}), request.get("secrets"))
        # The client's session runs the batches; here each request is one batch.
        options = options.replace(batch=None, max_fail=None, fail_fast=False)
        hosts = [_decode_host(h) for h in request["hosts"]]
        with self.lock:
            self.active += 1
            key = options.fingerprint(self.key)
            if key not in self.engines:
                self.engines[key] = (ProcessBackend(soft_cancel=True), threading.Lock())
            backend, engine_lock = self.engines[key]
        try:
            session = FleetSession(hosts, options, backend=backend)
            hangup = _Hangup(conn, session)
            with engine_lock:  # one run at a time per engine
                if hangup.running():  # False if the client left while it waited
                    result = session.run(request["command"], on_result=lambda r: _send(
                        conn, {"type": "result", "result": _encode_result(r)}),
                        on_output=_forward_output(conn) if request.get("stream_output")
                        else None, stdin=_stdin_of(request))
                    hangup.finished()
                    _send(conn, {"type": "end", "interrupted": result.interrupted})
        finally:
            with self.lock:
                self.active -= 1
                self.last_used = time.monotonic()


def _stdin_of(request: dict[str, Any]) -> bytes | None:
    data = request.get("stdin")
    return None if data is None else base64.b64decode(data, validate=True)


def _forward_output(conn: socket.socket) -> Callable[[Output], None]:
    def forward(output: Output) -> None:
        _send(conn, {"type": "output", "host": output.host, "stream": output.stream,
                     "data": base64.b64encode(output.data).decode()})

    return forward


class _Hangup:
    """Cancels a client's run when the client goes away (Ctrl-C), and only while it runs:
    the engine is shared, so a cancel at any other time would hit another client's run."""

    def __init__(self, conn: socket.socket, session: Any) -> None:
        self.session, self.lock = session, threading.Lock()
        self.state = "waiting"
        threading.Thread(target=self._watch, args=(conn,), daemon=True).start()

    def _watch(self, conn: socket.socket) -> None:
        # The client sends nothing after its request: EOF means it went away.
        with contextlib.suppress(OSError):
            conn.recv(1)
        with self.lock:
            if self.state == "running":
                self.session.cancel()
            self.state = "gone"

    def running(self) -> bool:
        with self.lock:
            if self.state == "waiting":
                self.state = "running"
            return self.state == "running"

    def finished(self) -> None:
        with self.lock:
            self.state = "finished"


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the agent process (`python -m fleetexec.agent`)."""
    parser = argparse.ArgumentParser(prog="fleetexec-agent")
    parser.add_argument("--socket", type=Path, default=None)
    parser.add_argument("--idle", type=float, default=600.0)
    parser.add_argument("--detach", action="store_true",
                        help="fork and let the starting process return at once")
    args = parser.parse_args(argv)
    if args.detach and os.fork() > 0:  # before any thread exists
        os._exit(0)
    _Agent(args.socket or socket_path(), args.idle).serve()


if __name__ == "__main__":
    main()
