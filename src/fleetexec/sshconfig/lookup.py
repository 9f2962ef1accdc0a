"""`SshConfig`: the configuration files, read once, looked up host by host."""

from __future__ import annotations

import glob
import os
import pwd
import socket
from collections.abc import Iterable

from ..exceptions import ConfigError
from .matching import EXEC_TIMEOUT, Pass, exec_matches, final_hostname
from .reader import Line, read
from .values import HostConfig, Presets, Values, finish

__all__ = ["SshConfig"]


class SshConfig:
    """The configuration files, parsed once, looked up for any number of hosts.

    `files` as `default_config_files` makes them. Files are read when first
    needed and kept for the life of this object (one `resolve()` call), as are
    the results of `Match exec` commands. Raises `ConfigError` naming the file
    and line for what ssh would refuse.
    """

    def __init__(self, files: Iterable[tuple[str, bool, bool]] = (), *,
                 exec_timeout: float = EXEC_TIMEOUT) -> None:
        self.files = tuple(files)
        self.exec_timeout = exec_timeout
        self._parsed: dict[str, list[Line] | None] = {}
        self._globbed: dict[str, list[str]] = {}
        self._exec: dict[str, bool] = {}
        self._exec_notes: list[str] = []
        self._account = pwd.getpwuid(os.getuid())
        self._thishost = socket.gethostname()

    def lookup(self, name: str, *, user: str | None = None, port: int | None = None,
               hostname: str | None = None, default_user: str | None = None) -> HostConfig:
        """The configuration for host `name` (the name as given, `%n`).

        `user`, `port` and `hostname` are values a stronger source already set
        (the target, a flag, the inventory): they act like `ssh -l`, `-p` and
        `-o HostName=`, so the files cannot change them and `Match` and the
        tokens see them. `default_user` is the remote user when nobody sets
        one (the local user).
        """
        values = Values()
        presets = Presets(user, port, hostname)
        final = self._pass(name, name, values, presets, final=False)
        host = final_hostname(name, values, hostname)
        if final:
            self._pass(host, name, values, presets, final=True, hostname=host)
        notes = [*self._exec_notes]
        self._exec_notes.clear()
        return finish(name, host, values, presets, default_user=default_user
                      or self._account.pw_name, thishost=self._thishost,
                      account=self._account, notes=notes)

    def _lines(self, path: str, check: bool) -> list[Line] | None:
        """The parsed lines of `path`, or None if it does not exist."""
        if path not in self._parsed:
            self._parsed[path] = read(path, check, self._account)
        return self._parsed[path]

    def _included(self, pattern: str) -> list[str]:
        """The files an `Include` pattern names, globbed once for every host of the run."""
        if pattern not in self._globbed:
            self._globbed[pattern] = sorted(glob.glob(os.path.expanduser(pattern)))
        return self._globbed[pattern]

    def _pass(self, host: str, original: str, values: Values, presets: Presets, *,
              final: bool, hostname: str | None = None) -> bool:
        """One reading of every file; True if some `Match final` asks for a second one."""
        state = Pass(self, host, original, values, presets, final, hostname)
        for path, user_file, check in self.files:
            lines = self._lines(path, check)
            if lines is None:
                if not user_file or check:  # ~/.ssh/config and the system file may be missing
                    continue
                raise ConfigError(f"cannot read ssh config {path}: no such file")
            state.run(lines, user_file, active=True, never=False, depth=0)
        return state.want_final

    def run_exec(self, command: str, line: Line) -> bool:
        """`Match exec`: True if `command` exits 0 (cached per distinct command)."""
        if command not in self._exec:
            self._exec[command] = exec_matches(command, line, self.exec_timeout,
                                               self._exec_notes)
        return self._exec[command]
