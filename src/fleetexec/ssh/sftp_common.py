"""What SFTP put (`sftp_put`) and get (`sftp_get`) share: the failure a host ends
`failed` with, short reasons, remote path and temporary names, and `Mover`, the
remote helpers of one attempt (stat, a located call, the remote SHA-256).
"""

from __future__ import annotations

import errno
import os
import secrets
import shlex
from collections.abc import Callable
from typing import Protocol

import paramiko

from ..host import Host
from ..transfer import Transfer

__all__ = ["CHUNK", "FileError", "Mover", "Progress", "reason", "remote_path", "temp_name"]

# One SFTP request each way: paramiko assembles a bigger read from 32 KiB replies (and cuts a
# bigger write into them) by copying what is left each time, quadratic in the size.
CHUNK = paramiko.SFTPFile.MAX_REQUEST_SIZE
_HASH_OUTPUT_MAX = 64 * 1024


class FileError(Exception):
    """A file-level failure (remote or local): the host ends `failed` with this text."""


class Progress(Protocol):
    """What the file moves read from and count into: `ssh.transfer`'s attempt."""

    host: Host
    transfer: Transfer
    files: int
    bytes: int
    skipped: int
    partial: bool  # a remote temporary file exists right now (put)


def reason(error: BaseException) -> str:
    """A short lower-case reason for an SFTP or local error."""
    code = getattr(error, "errno", None)
    if code in (errno.ENOENT, errno.EACCES, errno.EEXIST, errno.ENOTDIR, errno.EISDIR,
                errno.ELOOP, errno.ENOSPC, errno.EPERM, errno.EROFS, errno.EDQUOT):
        return os.strerror(code).lower()
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return " ".join(str(text).split())


def remote_path(path: str) -> str:
    """`~` and `~/x` mean the login directory, where relative SFTP paths start."""
    if path == "~":
        return "."
    if path.startswith("~/"):
        return path[2:] or "."
    return path


def temp_name(name: str) -> str:
    suffix = f".fleetexec-{secrets.token_hex(4)}.part"
    if len(name.encode("utf-8", "surrogateescape")) > 200:  # stay under NAME_MAX
        return suffix
    return f".{name}{suffix}"


class Mover:
    """The file moves of one attempt: the remote helpers both directions use."""

    def __init__(self, attempt: Progress, sftp: paramiko.SFTPClient,
                 transport: paramiko.Transport, timeout: float) -> None:
        self.attempt, self.sftp, self.transport, self.timeout = attempt, sftp, transport, timeout
        self.transfer = attempt.transfer

    def _remote(self, what: str, path: str, call: Callable[[], object]) -> object:
        try:
            return call()
        except OSError as error:
            if not self.transport.is_active():
                raise
            raise FileError(f"{what} {path}: {reason(error)}") from None

    def _stat(self, path: str) -> paramiko.SFTPAttributes | None:
        try:
            return self.sftp.stat(path)
        except OSError as error:
            if error.errno == errno.ENOENT and self.transport.is_active():
                return None
            if not self.transport.is_active():
                raise
            raise FileError(f"{self.transfer.direction} {path}: {reason(error)}") from None

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
            raise FileError(f"checksum: sha256sum {path} failed on the host: {detail}")
        return digest


def _read_all(read: Callable[[int], bytes], cap: int) -> bytes:
    data = bytearray()
    while chunk := read(65536):
        if len(data) < cap:
            data += chunk[: cap - len(data)]
    return bytes(data)
