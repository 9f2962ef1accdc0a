"""SFTP put on one host: local files and trees to the remote side, each file
written under a temporary name (0600 until complete), checked (size, and SHA-256
with `checksum`) and renamed into place; a failed file's temporary is removed.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
from typing import cast

import paramiko

from .sftp_common import CHUNK, FileError, Mover, reason, remote_path, temp_name

__all__ = ["Putter"]


class Putter(Mover):
    """The file moves of one put attempt."""

    def put(self) -> None:
        transfer = self.transfer
        remote = remote_path(transfer.destination)
        wants_directory = remote.endswith("/") and remote.strip("/") != ""
        target = self._stat(remote)
        if target is not None and stat.S_ISDIR(target.st_mode or 0):
            pairs = [(s, posixpath.join(remote, os.path.basename(s))) for s in transfer.sources]
        elif wants_directory:
            why = "no such directory" if target is None else "not a directory"
            raise FileError(f"put {remote}: {why}")
        elif len(transfer.sources) > 1:
            why = "no such directory" if target is None else "not a directory"
            raise FileError(f"put {remote}: {why} (several sources need a directory)")
        else:
            pairs = [(transfer.sources[0], remote)]
        for local, destination in pairs:
            try:
                info = os.stat(local)
            except OSError as error:
                raise FileError(f"put {local}: {reason(error)}") from None
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
                    raise FileError(f"put: mkdir {remote}: {reason(error)}") from None
        if existing is not None and not stat.S_ISDIR(existing.st_mode or 0):
            raise FileError(f"put {remote}: exists and is not a directory")
        try:
            entries = sorted(os.scandir(local), key=lambda e: e.name)
        except OSError as error:
            raise FileError(f"put {local}: {reason(error)}") from None
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
            raise FileError(f"put {local}: the name is not valid UTF-8") from None
        existing = self._stat(remote)
        if existing is not None and stat.S_ISDIR(existing.st_mode or 0):
            raise FileError(f"put {remote}: is a directory")
        directory, name = posixpath.split(remote)
        temp = posixpath.join(directory, temp_name(name))
        hasher = hashlib.sha256() if self.transfer.checksum else None
        try:
            source = open(local, "rb")  # closed below
        except OSError as error:
            raise FileError(f"put {local}: {reason(error)}") from None
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
                    raise FileError(f"put {remote}: {reason(error)}") from None
                # Closed: every write acknowledged (a full disk says so by now).
                if sent != os.fstat(source.fileno()).st_size:
                    raise FileError(f"put {local}: the file changed size while being sent")
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
            raise FileError(f"put {remote}: size mismatch after transfer "
                            f"(sent {sent} bytes, the host has {attrs.st_size})")
        if hasher is not None and self._sha256(temp) != hasher.hexdigest():
            raise FileError(f"put {remote}: checksum mismatch: the host's SHA-256 of the "
                            "transferred file differs from the local file's")

    def _rename(self, temp: str, remote: str) -> None:
        try:
            self.sftp.posix_rename(temp, remote)
            return
        except OSError as error:
            if not self.transport.is_active():
                raise
            if error.errno is not None or "unsupported" not in str(error).lower():
                raise FileError(f"put {remote}: cannot rename into place: "
                                f"{reason(error)}") from None
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


def _request_size(sftp: paramiko.SFTPClient, remote_file: paramiko.SFTPFile) -> int:
    """The most data one write request carries and still fits one SSH packet (a full
    32 KiB request plus its header would be split in two: twice the packets, and CPU)."""
    channel = sftp.get_channel()
    room = (channel.out_max_packet_size if channel is not None else 0) - 64  # paramiko's cut
    handle = cast(bytes, remote_file.handle)
    header = 4 + 1 + 4 + 4 + len(handle) + 8 + 4  # length, type, id, handle, offset, data
    return max(4096, min(CHUNK, room - header))
