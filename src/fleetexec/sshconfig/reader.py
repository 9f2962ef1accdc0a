"""Reading the configuration files, as readconf.c does: which files, whether their
permissions are safe, and each line lexed into a keyword and its arguments.

* files: `~/.ssh/config` then `/etc/ssh/ssh_config`, or one `-F` file (`none`: no
  file). `~/.ssh/config` and every included file must not be writable by others
  (ssh refuses them too: they can run commands through `Match exec`).
* lines: keywords case-insensitive, `key value` or `key=value`, double or single
  quotes, `#` comments.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass

from ..exceptions import ConfigError

__all__ = ["SYSTEM_CONFIG", "USER_CONFIG", "Line", "default_config_files", "read", "shown",
           "strdelim"]

USER_CONFIG = "~/.ssh/config"
SYSTEM_CONFIG = "/etc/ssh/ssh_config"
_MAX_BYTES = 1 << 20
_WHITESPACE = " \t\r\n"


def default_config_files(path: str | None = None,
                         use: bool = True) -> tuple[tuple[str, bool, bool], ...]:
    """The files `ssh` reads, as `(path, user file, check permissions)`.

    `path` is `-F`: it replaces both (`none`: no file), as with `ssh -F`.
    """
    if not use:
        return ()
    if path is not None:
        return () if path == "none" else ((os.path.abspath(os.path.expanduser(path)), True,
                                          False),)
    return ((os.path.expanduser(USER_CONFIG), True, True), (SYSTEM_CONFIG, False, False))


@dataclass(frozen=True)
class Line:
    path: str
    number: int
    keyword: str
    args: tuple[str, ...]
    rest: str  # the raw text after the keyword (Match and ProxyCommand read it)

    @property
    def where(self) -> str:
        return f"{shown(self.path)} line {self.number}"


def shown(path: str) -> str:
    home = os.path.expanduser("~")
    return "~" + path[len(home):] if home != "/" and path.startswith(home + "/") else path


def read(path: str, check: bool, account: pwd.struct_passwd) -> list[Line] | None:
    """The parsed lines of `path`, or None if it does not exist (or is a directory)."""
    try:
        with open(path, "rb") as stream:
            info = os.fstat(stream.fileno())
            if stat.S_ISDIR(info.st_mode):
                return None
            if check and not _secure(info, account):
                raise ConfigError(f"bad owner or permissions on {path} (ssh refuses it too): "
                                  f"run: chmod go-w {path}")
            data = stream.read(_MAX_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except IsADirectoryError:
        return None
    except OSError as error:
        raise ConfigError(f"cannot read ssh config {path}: {error.strerror}") from None
    if len(data) > _MAX_BYTES:
        raise ConfigError(f"ssh config {path} is larger than {_MAX_BYTES >> 20} MiB")
    lines = []
    for number, raw in enumerate(data.decode("utf-8", errors="replace").split("\n"), 1):
        parsed = _parse_line(raw, path, number)
        if parsed is not None:
            lines.append(parsed)
    return lines


def _secure(info: os.stat_result, account: pwd.struct_passwd) -> bool:
    """misc.c's secure_permissions: owned by us or root, writable by no one else
    (group-writable only for a group whose one member is the owner)."""
    if info.st_uid not in (0, account.pw_uid) or info.st_mode & stat.S_IWOTH:
        return False
    if info.st_mode & stat.S_IWGRP:
        try:
            group = grp.getgrgid(info.st_gid)
        except KeyError:
            return False
        members = list(group.gr_mem)
        return members == [account.pw_name] or (not members and group.gr_gid
                                                 == account.pw_gid)
    return True


def _parse_line(raw: str, path: str, number: int) -> Line | None:
    """readconf.c's process_config_line: keyword, then arguments (None: nothing here)."""
    text = raw.rstrip(_WHITESPACE + "\f")
    where = f"{shown(path)} line {number}"
    keyword, rest = strdelim(text)
    if keyword == "":
        keyword, rest = strdelim(rest)
    if keyword is None or keyword == "" or keyword.startswith("#"):
        return None
    keyword = keyword.lower()
    rest = (rest or "").lstrip(_WHITESPACE)
    if not rest:
        raise ConfigError(f"{where}: no argument after keyword {keyword!r}")
    args = _argv_split(rest)
    if args is None:
        raise ConfigError(f"{where}: invalid quotes")
    if not args and keyword not in ("match",):
        raise ConfigError(f"{where}: no argument after keyword {keyword!r}")
    if any(a == "" for a in args) and keyword not in ("match", "proxycommand",
                                                       "localcommand", "remotecommand"):
        raise ConfigError(f"{where}: keyword {keyword} empty argument")
    if keyword in _SINGLE and len(args) > 1:
        raise ConfigError(f"{where}: keyword {keyword} extra arguments at end of line")
    if keyword == "proxycommand":
        rest = rest.lstrip(_WHITESPACE + "=")
    return Line(path, number, keyword, tuple(args), rest)


_SINGLE = frozenset({"hostname", "user", "port", "identityfile", "identitiesonly",
                     "identityagent", "connecttimeout", "stricthostkeychecking", "hostkeyalias",
                     "checkhostip", "serveraliveinterval", "serveralivecountmax",
                     "addressfamily", "proxyjump", "certificatefile"})


def strdelim(text: str | None, split_equals: bool = True) -> tuple[str | None, str | None]:
    """misc.c's strdelim: the next word (double quotes group), and the rest."""
    if text is None:
        return None, None
    stops = _WHITESPACE + '"' + ("=" if split_equals else "")
    at = next((i for i, c in enumerate(text) if c in stops), -1)
    if at < 0:
        return text, None
    if text[at] == '"':
        text = text[:at] + text[at + 1:]
        end = text.find('"', at)
        if end < 0:
            return None, None  # no matching quote
        return text[:end], text[end + 1:].lstrip(_WHITESPACE)
    equals = split_equals and text[at] == "="
    word, rest = text[:at], text[at + 1:].lstrip(_WHITESPACE)
    if split_equals and rest.startswith("=") and not equals:
        rest = rest[1:].lstrip(_WHITESPACE)
    return word, rest


def _argv_split(text: str) -> list[str] | None:
    """misc.c's argv_split (terminating on `#`): None if a quote is not closed."""
    args: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t":
            i += 1
            continue
        if text[i] == "#":
            break
        quote, word = "", []
        while i < n:
            c = text[i]
            if c == "\\" and i + 1 < n and (text[i + 1] in "'\"\\" or (
                    not quote and text[i + 1] == " ")):
                word.append(text[i + 1])
                i += 2
                continue
            if not quote and c in " \t":
                break
            if not quote and c in "'\"":
                quote = c
            elif quote and c == quote:
                quote = ""
            else:
                word.append(c)
            i += 1
        if quote:
            return None
        args.append("".join(word))
    return args
