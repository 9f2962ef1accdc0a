"""`ScriptedBackend`: `MockHost` scripts answered in-process, no sockets, no processes.

For unit tests of automation built on fleetexec, like httpx's `MockTransport`:
the same `MockHost`, `Reply` and `Fault` as `MockFleet`, but a run takes
milliseconds because nothing connects. Time is simulated: a `Reply` delay or
a trickle counts against the host's command deadline without being waited
for, and results come out in the order the hosts would have finished.
Use `MockFleet` where the SSH layer itself is under test.

    backend = ScriptedBackend({"web1": MockHost(replies={"uptime": Reply("up\\n")})})
    result = fleetexec.run(["web1"], "uptime", backend=backend)
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

from ..backends import Job, Output
from ..exceptions import ConfigError
from ..host import Host
from ..results import HostResult, Status
from ._mockscript import BINARY_PAYLOAD, Fault, MockHost, Reply, builtin

__all__ = ["ScriptedBackend"]

_PATTERN = bytes(range(256)) * 256  # what a flood writes, 64 KiB at a time


class ScriptedBackend:
    """Answers each host from its `MockHost` (by name; `default` for the rest)."""

    def __init__(self, hosts: Mapping[str, MockHost], default: MockHost | None = None) -> None:
        self.hosts = dict(hosts)
        self.default = default
        self.commands: list[tuple[str, str]] = []  # (host, command), in the order they ran

    def start(self, hosts: Sequence[Host], job: Job) -> Iterator[HostResult | Output]:
        """Every host's scripted result, in simulated finishing order (its output first,
        when the job streams output)."""
        if job.transfer is not None:
            raise ConfigError("ScriptedBackend does not do file transfers (put/get): use a "
                              "real sshd")
        results = sorted((self._answer(host, job) for host in hosts), key=lambda r: r.duration)
        for result in results:
            if job.stream_output:
                for stream, data in (("stdout", result.stdout), ("stderr", result.stderr)):
                    if data:
                        yield Output(result.host, stream, data)  # type: ignore[arg-type]
            yield result

    def cancel(self) -> None:
        """Nothing runs in the background; nothing to stop."""

    def close(self) -> None:
        """Nothing to release."""

    def _answer(self, host: Host, job: Job) -> HostResult:
        script = self.hosts.get(host.name, self.default)
        started = time.time()

        def result(status: Status, seconds: float = 0.0, *, stdout: bytes = b"",
                   stderr: bytes = b"", **fields: object) -> HostResult:
            cap = job.options.max_output
            return HostResult(host.name, status, stdout=stdout[:cap], stderr=stderr[:cap],
                              stdout_truncated=len(stdout) > cap,
                              stderr_truncated=len(stderr) > cap, started=started,
                              duration=seconds, **fields)  # type: ignore[arg-type]

        if script is None:
            return result(Status.UNREACHABLE, error="no MockHost scripted for this host")
        fault = script.fault
        if fault is not None and fault.kind == "reject_auth":
            return result(Status.AUTH_FAILED, error="authentication failed (scripted)")
        if fault is not None and fault.kind in ("fresh_host_key", "changed_key_type"):
            return result(Status.HOSTKEY_CHANGED, error="host key changed (scripted)")
        if fault is not None and fault.kind == "slow_auth":
            if fault.seconds >= (host.connect_timeout or 0):
                return result(Status.TIMEOUT, host.connect_timeout or 0.0,
                              error="connect deadline passed during authentication (scripted)")
        self.commands.append((host.name, job.command))
        if script.passthrough:
            return result(Status.ERROR, error="passthrough needs MockFleet (a real local shell)")
        action = script.respond(job.command) or builtin(job.command, host.name,
                                                        host.user or "")
        return self._perform(action, host, result)

    @staticmethod
    def _perform(action: Reply | Fault, host: Host, result: _Result) -> HostResult:
        deadline = host.command_timeout or float("inf")
        if isinstance(action, Reply):
            if action.delay > deadline:
                return result(Status.TIMEOUT, deadline, error="command deadline passed")
            status = Status.OK if action.exit_code == 0 else Status.FAILED
            return result(status, action.delay, stdout=action.stdout, stderr=action.stderr,
                          exit_code=action.exit_code)
        if action.kind == "hang":
            return result(Status.TIMEOUT, deadline, stdout=action.output,
                          error="command deadline passed")
        if action.kind == "trickle":
            lines = action.lines
            needed = float("inf") if lines is None else lines * action.interval
            if needed > deadline:
                shown = int(deadline / action.interval) if action.interval else 0
                return result(Status.TIMEOUT, deadline, error="command deadline passed",
                              stdout=b"".join(b"line %d\n" % i for i in range(shown)))
            return result(Status.OK, needed, exit_code=0,
                          stdout=b"".join(b"line %d\n" % i for i in range(lines or 0)))
        if action.kind == "flood":
            data = _PATTERN * action.mib * 4
            return result(Status.OK, exit_code=0,
                          stdout=data if action.stream in ("stdout", "both") else b"",
                          stderr=data if action.stream in ("stderr", "both") else b"")
        if action.kind == "binary":
            return result(Status.OK, exit_code=0, stdout=BINARY_PAYLOAD, stderr=BINARY_PAYLOAD)
        if action.kind == "drop":
            return result(Status.CONNECTION_LOST, stdout=action.output,
                          error="connection lost mid-command; output is incomplete")
        if action.kind == "no_exit_status":
            return result(Status.NO_EXIT_STATUS, stdout=action.output,
                          error="the server sent no exit status")
        return result(Status.KILLED, stdout=action.output, signal=action.signame,
                      error=f"killed by signal {action.signame}")


class _Result(Protocol):  # the shape of `result` in `_answer`, for the type checker
    def __call__(self, status: Status, seconds: float = 0.0, *, stdout: bytes = b"",
                 stderr: bytes = b"", **fields: object) -> HostResult: ...
