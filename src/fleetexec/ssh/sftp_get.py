"""SFTP get on one host: a remote file or tree into DESTINATION/HOST/, each file
written under a temporary name and checked (size, and SHA-256 with `checksum`)
before it is linked into place. Local names that come from a remote listing pass
`check_remote_name`, and every local directory below the destination is opened
with `O_NOFOLLOW`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import stat

import paramiko

from ..outdir import file_stem
from ..transfer import check_remote_name
from .sftp_common import CHUNK, FileError, Mover, Progress, reason, remote_path, temp_name

__all__ = ["Getter"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


class Getter(Mover):
    """The file moves of one get attempt."""

    def __init__(self, attempt: Progress, sftp: paramiko.SFTPClient,
                 transport: paramiko.Transport, timeout: float) -> None:
        super().__init__(attempt, sftp, transport, timeout)
        self.umask = _umask()

    def get(self) -> None:
        transfer = self.transfer
        path = remote_path(transfer.sources[0])
        name = posixpath.basename(posixpath.normpath(path))
        if name in ("", ".", ".."):  # the login directory, say: ask the server its name
            real = self._remote("get", path, lambda: self.sftp.normalize(path))
            name = posixpath.basename(str(real).rstrip("/"))
        if not name:
            raise FileError(f"get {path}: the root directory has no name to save it under; "
                            "get a directory below it")
        try:
            local_name = check_remote_name(name)
        except ValueError as error:
            raise FileError(f"get {path}: {error}") from None
        attrs = self._stat(path)
        if attrs is None:
            raise FileError(f"get {path}: no such file or directory")
        mode = attrs.st_mode or 0
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise FileError(f"get {path}: not a regular file or a directory")
        if stat.S_ISDIR(mode) and not transfer.recursive:
            raise FileError(f"get {path}: is a directory (use -r)")
        stem = file_stem(self.attempt.host.name)
        try:
            top = os.open(transfer.destination, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
        except OSError as error:
            raise FileError(f"get: {transfer.destination}: {reason(error)}") from None
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
            raise FileError(f"get: {shown}: {reason(error)}") from None
        try:
            return os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=parent)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR):
                raise FileError(f"get: {shown} exists and is not a directory (a symlink "
                                "is never followed)") from None
            raise FileError(f"get: {shown}: {reason(error)}") from None

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
                    raise FileError(f"get {remote}: {error}; refusing it") from None
                if local_name in used:
                    raise FileError(f"get {remote}: two names become {local_name!r} "
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
            raise FileError(f"get {remote}: {reason(error)}") from None
        finally:
            os.close(fd)

    def _get_file(self, remote: str, parent: int, name: str, shown: str,
                  attrs: paramiko.SFTPAttributes) -> None:
        force = self.transfer.force
        if not force and _lexists(name, parent):
            raise FileError(f"get: {shown} exists (use --force to replace it)")
        hasher = hashlib.sha256() if self.transfer.checksum else None
        temp = temp_name("")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
        try:
            out = os.open(temp, flags, 0o600, dir_fd=parent)
        except OSError as error:
            raise FileError(f"get: {shown}: {reason(error)}") from None
        received = 0
        try:
            try:
                remote_file = self._remote("get", remote, lambda: self.sftp.open(remote, "rb"))
                assert isinstance(remote_file, paramiko.SFTPFile)  # noqa: S101
                try:
                    with remote_file:
                        _quiet_prefetch(remote_file)
                        remote_file.prefetch(attrs.st_size)
                        while chunk := remote_file.read(CHUNK):
                            view = memoryview(chunk)
                            while view:
                                view = view[_write(out, view, shown) :]
                            received += len(chunk)
                            if hasher is not None:
                                hasher.update(chunk)
                except OSError as error:
                    if not self.transport.is_active():
                        raise
                    raise FileError(f"get {remote}: {reason(error)}") from None
                except EOFError:  # a prefetched read past the end: it shrank meanwhile
                    if not self.transport.is_active():
                        raise
                    raise FileError(f"get {remote}: the file changed size during the "
                                    "transfer") from None
                if received != attrs.st_size:
                    raise FileError(f"get {remote}: the file changed size during the "
                                    f"transfer (expected {attrs.st_size} bytes, got "
                                    f"{received})")
                if hasher is not None and self._sha256(remote) != hasher.hexdigest():
                    raise FileError(f"get {remote}: checksum mismatch: the host's SHA-256 "
                                    "differs from the received file's")
                bits = stat.S_IMODE(attrs.st_mode or 0o644) & 0o777
                try:
                    os.fchmod(out, bits if self.transfer.preserve else bits & ~self.umask)
                    if self.transfer.preserve:
                        os.utime(out, (attrs.st_atime or 0, attrs.st_mtime or 0))
                except OSError as error:
                    raise FileError(f"get: {shown}: {reason(error)}") from None
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
                raise FileError(f"get: {shown} exists (use --force to replace it)") from None
            except OSError as error:
                if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                # A file system without hard links: checked, then renamed (a small race).
                if _lexists(name, parent):
                    raise FileError(f"get: {shown} exists (use --force to replace "
                                    "it)") from None
                os.replace(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
                return
            os.unlink(temp, dir_fd=parent)
        except FileError:
            raise
        except OSError as error:
            raise FileError(f"get: {shown}: {reason(error)}") from None


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
        raise FileError(f"get: {shown}: {reason(error)}") from None


def _lexists(name: str, parent: int) -> bool:
    try:
        os.lstat(name, dir_fd=parent)
    except FileNotFoundError:
        return False
    return True


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
