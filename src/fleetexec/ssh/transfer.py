"""One host, one file transfer over SFTP, one `HostResult`. The rules: `fleetexec.transfer`.

`transfer_on_host` connects the way `run_on_host` does (`session.over_connection`:
handshake pacing, the connect deadline, kept connections) and then moves the
files on one SFTP channel of that connection, under the command deadline
(`command_timeout`, armed once the handshake is done: the watchdog shuts the
socket down when it passes). Never raises.

Remote paths are data: they travel in SFTP requests, and the one remote
command (`sha256sum`, for `checksum`) gets its path through `shlex.quote`.
Local names that come from a remote listing pass `check_remote_name`, and
every local directory below the destination is opened with `O_NOFOLLOW`.

The moves themselves: `sftp_put.Putter` and `sftp_get.Getter`, on `sftp_common.Mover`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import paramiko

from ..host import Host
from ..results import HostResult, Status
from ..transfer import Transfer, summary
from .failure import StaleConnection
from .pacing import Turn, nothing
from .session import over_connection
from .sftp_common import FileError, reason
from .sftp_get import Getter
from .sftp_put import Putter
from .transport import _SILENT, FleetTransport

if TYPE_CHECKING:
    from .session import WorkerContext
    from .watchdog import Alarm

__all__ = ["transfer_on_host"]


def transfer_on_host(
    host: Host, transfer: Transfer, context: WorkerContext, reuse: bool = False,
    on_start: Callable[[], object] = nothing, turn: Turn | None = None,
) -> HostResult:
    """Perform `transfer` on `host` and return what happened. Never raises.

    `reuse`, `on_start` and `turn` are `run_on_host`'s: the connection is kept
    for the next job when asked (and when the transfer ended with the
    connection alive), `on_start` is called when a wait for a handshake slot
    ends, and `turn` is the slot when the caller waited for it already.
    """
    def attempt(started: float, begin: float) -> _Attempt:
        return _Attempt(host, transfer, context, started, begin)

    return over_connection(host, context, attempt, reuse, on_start, turn)


class _Attempt:
    def __init__(self, host: Host, transfer: Transfer, context: WorkerContext,
                 started: float, begin: float) -> None:
        self.host, self.transfer, self.context = host, transfer, context
        self.started, self.begin = started, begin
        self.files = self.bytes = self.skipped = 0
        self.partial = False  # a remote temporary file exists right now (put)

    def finish(self, status: Status, error: str | None = None,
               stdout: bytes = b"") -> HostResult:
        return HostResult(host=self.host.name, status=status, stdout=stdout,
                          started=self.started, duration=round(time.monotonic() - self.begin, 6),
                          error=error)

    def _done(self) -> str:
        if not self.files:
            return "no file done"
        return f"{self.files} file{'' if self.files == 1 else 's'} done"

    def run(self, client: paramiko.SSHClient) -> HostResult:
        transport = client.get_transport()
        assert isinstance(transport, FleetTransport)  # noqa: S101 - set by transport_factory
        timeout = self.host.command_timeout or 0.0  # resolve() filled it; 0 = no deadline
        start = time.monotonic()
        alarm: Alarm | None = None
        if timeout:
            alarm = self.context.watchdog.arm(start + timeout, transport.sock)
        sftp: paramiko.SFTPClient | None = None
        try:
            sftp = _open_sftp(transport, timeout, alarm)
            if self.transfer.direction == "put":
                Putter(self, sftp, transport, timeout).put()
            else:
                Getter(self, sftp, transport, timeout).get()
        except _Refused as refused:
            return self.finish(Status.PROTOCOL_ERROR, str(refused))
        except StaleConnection:
            raise
        except (FileError, OSError, EOFError, paramiko.SSHException) as error:
            return self._failed(error, transport, alarm, timeout)
        finally:
            if alarm is not None:
                alarm.cancel()
            if sftp is not None:
                try:
                    sftp.close()
                except (OSError, EOFError, paramiko.SSHException):
                    pass
        seconds = time.monotonic() - start
        line = summary(self.transfer.direction, self.files, self.bytes, seconds,
                       skipped=self.skipped, checksum=self.transfer.checksum)
        return self.finish(Status.OK, stdout=(line + "\n").encode())

    def _failed(self, error: BaseException, transport: paramiko.Transport, alarm: Alarm | None,
                timeout: float) -> HostResult:
        leftover = "; a partial .fleetexec-*.part file may remain" if self.partial else ""
        if alarm is not None and alarm.fired:
            return self.finish(Status.TIMEOUT, f"{self.transfer.direction} did not finish "
                               f"within {timeout:g}s ({self._done()}{leftover})")
        # EOFError: a write found the connection dead before the transport's thread did.
        if not transport.is_active() or isinstance(error, EOFError):
            return self.finish(Status.CONNECTION_LOST, "connection lost during the "
                               f"{self.transfer.direction} ({self._done()}{leftover})")
        if isinstance(error, FileError):
            text = str(error)
        else:  # an SFTP error without a path: name what we were doing
            text = f"{self.transfer.direction}: {reason(error)}"
        if self.files:
            text += f" ({self._done()})"
        return self.finish(Status.FAILED, text)


class _Refused(Exception):
    """The server has no SFTP subsystem for us."""


def _open_sftp(transport: paramiko.Transport, timeout: float,
               alarm: Alarm | None) -> paramiko.SFTPClient:
    try:
        channel = transport.open_session(timeout=timeout or None)
    except Exception:
        if not transport.is_active() and not (alarm is not None and alarm.fired):
            raise StaleConnection() from None  # nothing started: a new connection may
        raise
    try:
        channel.invoke_subsystem("sftp")
    except paramiko.SSHException as error:
        channel.close()
        if not transport.is_active():
            raise
        raise _Refused(f"the server refused the SFTP subsystem ({error})") from None
    try:
        sftp = paramiko.SFTPClient(channel)
    except (paramiko.SSHException, EOFError, OSError) as error:
        channel.close()
        if not transport.is_active():
            raise
        raise _Refused(f"SFTP negotiation failed ({reason(error)})") from None
    sftp.logger = _SILENT  # type: ignore[assignment]  # per-request debug logging costs CPU
    return sftp
