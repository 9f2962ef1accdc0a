"""Files both ways over SFTP: what a transfer is, and the rules it follows. No I/O to hosts.

`Transfer` is plain data that travels with a `Job` to the workers, where
`fleetexec.ssh.transfer.transfer_on_host` performs it over the host's SSH
connection (the same pool, pacing, deadlines and statuses as a command).
`FleetSession.put` / `FleetSession.get` and `fleetexec put` / `fleetexec get`
build one with `put_transfer` / `get_transfer`, which check the local side
before anything connects (`ConfigError`, exit 2).

put (`LOCAL... -> REMOTE`)
    If REMOTE is an existing directory, each LOCAL goes into it under its own
    name; otherwise there must be exactly one LOCAL and REMOTE is its new name
    (a REMOTE ending in `/` must be an existing directory). A directory needs
    `recursive`. Relative remote paths, and a leading `~/`, are relative to
    the login directory; nothing else is expanded (no globs, no variables:
    remote paths are data, never shell). Each file is written to a temporary
    name in its target directory (`.NAME.fleetexec-XXXXXXXX.part`), checked,
    then renamed over NAME (`posix-rename@openssh.com` where the server has
    it, else remove + rename), so a cut transfer never leaves a half file
    under the real name; only the temporary file may be left behind when
    the connection is lost. Remote files are replaced, like scp.

get (`REMOTE -> LOCALDIR`)
    Every host writes under `LOCALDIR/<host>/`, named after REMOTE's last
    component: `get /etc/hosts out` makes `out/web1/hosts`, `get -r /etc/nginx
    out` makes `out/web1/nginx/...` (host names made file names as `--outdir`
    does, `outdir.file_stem`). No local file is overwritten unless `force`:
    a file already at a target name fails that host (`failed`, naming it);
    with `force` it is replaced (atomically, never followed if a symlink).
    Directories are merged. Every local file is written to a fresh temporary
    name (`O_EXCL | O_NOFOLLOW`, 0600) and renamed into place; every
    directory below LOCALDIR is opened with `O_NOFOLLOW`, so a symlink planted
    there is refused, never followed. Names from a remote listing must be
    plain names (`check_remote_name`: no `/`, no `.` or `..`, not empty);
    control characters in them become `?`.

Both
    `recursive`: inside a tree, a symlink to a file is copied as that file;
    a symlink to a directory, a dangling one and special files are skipped
    (counted in the summary). `preserve`: modes (permission bits) and
    modification times are kept; without it, a new file gets the source's
    permission bits less group/other write, a replaced remote file keeps its
    mode, and local files get the source's bits less the local umask.
    Sizes are always checked; `checksum` also compares SHA-256 (the remote
    side by running `sha256sum` on the same connection) before the rename.

Results: `ok` with a one-line summary as stdout (`put 3 files, 30.0 MiB in
1.20s, 25.0 MiB/s`); a remote or local file error (no such file,
permission denied, a checksum mismatch, an existing local file) is `failed`
with `exit_code` None and a one-line error naming the path and how far the
host got; `timeout` when the command deadline (`command_timeout`, from the
end of the handshake) cut the transfer, `connection_lost` when the
connection died, `protocol_error` when the server has no SFTP subsystem.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from .exceptions import ConfigError

__all__ = ["Transfer", "check_remote_name", "get_transfer", "put_transfer", "summary"]

Direction = Literal["put", "get"]

# C0 controls, DEL and C1 controls: harmless in a file name, but a trap on a terminal.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# What a transfer job's command is, for a backend that does not know transfers and
# would run it: it does nothing on the host and fails (every known backend refuses first).
SAFE_COMMAND = "exit 125 # a fleetexec file transfer: this backend ignored Job.transfer"


@dataclass(frozen=True)
class Transfer:
    """One file transfer for every host of a run.

    `direction` "put": `sources` are local paths (absolute), `destination` the
    remote path. "get": `sources` is the one remote path, `destination` the
    local directory (absolute) that gets a subdirectory per host. See the
    module docstring for the rules.
    """

    direction: Direction
    sources: tuple[str, ...]
    destination: str
    recursive: bool = False
    preserve: bool = False
    checksum: bool = False
    force: bool = False  # get: replace existing local files

    def __post_init__(self) -> None:
        if self.direction not in ("put", "get"):
            raise ConfigError(f"a transfer is 'put' or 'get', not {self.direction!r}")
        if not self.sources or not all(isinstance(s, str) and s for s in self.sources):
            raise ConfigError("a transfer needs at least one source path")
        if self.direction == "get" and len(self.sources) != 1:
            raise ConfigError("get takes one remote path")
        if not isinstance(self.destination, str) or not self.destination:
            raise ConfigError("a transfer needs a destination")
        for path in (*self.sources, self.destination):
            if "\x00" in path:
                raise ConfigError(f"a path contains a NUL byte: {path!r}")

    def describe(self) -> str:
        """A one-line description (saved runs, `fleetexec last`)."""
        flags = "".join(f" --{name}" for name in ("recursive", "preserve", "checksum", "force")
                        if getattr(self, name))
        return f"{self.direction}{flags} {' '.join(self.sources)} -> {self.destination}"


def put_transfer(local_paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                 remote: str, *, recursive: bool = False, preserve: bool = False,
                 checksum: bool = False) -> Transfer:
    """A checked `put` (`ConfigError` for a missing source, a directory without `recursive`,
    anything but files and directories, or a remote path that is empty)."""
    if isinstance(local_paths, str | os.PathLike):
        local_paths = [local_paths]
    sources = tuple(os.path.abspath(os.fspath(p)) for p in local_paths)
    if not sources:
        raise ConfigError("put: no local file given")
    for path in sources:
        try:
            info = os.stat(path)
        except OSError as error:
            raise ConfigError(f"put: {path}: {error.strerror or error}") from None
        if stat.S_ISDIR(info.st_mode):
            if not recursive:
                raise ConfigError(f"put: {path} is a directory (use -r / recursive=True)")
        elif not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"put: {path} is not a regular file or a directory")
        elif not os.access(path, os.R_OK):
            raise ConfigError(f"put: {path}: permission denied")
    names = [os.path.basename(p) for p in sources]
    if len(set(names)) != len(names):
        raise ConfigError("put: two sources have the same name and would land on one path")
    if not isinstance(remote, str) or not remote.strip():
        raise ConfigError("put: the remote path is empty")
    return Transfer("put", sources, remote, recursive, preserve, checksum)


def get_transfer(remote: str, local_dir: str | os.PathLike[str], *, recursive: bool = False,
                 preserve: bool = False, checksum: bool = False, force: bool = False) -> Transfer:
    """A checked `get`: LOCALDIR must be a directory or not exist yet (its parent must)."""
    if not isinstance(remote, str) or not remote.strip():
        raise ConfigError("get: the remote path is empty")
    directory = os.path.abspath(os.fspath(local_dir))
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise ConfigError(f"get: {directory} is not a directory")
    if not os.path.isdir(os.path.dirname(directory)):
        raise ConfigError(f"get: {os.path.dirname(directory)} does not exist")
    return Transfer("get", (remote,), directory, recursive, preserve, checksum, force)


def check_remote_name(name: str) -> str:
    """The local name for `name`, one entry of a remote directory listing.

    Raises `ValueError` for a name that would leave its directory or is not a
    name at all: empty, `.`, `..`, or containing `/` (or NUL). Control
    characters become `?` (a name is shown on terminals and in summaries).

    >>> check_remote_name("app.conf"), check_remote_name("a\\x1b[31mb")
    ('app.conf', 'a?[31mb')
    """
    if name in ("", ".", "..") or "/" in name or "\x00" in name:
        raise ValueError(f"unsafe name in a remote listing: {name!r}")
    return _CONTROL.sub("?", name)


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def summary(direction: str, files: int, size: int, seconds: float, *, skipped: int = 0,
            checksum: bool = False) -> str:
    """`put 3 files, 30.0 MiB in 1.20s, 25.0 MiB/s` (+ `, 2 skipped`, `, sha256 verified`)."""
    rate = _size(size / seconds) + "/s" if seconds > 0 else "-"
    text = (f"{direction} {files} file{'' if files == 1 else 's'}, {_size(size)} "
            f"in {seconds:.2f}s, {rate}")
    if skipped:
        text += f", {skipped} skipped"
    if checksum:
        text += ", sha256 verified"
    return text
