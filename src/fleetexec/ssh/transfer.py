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
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import secrets
import shlex
import stat
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import paramiko

from ..host import Host
from ..outdir import file_stem
from ..results import HostResult, Status
from ..transfer import Transfer, check_remote_name, summary
from .failure import StaleConnection
from .pacing import nothing
from .session import over_connection
from .transport import _SILENT, FleetTransport

if TYPE_CHECKING:
    from .session import WorkerContext
    from .watchdog import Alarm

__all__ = ["transfer_on_host"]

# One SFTP request each way: paramiko assembles a bigger read from 32 KiB replies (and cuts a
# bigger write into them) by copying what is left each time, quadratic in the size.
_CHUNK = paramiko.SFTPFile.MAX_REQUEST_SIZE
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_HASH_OUTPUT_MAX = 64 * 1024


def transfer_on_host(
    host: Host, transfer: Transfer, context: WorkerContext, reuse: bool = False,
    on_start: Callable[[], object] = nothing,
) -> HostResult:
    """Perform `transfer` on `host` and return what happened. Never raises.

    `reuse` and `on_start` are `run_on_host`'s: the connection is kept for
    the next job when asked (and when the transfer ended with the connection
    alive), and `on_start` is called when a wait for a handshake slot ends.
    """
    def attempt(started: float, begin: float) -> _Attempt:
        return _Attempt(host, transfer, context, started, begin)

    return over_connection(host, context, attempt, reuse, on_start)


class _FileError(Exception):
    """A file-level failure (remote or local): the host ends `failed` with this text."""


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
            alarm = self.context.watchdog.arm(start + timeout, transport.sock)  # type: ignore[arg-type]
        sftp: paramiko.SFTPClient | None = None
        try:
            sftp = _open_sftp(transport, timeout, alarm)
            mover = _Mover(self, sftp, transport, timeout)
            if self.transfer.direction == "put":
                mover.put()
            else:
                mover.get()
        except _Refused as refused:
            return self.finish(Status.PROTOCOL_ERROR, str(refused))
        except StaleConnection:
            raise
        except (_FileError, OSError, EOFError, paramiko.SSHException) as error:
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
        if not transport.is_active():
            return self.finish(Status.CONNECTION_LOST, "connection lost during the "
                               f"{self.transfer.direction} ({self._done()}{leftover})")
        if isinstance(error, _FileError):
            text = str(error)
        else:  # an SFTP error without a path: name what we were doing
            text = f"{self.transfer.direction}: {_reason(error)}"
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
        raise _Refused(f"SFTP negotiation failed ({_reason(error)})") from None
    sftp.logger = _SILENT  # type: ignore[assignment]  # per-request debug logging costs CPU
    return sftp


def _reason(error: BaseException) -> str:
    """A short lower-case reason for an SFTP or local error."""
    code = getattr(error, "errno", None)
    if code in (errno.ENOENT, errno.EACCES, errno.EEXIST, errno.ENOTDIR, errno.EISDIR,
                errno.ELOOP, errno.ENOSPC, errno.EPERM, errno.EROFS, errno.EDQUOT):
        return os.strerror(code).lower()
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return " ".join(str(text).split())


def _remote_path(path: str) -> str:
    """`~` and `~/x` mean the login directory, where relative SFTP paths start."""
    if path == "~":
        return "."
    if path.startswith("~/"):
        return path[2:] or "."
    return path


def _temp_name(name: str) -> str:
    suffix = f".fleetexec-{secrets.token_hex(4)}.part"
    if len(name.encode("utf-8", "surrogateescape")) > 200:  # stay under NAME_MAX
        return suffix
    return f".{name}{suffix}"


class _Mover:
    """The file moves of one attempt, both directions."""

    def __init__(self, attempt: _Attempt, sftp: paramiko.SFTPClient,
                 transport: paramiko.Transport, timeout: float) -> None:
        self.attempt, self.sftp, self.transport, self.timeout = attempt, sftp, transport, timeout
        self.transfer = attempt.transfer
        self.umask = _umask()

    # ---- remote helpers -----------------------------------------------------------------

    def _remote(self, what: str, path: str, call: Callable[[], object]) -> object:
        try:
            return call()
        except OSError as error:
            if not self.transport.is_active():
                raise
            raise _FileError(f"{what} {path}: {_reason(error)}") from None

    def _stat(self, path: str) -> paramiko.SFTPAttributes | None:
        try:
            return self.sftp.stat(path)
        except OSError as error:
            if error.errno == errno.ENOENT and self.transport.is_active():
                return None
            if not self.transport.is_active():
                raise
            raise _FileError(f"{self.transfer.direction} {path}: {_reason(error)}") from None

    def _sha256(self, path: str) -> str:
        """The SHA-256 of remote `path`, by `sha256sum` on this connection."""
        channel = self.transport.open_session(timeout=self.timeout or None)
        try:
            channel.exec_command("sha256sum -- " + shlex.quote(path))
            channel.shutdown_write()
            out = _read_all(channel.recv, _HASH_OUTPUT_MAX)
            err = _read_all(channel.recv_stderr, _HASH_OUTPUT_MAX)
            code = channel.recv_exit_status()
        finally:
            channel.close()
        if not self.transport.is_active():
            raise EOFError("connection lost")
        words = out.split()
        digest = words[0].lstrip(b"\\").decode("ascii", "replace").lower() if words else ""
        if code != 0 or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            detail = " ".join(err.decode("utf-8", "replace").split())[:200] or f"exit {code}"
            raise _FileError(f"checksum: sha256sum {path} failed on the host: {detail}")
        return digest

    # ---- put ----------------------------------------------------------------------------

    def put(self) -> None:
        transfer = self.transfer
        remote = _remote_path(transfer.destination)
        wants_directory = remote.endswith("/") and remote.strip("/") != ""
        target = self._stat(remote)
        if target is not None and stat.S_ISDIR(target.st_mode or 0):
            pairs = [(s, posixpath.join(remote, os.path.basename(s))) for s in transfer.sources]
        elif wants_directory:
            why = "no such directory" if target is None else "not a directory"
            raise _FileError(f"put {remote}: {why}")
        elif len(transfer.sources) > 1:
            why = "no such directory" if target is None else "not a directory"
            raise _FileError(f"put {remote}: {why} (several sources need a directory)")
        else:
            pairs = [(transfer.sources[0], remote)]
        for local, destination in pairs:
            try:
                info = os.stat(local)
            except OSError as error:
                raise _FileError(f"put {local}: {_reason(error)}") from None
            if stat.S_ISDIR(info.st_mode):
                self._put_tree(local, destination, info)
            else:
                self._put_file(local, destination, info)

    def _put_tree(self, local: str, remote: str, info: os.stat_result) -> None:
        existing = self._stat(remote)
        if existing is None:
            try:
                self.sftp.mkdir(remote)
            except OSError as error:
                if not self.transport.is_active():
                    raise
                existing = self._stat(remote)  # made meanwhile (by a host sharing the disk)?
                if existing is None:
                    raise _FileError(f"put: mkdir {remote}: {_reason(error)}") from None
        if existing is not None and not stat.S_ISDIR(existing.st_mode or 0):
            raise _FileError(f"put {remote}: exists and is not a directory")
        try:
            entries = sorted(os.scandir(local), key=lambda e: e.name)
        except OSError as error:
            raise _FileError(f"put {local}: {_reason(error)}") from None
        for entry in entries:
            try:
                target = os.stat(entry.path)  # a symlink counts as what it points to
            except OSError:
                self.attempt.skipped += 1  # a dangling symlink
                continue
            destination = posixpath.join(remote, entry.name)
            if stat.S_ISREG(target.st_mode):
                self._put_file(entry.path, destination, target)
            elif stat.S_ISDIR(target.st_mode) and not entry.is_symlink():
                self._put_tree(entry.path, destination, target)
            else:
                self.attempt.skipped += 1  # symlinked directories, fifos, devices, sockets
        if self.transfer.preserve:  # after the contents, which change the mtime
            self._remote("put: chmod", remote,
                         lambda: self.sftp.chmod(remote, stat.S_IMODE(info.st_mode) & 0o777))
            self._remote("put: utime", remote,
                         lambda: self.sftp.utime(remote, (info.st_atime, info.st_mtime)))

    def _put_file(self, local: str, remote: str, info: os.stat_result) -> None:
        try:
            remote.encode("utf-8")
        except UnicodeEncodeError:
            raise _FileError(f"put {local}: the name is not valid UTF-8") from None
        existing = self._stat(remote)
        if existing is not None and stat.S_ISDIR(existing.st_mode or 0):
            raise _FileError(f"put {remote}: is a directory")
        directory, name = posixpath.split(remote)
        temp = posixpath.join(directory, _temp_name(name))
        hasher = hashlib.sha256() if self.transfer.checksum else None
        try:
            source = open(local, "rb")  # closed below
        except OSError as error:
            raise _FileError(f"put {local}: {_reason(error)}") from None
        sent = 0
        with source:
            remote_file = self._remote("put", remote, lambda: self.sftp.open(temp, "wx"))
            assert isinstance(remote_file, paramiko.SFTPFile)  # noqa: S101
            self.attempt.partial = True
            try:
                try:
                    with remote_file:
                        remote_file.chmod(0o600)  # unreadable by others until complete
                        remote_file.set_pipelined(True)
                        size = _request_size(self.sftp, remote_file)
                        while chunk := source.read(size):
                            remote_file.write(chunk)
                            sent += len(chunk)
                            if hasher is not None:
                                hasher.update(chunk)
                except OSError as error:
                    if not self.transport.is_active():
                        raise
                    raise _FileError(f"put {remote}: {_reason(error)}") from None
                # Closed: every write acknowledged (a full disk says so by now).
                if sent != os.fstat(source.fileno()).st_size:
                    raise _FileError(f"put {local}: the file changed size while being sent")
                self._check_put(temp, remote, sent, hasher)
                if self.transfer.preserve:
                    mode = stat.S_IMODE(info.st_mode) & 0o777
                elif existing is not None:
                    mode = stat.S_IMODE(existing.st_mode or 0)
                else:
                    mode = stat.S_IMODE(info.st_mode) & 0o755
                self._remote("put: chmod", remote, lambda: self.sftp.chmod(temp, mode))
                if self.transfer.preserve:
                    self._remote("put: utime", remote,
                                 lambda: self.sftp.utime(temp, (info.st_atime, info.st_mtime)))
                self._rename(temp, remote)
            except BaseException:
                self._discard(temp)
                raise
        self.attempt.partial = False
        self.attempt.files += 1
        self.attempt.bytes += sent

    def _check_put(self, temp: str, remote: str, sent: int, hasher: hashlib._Hash | None) -> None:
        attrs = self._remote("put: stat", remote, lambda: self.sftp.stat(temp))
        assert isinstance(attrs, paramiko.SFTPAttributes)  # noqa: S101
        if attrs.st_size != sent:
            raise _FileError(f"put {remote}: size mismatch after transfer "
                             f"(sent {sent} bytes, the host has {attrs.st_size})")
        if hasher is not None and self._sha256(temp) != hasher.hexdigest():
            raise _FileError(f"put {remote}: checksum mismatch: the host's SHA-256 of the "
                             "transferred file differs from the local file's")

    def _rename(self, temp: str, remote: str) -> None:
        try:
            self.sftp.posix_rename(temp, remote)
            return
        except OSError as error:
            if not self.transport.is_active():
                raise
            if error.errno is not None or "unsupported" not in str(error).lower():
                raise _FileError(f"put {remote}: cannot rename into place: "
                                 f"{_reason(error)}") from None
        # No posix-rename@openssh.com: plain SFTP rename refuses an existing target.
        if self._stat(remote) is not None:
            self._remote("put: remove", remote, lambda: self.sftp.remove(remote))
        self._remote("put: rename", remote, lambda: self.sftp.rename(temp, remote))

    def _discard(self, temp: str) -> None:
        if not self.transport.is_active():
            return  # cannot: it stays, under its temporary name only
        try:
            self.sftp.remove(temp)
            self.attempt.partial = False
        except (OSError, EOFError, paramiko.SSHException):
            pass

    # ---- get ----------------------------------------------------------------------------

    def get(self) -> None:
        transfer = self.transfer
        path = _remote_path(transfer.sources[0])
        name = posixpath.basename(posixpath.normpath(path))
        if name in ("", ".", ".."):  # the login directory, say: ask the server its name
            real = self._remote("get", path, lambda: self.sftp.normalize(path))
            name = posixpath.basename(str(real).rstrip("/"))
        if not name:
            raise _FileError(f"get {path}: the root directory has no name to save it under; "
                             "get a directory below it")
        try:
            local_name = check_remote_name(name)
        except ValueError as error:
            raise _FileError(f"get {path}: {error}") from None
        attrs = self._stat(path)
        if attrs is None:
            raise _FileError(f"get {path}: no such file or directory")
        mode = attrs.st_mode or 0
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise _FileError(f"get {path}: not a regular file or a directory")
        if stat.S_ISDIR(mode) and not transfer.recursive:
            raise _FileError(f"get {path}: is a directory (use -r)")
        stem = file_stem(self.attempt.host.name)
        try:
            top = os.open(transfer.destination, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
        except OSError as error:
            raise _FileError(f"get: {transfer.destination}: {_reason(error)}") from None
        try:
            host_fd = self._local_dir(top, stem, os.path.join(transfer.destination, stem))
        finally:
            os.close(top)
        local = os.path.join(transfer.destination, stem, local_name)
        try:
            if stat.S_ISDIR(mode):
                self._get_tree(path, host_fd, local_name, local, attrs)
            else:
                self._get_file(path, host_fd, local_name, local, attrs)
        finally:
            os.close(host_fd)

    def _local_dir(self, parent: int, name: str, shown: str) -> int:
        """The directory `name` in `parent`, made if missing; never through a symlink."""
        try:
            os.mkdir(name, 0o777, dir_fd=parent)
        except FileExistsError:
            pass
        except OSError as error:
            raise _FileError(f"get: {shown}: {_reason(error)}") from None
        try:
            return os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=parent)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR):
                raise _FileError(f"get: {shown} exists and is not a directory (a symlink "
                                 "is never followed)") from None
            raise _FileError(f"get: {shown}: {_reason(error)}") from None

    def _get_tree(self, remote: str, parent: int, name: str, shown: str,
                  attrs: paramiko.SFTPAttributes) -> None:
        fd = self._local_dir(parent, name, shown)
        try:
            listing = self._remote("get: list", remote, lambda: self.sftp.listdir_attr(remote))
            assert isinstance(listing, list)  # noqa: S101
            used: set[str] = set()
            for entry in sorted(listing, key=lambda e: e.filename):
                try:
                    local_name = check_remote_name(entry.filename)
                except ValueError as error:
                    raise _FileError(f"get {remote}: {error}; refusing it") from None
                if local_name in used:
                    raise _FileError(f"get {remote}: two names become {local_name!r} "
                                     "locally (control characters are replaced by ?)")
                used.add(local_name)
                path = posixpath.join(remote, entry.filename)
                local = os.path.join(shown, local_name)
                mode = entry.st_mode or 0
                if stat.S_ISLNK(mode):
                    target = self._stat(path)  # a file it points to is copied
                    if target is not None and stat.S_ISREG(target.st_mode or 0):
                        self._get_file(path, fd, local_name, local, target)
                    else:
                        self.attempt.skipped += 1
                elif stat.S_ISDIR(mode):
                    self._get_tree(path, fd, local_name, local, entry)
                elif stat.S_ISREG(mode):
                    self._get_file(path, fd, local_name, local, entry)
                else:
                    self.attempt.skipped += 1
            if self.transfer.preserve:  # after the contents, which change the mtime
                os.fchmod(fd, stat.S_IMODE(attrs.st_mode or 0) & 0o777)
                os.utime(fd, (attrs.st_atime or 0, attrs.st_mtime or 0))
        except OSError as error:
            if not self.transport.is_active():
                raise
            raise _FileError(f"get {remote}: {_reason(error)}") from None
        finally:
            os.close(fd)

    def _get_file(self, remote: str, parent: int, name: str, shown: str,
                  attrs: paramiko.SFTPAttributes) -> None:
        force = self.transfer.force
        if not force and _lexists(name, parent):
            raise _FileError(f"get: {shown} exists (use --force to replace it)")
        hasher = hashlib.sha256() if self.transfer.checksum else None
        temp = _temp_name("")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
        try:
            out = os.open(temp, flags, 0o600, dir_fd=parent)
        except OSError as error:
            raise _FileError(f"get: {shown}: {_reason(error)}") from None
        received = 0
        try:
            try:
                remote_file = self._remote("get", remote, lambda: self.sftp.open(remote, "rb"))
                assert isinstance(remote_file, paramiko.SFTPFile)  # noqa: S101
                try:
                    with remote_file:
                        _quiet_prefetch(remote_file)
                        remote_file.prefetch(attrs.st_size)
                        while chunk := remote_file.read(_CHUNK):
                            view = memoryview(chunk)
                            while view:
                                view = view[_write(out, view, shown) :]
                            received += len(chunk)
                            if hasher is not None:
                                hasher.update(chunk)
                except OSError as error:
                    if not self.transport.is_active():
                        raise
                    raise _FileError(f"get {remote}: {_reason(error)}") from None
                except EOFError:  # a prefetched read past the end: it shrank meanwhile
                    if not self.transport.is_active():
                        raise
                    raise _FileError(f"get {remote}: the file changed size during the "
                                     "transfer") from None
                if received != attrs.st_size:
                    raise _FileError(f"get {remote}: the file changed size during the "
                                     f"transfer (expected {attrs.st_size} bytes, got "
                                     f"{received})")
                if hasher is not None and self._sha256(remote) != hasher.hexdigest():
                    raise _FileError(f"get {remote}: checksum mismatch: the host's SHA-256 "
                                     "differs from the received file's")
                bits = stat.S_IMODE(attrs.st_mode or 0o644) & 0o777
                try:
                    os.fchmod(out, bits if self.transfer.preserve else bits & ~self.umask)
                    if self.transfer.preserve:
                        os.utime(out, (attrs.st_atime or 0, attrs.st_mtime or 0))
                except OSError as error:
                    raise _FileError(f"get: {shown}: {_reason(error)}") from None
            finally:
                os.close(out)
            self._install(temp, name, parent, shown)
        except BaseException:
            try:
                os.unlink(temp, dir_fd=parent)
            except OSError:
                pass
            raise
        self.attempt.files += 1
        self.attempt.bytes += received

    def _install(self, temp: str, name: str, parent: int, shown: str) -> None:
        """Rename `temp` to `name`: over an existing file only with force (rename(2)
        replaces a symlink, never follows it); without, a hard link refuses any."""
        try:
            if self.transfer.force:
                os.replace(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
                return
            try:
                os.link(temp, name, src_dir_fd=parent, dst_dir_fd=parent, follow_symlinks=False)
            except FileExistsError:
                raise _FileError(f"get: {shown} exists (use --force to replace it)") from None
            except OSError as error:
                if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                # A file system without hard links: checked, then renamed (a small race).
                if _lexists(name, parent):
                    raise _FileError(f"get: {shown} exists (use --force to replace "
                                     "it)") from None
                os.replace(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
                return
            os.unlink(temp, dir_fd=parent)
        except _FileError:
            raise
        except OSError as error:
            raise _FileError(f"get: {shown}: {_reason(error)}") from None


def _request_size(sftp: paramiko.SFTPClient, remote_file: paramiko.SFTPFile) -> int:
    """The most data one write request carries and still fits one SSH packet (a full
    32 KiB request plus its header would be split in two: twice the packets, and CPU)."""
    channel = sftp.get_channel()
    room = (channel.out_max_packet_size if channel is not None else 0) - 64  # paramiko's cut
    handle = cast(bytes, remote_file.handle)
    header = 4 + 1 + 4 + 4 + len(handle) + 8 + 4  # length, type, id, handle, offset, data
    return max(4096, min(_CHUNK, room - header))


def _quiet_prefetch(remote_file: paramiko.SFTPFile) -> None:
    """paramiko's prefetch thread lets a lost connection escape as an unhandled thread
    exception (a traceback on stderr); the reading thread reports it anyway."""
    send_requests = remote_file._prefetch_thread  # type: ignore[attr-defined]

    def quiet(*args: object) -> None:
        try:
            send_requests(*args)
        except (OSError, EOFError, paramiko.SSHException):
            pass

    setattr(remote_file, "_prefetch_thread", quiet)  # noqa: B010 - this instance only


def _write(fd: int, data: memoryview, shown: str) -> int:
    try:
        return os.write(fd, data)
    except OSError as error:
        raise _FileError(f"get: {shown}: {_reason(error)}") from None


def _lexists(name: str, parent: int) -> bool:
    try:
        os.lstat(name, dir_fd=parent)
    except FileNotFoundError:
        return False
    return True


def _read_all(read: Callable[[int], bytes], cap: int) -> bytes:
    data = bytearray()
    while chunk := read(65536):
        if len(data) < cap:
            data += chunk[: cap - len(data)]
    return bytes(data)


def _umask() -> int:
    """This process's umask, read without setting it (os.umask would race other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022
