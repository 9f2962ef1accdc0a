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
import secrets
from collections.abc import Iterable
from types import TracebackType

from .exceptions import ConfigError
from .results import HostResult

__all__ = ["OutdirWriter", "file_stem"]

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

    def __call__(self, result: HostResult) -> None:
        """Write `result`'s three files (`.json` last)."""
        if self._fd < 0:
            raise ConfigError("this OutdirWriter is closed")
        stem = self._claim(result.host)
        from .render import result_to_dict

        record = json.dumps(result_to_dict(result), indent=2, ensure_ascii=True) + "\n"
        self._write(stem + ".out", result.stdout)
        self._write(stem + ".err", result.stderr)
        self._write(stem + ".json", record.encode("ascii"))
        self.written.append(result.host)

    def _write(self, name: str, data: bytes) -> None:
        fd = self._fd
        temp = f".tmp-{secrets.token_hex(8)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
        out = os.open(temp, flags, 0o600, dir_fd=fd)
        try:
            try:
                os.fchmod(out, 0o600)  # whatever the umask
                view = memoryview(data)
                while view:
                    view = view[os.write(out, view) :]
            finally:
                os.close(out)
            # rename(2) replaces a symlink or file at `name`; it never follows one.
            os.replace(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            try:
                os.unlink(temp, dir_fd=fd)
            except OSError:
                pass
            raise

    def close(self) -> None:
        """Release the directory (idempotent)."""
        if self._fd >= 0:
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
