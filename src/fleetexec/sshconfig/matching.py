"""Which lines apply to a host: `Host` and `Match` blocks, `Include`, and the final pass.

* `Host` patterns (`*`, `?`, `!negation`, several separated by spaces) match the
  name as given, case-sensitively; `Match` takes `all`, `host`, `originalhost`,
  `user`, `localuser`, `exec`, `canonical` and `final` (comma lists, `!`), and
  `Match final` makes a second pass, as ssh does, in which `Host` patterns match
  the final host name and `canonical` matches too (no DNS canonicalisation is done).
* `Include` with globs, relative paths under `~/.ssh` (user files) or `/etc/ssh`.

`Match exec` runs its command as ssh does, `/bin/sh -c COMMAND` with the tokens
expanded, stdin and stdout on /dev/null, bounded by `EXEC_TIMEOUT` seconds (a
command still running then is killed and counts as "no match", with a note). A
non-zero exit is "no match".
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..exceptions import ConfigError
from ..patterns import match_list
from .reader import Line, strdelim
from .tokens import ALL_TOKENS, HOSTNAME_TOKENS, expand, token_table
from .values import Presets, Values, parse_port, single, take

if TYPE_CHECKING:
    from .lookup import SshConfig

__all__ = ["EXEC_TIMEOUT", "Pass", "exec_matches", "final_hostname"]

EXEC_TIMEOUT = 10.0
_MAX_DEPTH = 16  # OpenSSH's READCONF_MAX_DEPTH for Include


class Pass:
    """One reading of the files for one host, as readconf.c does it."""

    def __init__(self, config: SshConfig, host: str, original: str, values: Values,
                 presets: Presets, final: bool, hostname: str | None) -> None:
        self.config, self.host, self.original, self.values = config, host, original, values
        self.presets, self.final, self.hostname = presets, final, hostname
        self.want_final = False

    def run(self, lines: Sequence[Line], user_file: bool, *, active: bool, never: bool,
            depth: int) -> bool:
        for line in lines:
            keyword = line.keyword
            if keyword == "host":
                active = not never and _host_matches(self.host, line)
            elif keyword == "match":
                matched = self.match(line)
                active = not never and matched
            elif keyword == "include":
                self.include(line, user_file, active, never, depth)
            elif active:
                take(self.values, line, self.final)
        return active

    def include(self, line: Line, user_file: bool, active: bool, never: bool,
                depth: int) -> None:
        if depth + 1 > _MAX_DEPTH:
            raise ConfigError(f"{line.where}: Include nested more than {_MAX_DEPTH} deep")
        for arg in line.args:
            if arg.startswith("~") and not user_file:
                raise ConfigError(f"{line.where}: bad include path {arg} (no ~ in the "
                                  "system file)")
            if not os.path.isabs(arg) and not arg.startswith("~"):
                arg = os.path.join("~/.ssh" if user_file else "/etc/ssh", arg)
            for path in self.config._included(arg):
                lines = self.config._lines(path, True)
                if lines is None:
                    continue
                # An Include in a block that does not apply is read, but matches nothing.
                self.run(lines, user_file, active=active, never=never or not active,
                         depth=depth + 1)

    def match(self, line: Line) -> bool:
        """readconf.c's match_cfg_line."""
        first = self.values.first
        presets = self.presets
        port = presets.port or (parse_port(first["port"]) if "port" in first else 22)
        user = presets.user or (single(first["user"]) if "user" in first
                                else self.config._account.pw_name)
        if self.final:
            host = self.hostname or self.host
        elif presets.hostname is not None:
            host = presets.hostname
        elif "hostname" in first:
            host = expand(single(first["hostname"]), {"h": self.original, "%": "%"},
                          HOSTNAME_TOKENS, first["hostname"])
        else:
            host = self.original
        rest: str | None = line.rest
        result, attributes = True, 0
        while True:
            attribute, rest = strdelim(rest)
            if attribute is None or attribute == "" or attribute.startswith("#"):
                break
            negate = attribute.startswith("!")
            name = attribute[1:].lower() if negate else attribute.lower()
            if name == "all":
                following, _ = strdelim(rest)
                if attributes > 1 or (following and not following.startswith("#")):
                    raise ConfigError(f"{line.where}: '{attribute}' cannot be combined with "
                                      "other Match attributes")
                return result and not negate
            attributes += 1
            if name in ("canonical", "final"):
                if name == "final" and not self.final:
                    self.want_final = True
                if self.final == negate:
                    result = False
                continue
            argument, rest = strdelim(rest)
            if argument is None or argument == "" or argument.startswith("#"):
                raise ConfigError(f"{line.where}: missing Match criteria for {name}")
            if name == "host":
                matched = _pattern_list(host.lower(), argument, lower=True) == 1
            elif name == "originalhost":
                matched = _pattern_list(self.original.lower(), argument, lower=True) == 1
            elif name == "user":
                matched = _pattern_list(user, argument) == 1
            elif name == "localuser":
                matched = _pattern_list(self.config._account.pw_name, argument) == 1
            elif name == "exec":
                alias = first.get("hostkeyalias")
                tokens = token_table(
                    self.config._thishost, self.config._account, host=host,
                    original=self.original, port=port, user=user,
                    alias=single(alias).lower() if alias else host)
                command = expand(argument, tokens, ALL_TOKENS, line)
                if not result:  # skipped once an earlier criterion failed, as ssh does
                    continue
                matched = self.config.run_exec(command, line)
            else:
                raise ConfigError(f"{line.where}: Match {name} is not supported")
            if matched == negate:
                result = False
        if attributes == 0:
            raise ConfigError(f"{line.where}: Match needs one or more criteria")
        return result


def final_hostname(name: str, values: Values, preset: str | None) -> str:
    """ssh.c: HostName with %h expanded, lower-cased; the name if none."""
    if preset is not None:
        return preset.lower()
    line = values.first.get("hostname")
    if line is None:
        return name.lower()
    return expand(single(line), {"h": name, "%": "%"}, HOSTNAME_TOKENS, line).lower()


def _host_matches(host: str, line: Line) -> bool:
    """A `Host` line: some pattern matches `host` and no `!pattern` does (case-sensitive)."""
    return match_list(host, line.args) == 1


def _pattern_list(text: str, patterns: str, lower: bool = False) -> int:
    """match.c's match_pattern_list: 1 on a match, -1 on a negated match, else 0."""
    return match_list(text, (p.lower() if lower else p for p in patterns.split(",")))


def exec_matches(command: str, line: Line, timeout: float, notes: list[str]) -> bool:
    """Run `Match exec`'s `command`: True if it exits 0 within `timeout` seconds (else
    it is killed, and a note says so)."""
    try:
        process = subprocess.Popen(  # noqa: S603 - the user's own ssh config asks for it
            ["/bin/sh", "-c", command], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as error:
        raise ConfigError(f"{line.where}: Match exec: cannot run /bin/sh: "
                          f"{error.strerror}") from None
    try:
        return process.wait(timeout) == 0
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        notes.append(f"{line.where}: Match exec {command!r} did not finish "
                     f"within {timeout:g}s; it was killed and "
                     "counts as not matching")
        return False
