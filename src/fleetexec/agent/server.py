"""The agent process (`python -m fleetexec.agent`): serves run requests on kept connections.

It runs one `FleetSession` engine per distinct set of options, keyed by an
HMAC of the options (never by a password), checks each peer with
SO_PEERCRED, and exits after `idle` seconds without a request.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..backends import Output
from ..exceptions import FleetError
from ..options import Options
from .paths import private_directory, socket_path
from .wire import connect, decode_host, encode_result, send

__all__ = ["main"]

_MAX_REQUEST = 64 * 1024 * 1024
_REQUEST_WAIT = 10.0  # a client that does not finish its request by then is dropped
_MAX_CLIENTS = 32


class _Agent:
    """Serves run requests; one engine (backend with kept connections) per set of options."""

    def __init__(self, path: Path, idle: float) -> None:
        from ..backends.process import ProcessBackend

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
                        send(conn, {"type": "error", "message": "the agent is busy "
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
        private_directory(self.path.parent)
        with contextlib.suppress(FileNotFoundError, ConnectionRefusedError):
            connect(self.path).close()
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
                        send(conn, {"type": "stopped"})
                        return
                    self._serve_run(conn, request)
                except (FleetError, ValueError, TypeError, KeyError, RecursionError) as error:
                    with contextlib.suppress(OSError):
                        send(conn, {"type": "error", "message": f"bad request: {error}"})
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
        from ..api import FleetSession
        from ..backends.process import ProcessBackend

        options = Options.from_json(request.get("options", {}), request.get("secrets"))
        # The client's session runs the batches; here each request is one batch.
        options = options.replace(batch=None, max_fail=None, fail_fast=False)
        hosts = [decode_host(h) for h in request["hosts"]]
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
                    result = session.run(request["command"], on_result=lambda r: send(
                        conn, {"type": "result", "result": encode_result(r)}),
                        on_output=_forward_output(conn) if request.get("stream_output")
                        else None, stdin=_stdin_of(request))
                    hangup.finished()
                    send(conn, {"type": "end", "interrupted": result.interrupted})
        finally:
            with self.lock:
                self.active -= 1
                self.last_used = time.monotonic()


def _stdin_of(request: dict[str, Any]) -> bytes | None:
    data = request.get("stdin")
    return None if data is None else base64.b64decode(data, validate=True)


def _forward_output(conn: socket.socket) -> Callable[[Output], None]:
    def forward(output: Output) -> None:
        send(conn, {"type": "output", "host": output.host, "stream": output.stream,
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
