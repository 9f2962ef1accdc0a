"""Expanding `%` tokens, `${VAR}` and `~` in configuration values, where OpenSSH
expands them (`%h %p %r %u %d %% %n %l %L %C %i %k`), each keyword only the
tokens ssh_config(5) allows it.
"""

from __future__ import annotations

import hashlib
import os
import pwd
from collections.abc import Iterable

from ..exceptions import ConfigError
from .reader import Line

__all__ = ["ALL_TOKENS", "HOSTNAME_TOKENS", "PROXY_TOKENS", "expand", "expand_path",
           "expand_proxy_command", "token_table"]

# Tokens each keyword expands (ssh_config(5) TOKENS, OpenSSH 9.2).
ALL_TOKENS = frozenset("%CdhiLlnprku")
HOSTNAME_TOKENS = frozenset("%h")
PROXY_TOKENS = frozenset("%hnpr")


def token_table(thishost: str, account: pwd.struct_passwd, *, host: str, original: str,
                port: int, user: str, alias: str | None) -> dict[str, str]:
    """What each token stands for, for one host (`thishost`: the local host name)."""
    return {
        "%": "%", "C": hashlib.sha1(  # noqa: S324 - OpenSSH's %C, a name, not security
            f"{thishost}{host}{port}{user}".encode()).hexdigest(),
        "d": os.path.expanduser("~"), "h": host, "i": str(os.getuid()),
        "k": alias or original, "L": thishost.split(".")[0],
        "l": thishost, "n": original, "p": str(port), "r": user,
        "u": account.pw_name,
    }


def expand(text: str, tokens: dict[str, str], allowed: Iterable[str], line: Line) -> str:
    """misc.c's percent_expand, limited to the tokens the keyword accepts."""
    return _percent(text, tokens, allowed, f"{line.where}: {line.keyword}")


def expand_proxy_command(command: str, *, host: str, port: int, user: str, original: str,
                         where: str) -> str:
    """ProxyCommand's tokens (`%h %p %r %n %%`), as ssh expands them when it connects:
    with the final address, port and user (`ssh -G` shows them unexpanded)."""
    tokens = {"%": "%", "h": host, "p": str(port), "r": user, "n": original}
    return _percent(command, tokens, PROXY_TOKENS, f"{where}: ProxyCommand")


def _percent(text: str, tokens: dict[str, str], allowed: Iterable[str], where: str) -> str:
    allowed = set(allowed) | {"%"}
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        key = text[i + 1: i + 2]
        if not key or key not in allowed or key not in tokens:
            raise ConfigError(f"{where}: unknown token %{key} in {text!r}")
        out.append(tokens[key])
        i += 2
    return "".join(out)


def _dollar(text: str, line: Line) -> str:
    """`${VAR}` from the environment; a missing variable is an error, as in ssh."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("${", i):
            end = text.find("}", i)
            name = text[i + 2: end] if end > 0 else ""
            if end < 0 or not name or not (name.replace("_", "a").isalnum()
                                           and not name[0].isdigit()):
                raise ConfigError(f"{line.where}: {line.keyword}: bad variable in {text!r}")
            if name not in os.environ:
                raise ConfigError(f"{line.where}: {line.keyword}: environment variable "
                                  f"${{{name}}} is not set")
            out.append(os.environ[name])
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def expand_path(text: str, tokens: dict[str, str], line: Line) -> str:
    """A path as ssh reads IdentityFile and UserKnownHostsFile: ~, then ${VAR}, then %."""
    expanded = expand(_dollar(os.path.expanduser(text), line), tokens, ALL_TOKENS, line)
    return os.path.abspath(expanded)
