"""The client side of the agent (the CLI process): `AgentBackend`, `stop_agent`, spawning."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..backends import Job, Output
from ..exceptions import ConfigError, FleetError
from ..host import Host
from ..results import HostResult, Status
from .paths import choose_socket_path, socket_path
from .wire import connect, decode_result, encode_host, send

__all__ = ["AgentBackend", "stop_agent"]

_SPAWN_WAIT = 10.0
_SECRET_VARIABLES = ("FLEETEXEC_PASSWORD", "FLEETEXEC_PASSPHRASE", "FLEETEXEC_SUDO_PASSWORD")


def _agent_socket(agent: str | None) -> str | None:
    """An IdentityAgent read from the environment (SSH_AUTH_SOCK, $VAR), as a path."""
    if agent == "SSH_AUTH_SOCK" or (agent or "").startswith("$") and not (
            agent or "").startswith("${"):
        return os.environ.get((agent or "").removeprefix("$")) or "none"
    return agent


def _with_agent_socket(host: Host) -> Host:
    """`host` and its bastions with their IdentityAgent read from this environment."""
    return dataclasses.replace(host, identity_agent=_agent_socket(host.identity_agent),
                               via=tuple(_with_agent_socket(b) for b in host.via))


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
        hosts = [_with_agent_socket(h) for h in hosts]
        path, skipped = choose_socket_path()
        self.notes = [f"{reason}; the agent uses {path.parent} instead" for reason in skipped]
        conn = self._conn = _connect_or_spawn(path, self.idle)
        send(conn, {"type": "run", "command": job.command, "options": job.options.to_json(),
                    "secrets": job.options.secrets(), "stream_output": job.stream_output,
                    "stdin": None if job.stdin is None else base64.b64encode(job.stdin).decode(),
                    "hosts": [encode_host(h) for h in hosts]})
        return self._results(conn, [h.name for h in hosts])

    def _results(self, conn: socket.socket, names: list[str]) -> Iterator[HostResult | Output]:
        pending = set(names)
        try:
            for line in conn.makefile("rb"):
                message = json.loads(line)
                if message["type"] == "result":
                    result = decode_result(message["result"])
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
        conn = connect(socket_path())
    except OSError:
        return False
    with conn:
        send(conn, {"type": "stop"})
        conn.makefile("rb").readline()
    return True


def _connect_or_spawn(path: Path, idle: float) -> socket.socket:
    try:
        return connect(path)
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
            return connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise FleetError(f"the fleetexec agent did not start; see "
                                 f"{path.parent / 'agent.log'}") from None
            time.sleep(0.05)

