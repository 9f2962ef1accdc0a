"""Per-host output files: `--outdir DIR` (pssh `-o`/`-e`, clush `--outdir`, Ansible `--tree`).

`OutdirWriter(DIR)` is an `on_result` callback. As each host finishes it
writes, in this order:

* `DIR/<file name>.out`: the host's stdout, the exact bytes received;
* `DIR/<file name>.err`: its stderr, the exact bytes;
* `DIR/<file name>.json`: its status record, `render.result_to_dict` (the
  `-o json` schema of one host). Written last: once it exists, the host is done.

File names (`file_stem`): host names are DNS names or IP literals
(`host.check_hostname`), so they are made of letters, digits, `_ - .` and,
in IP literals only, `:` `%` `[` `]`. The first group is kept as is; each of
the other four becomes a character that no host name can contain:

    :  ->  +        fe80::1       ->  fe80++1
    %  ->  @        fe80::1%eth0  ->  fe80++1@eth0
    [  ->  =        [::1]         ->  =++1=
    ]  ->  =

The mapping is one character to one character, and the replacements never
occur in a host name, so distinct names get distinct files (`::1` and
`[::1]` and `0::1` included). Case is kept: `WEB1` and `web1` are distinct
files, but on a case-insensitive file system (macOS, Windows) they would
share one, so a writer refuses a second host whose file name differs from an
earlier one's only in case (`ConfigError`: at once for the `hosts` it is
given, else when that host's result arrives). No file name starts
with `.` or `-`, and none contains `/`.

Output as it arrives: `on_output` (the `on_output` callback of a run) takes each
chunk; `.out`/`.err` then hold every byte the host sent, not only the
`max_output` its result keeps, and a large output never sits whole in memory:
past `SPOOL_IN_MEMORY` bytes a stream goes to its temporary file, of which at
most `OPEN_SPOOLS` stay open (one reopened later by name must still be the
same file: its inode, owner and size, or that host's files fail). Without
`on_output`, the result's bytes are written.

Safety: an existing non-empty DIR is refused unless `force=True` (then files
of this run's hosts are replaced, others are left alone); a missing DIR is
created 0700. Every file is written to a fresh temporary name in DIR (created
`O_EXCL | O_NOFOLLOW`, mode 0600) and renamed over the final name, so a
symlink planted in DIR is replaced, never followed, and a reader never sees a
half-written file. DIR is opened once and every name is resolved relative to
that open directory, so renaming or replacing DIR during the run does not
redirect the writes.
"""

from __future__ import annotations

import json
import os
import resource
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING

from .exceptions import ConfigError
from .results import HostResult

if TYPE_CHECKING:
    from .backends import Output

__all__ = ["OPEN_SPOOLS", "SPOOL_IN_MEMORY", "OutdirWriter", "file_stem"]

SPOOL_IN_MEMORY = 32 * 1024  # bytes of a stream kept in memory before it goes to its file
OPEN_SPOOLS = 64  # temporary files kept open at once (the open-files limit is shared)

_MAPPING = str.maketrans({":": "+", "%": "@", "[": "=", "]": "="})
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.+@=")
_SUFFIXES = (".out", ".err", ".json")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def file_stem(host: str) -> str:
    """The file name (without suffix) for `host`; see the module docstring for the mapping.

    >>> file_stem("web01.example.com"), file_stem("fe80::1%eth0"), file_stem("[::1]")
    ('web01.example.com', 'fe80++1@eth0', '=++1=')

    Raises `ValueError` for a name that is not a valid host name: the
    mapping is collision-free only for those.
    """
    from .host import check_hostname

    check_hostname(host)
    stem = host.translate(_MAPPING)
    # Belt and braces: check_hostname already guarantees this.
    if not stem or not set(stem) <= _SAFE or stem[0] in ".-":
        raise ValueError(f"host name {host!r} cannot be made a file name")
    return stem


class OutdirWriter:
    """Writes each finished host's stdout, stderr and status to files in `directory`.

    Use it as the `on_result` callback (it is called from one thread at a
    time), and close it afterwards (or use `with`)::

        with OutdirWriter("out") as writer:
            fleetexec.run(hosts, "uname -a", on_result=writer)

    `hosts`, the names of the run, lets a case clash between two of them be
    refused at once. Raises `ConfigError` when `directory` exists and is not
    empty (unless `force`), is not a directory, or cannot be created or opened. A write
    that fails raises `OSError` from the call for that host; later hosts are
    still written.
    """

    def __init__(self, directory: str | os.PathLike[str], *, force: bool = False,
                 hosts: Iterable[str] = ()) -> None:
        self._fd = -1
        self.directory = os.fspath(directory)
        self.force = force
        self.written: list[str] = []  # host names, in the order written
        self._stems: dict[str, str] = {}  # casefolded file stem -> host name
        self._spools: dict[tuple[str, str], _Spool] = {}  # (host, stream) -> output so far
        self._open_spools: OrderedDict[tuple[str, str], _Spool] = OrderedDict()  # fd open
        # an eighth of this process's open-files limit at most, which the caller shares
        self._spool_cap = max(1, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 8)
        for host in hosts:  # a case clash is found before anything runs
            self._claim(host)
        self._fd = self._open(self.directory, force)

    def _claim(self, host: str) -> str:
        try:
            stem = file_stem(host)
        except ValueError as error:
            raise ConfigError(f"--outdir: {error}") from None
        earlier = self._stems.setdefault(stem.casefold(), host)
        if earlier != host:
            raise ConfigError(f"--outdir: hosts {earlier!r} and {host!r} differ only in case "
                              "and would share files on a case-insensitive file system")
        return stem

    @staticmethod
    def _open(directory: str, force: bool) -> int:
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
        except OSError as error:
            raise ConfigError(f"--outdir {directory}: cannot create it: "
                              f"{error.strerror or error}") from None
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
        except NotADirectoryError:
            raise ConfigError(f"--outdir {directory}: not a directory") from None
        except OSError as error:
            raise ConfigError(f"--outdir {directory}: cannot open it: "
                              f"{error.strerror or error}") from None
        try:
            if not force and os.listdir(fd):
                raise ConfigError(f"--outdir {directory}: the directory is not empty "
                                  "(use --force to replace the files of this run's hosts)")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def paths(self, host: str) -> list[str]:
        """The `.out`, `.err` and `.json` paths for `host`."""
        stem = file_stem(host)
        return [os.path.join(self.directory, stem + suffix) for suffix in _SUFFIXES]

    def on_output(self, output: Output) -> None:
        """A chunk of a host's output as it arrived (see the module docstring).

        A write that fails raises `OSError` once; that host's `__call__` then
        raises it again and writes none of its files.
        """
        if self._fd < 0:
            raise ConfigError("this OutdirWriter is closed")
        key = (output.host, output.stream)
        spool = self._spools.get(key)
        if spool is None:
            self._claim(output.host)
            spool = self._spools[key] = _Spool()
        if spool.error is not None:
            return
        try:
            if spool.temp is None and spool.size + len(output.data) <= SPOOL_IN_MEMORY:
                spool.pieces.append(output.data)
                spool.size += len(output.data)
                return
            self._reopen(key, spool)
            _write_all(spool.fd, b"".join([*spool.pieces, output.data]))
            spool.pieces, spool.size = [], spool.size + len(output.data)
            spool.written = spool.size
        except OSError as error:
            spool.error = error
            self._release(key, spool)
            raise

    def __call__(self, result: HostResult) -> None:
        """Write `result`'s three files (`.json` last)."""
        if self._fd < 0:
            raise ConfigError("this OutdirWriter is closed")
        stem = self._claim(result.host)
        from .render import result_to_dict

        spools = [self._spools.pop((result.host, stream), None) for stream in ("stdout", "stderr")]
        failed = next((spool.error for spool in spools if spool and spool.error), None)
        if failed is not None:
            for key, spool in zip(((result.host, "stdout"), (result.host, "stderr")), spools,
                                  strict=True):
                if spool is not None:
                    self._discard(key, spool)
            raise failed
        record = json.dumps(result_to_dict(result), indent=2, ensure_ascii=True) + "\n"
        for suffix, stream, data, spool in ((".out", "stdout", result.stdout, spools[0]),
                                            (".err", "stderr", result.stderr, spools[1])):
            if spool is None:
                self._write(stem + suffix, data)
            else:  # every byte that came, not only what the result kept
                self._finish(stem + suffix, (result.host, stream), spool)
        self._write(stem + ".json", record.encode("ascii"))
        self.written.append(result.host)

    def _write(self, name: str, data: bytes) -> None:
        fd = self._fd
        temp, out = self._create()
        try:
            try:
                _write_all(out, data)
            finally:
                os.close(out)
            # rename(2) replaces a symlink or file at `name`; it never follows one.
            os.replace(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            self._unlink(temp)
            raise

    def _create(self) -> tuple[str, int]:
        """A new temporary file in DIR, 0600 whatever the umask: its name and an open fd."""
        temp = f".tmp-{secrets.token_hex(8)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
        out = os.open(temp, flags, 0o600, dir_fd=self._fd)
        try:
            os.fchmod(out, 0o600)
        except BaseException:
            os.close(out)
            self._unlink(temp)
            raise
        return temp, out

    def _reopen(self, key: tuple[str, str], spool: _Spool) -> None:
        """Make sure `spool` has an open file, closing the least recently used beyond
        `OPEN_SPOOLS`."""
        if spool.fd >= 0:
            self._open_spools.move_to_end(key)
            return
        while len(self._open_spools) >= min(OPEN_SPOOLS, self._spool_cap):
            _, oldest = self._open_spools.popitem(last=False)
            os.close(oldest.fd)
            oldest.fd = -1
        if spool.temp is None:
            spool.temp, spool.fd = self._create()
            spool.identity = _identity(os.fstat(spool.fd))
        else:
            fd = os.open(spool.temp, os.O_WRONLY | os.O_APPEND | _NOFOLLOW | _CLOEXEC,
                         dir_fd=self._fd)
            found = os.fstat(fd)  # ours (owner, inode) and as we left it (size)
            if _identity(found) != spool.identity or found.st_size != spool.written:
                os.close(fd)
                raise OSError(f"{spool.temp} in {self.directory} was replaced during the run")
            spool.fd = fd
        self._open_spools[key] = spool

    def _finish(self, name: str, key: tuple[str, str], spool: _Spool) -> None:
        if spool.temp is None:
            self._write(name, b"".join(spool.pieces))
            return
        try:
            self._reopen(key, spool)
            self._release(key, spool)
            os.replace(spool.temp, name, src_dir_fd=self._fd, dst_dir_fd=self._fd)
        except BaseException:
            self._discard(key, spool)
            raise

    def _release(self, key: tuple[str, str], spool: _Spool) -> None:
        if spool.fd >= 0:
            os.close(spool.fd)
            spool.fd = -1
        self._open_spools.pop(key, None)

    def _discard(self, key: tuple[str, str], spool: _Spool) -> None:
        self._release(key, spool)
        if spool.temp is not None:
            self._unlink(spool.temp)

    def _unlink(self, temp: str) -> None:
        try:
            os.unlink(temp, dir_fd=self._fd)
        except OSError:
            pass

    def close(self) -> None:
        """Release the directory (idempotent); output of hosts without a result is dropped."""
        if self._fd >= 0:
            for key, spool in list(self._spools.items()):
                self._discard(key, spool)
            self._spools.clear()
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> OutdirWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            self.close()


class _Spool:
    """One stream of one host so far: in memory while small, then in a temporary file."""

    __slots__ = ("error", "fd", "identity", "pieces", "size", "temp", "written")

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.size = 0
        self.temp: str | None = None
        self.fd = -1
        self.identity: tuple[int, int, int] = (0, 0, 0)
        self.written = 0  # bytes in the temporary file
        self.error: OSError | None = None


def _identity(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_dev, stat.st_ino, stat.st_uid


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
