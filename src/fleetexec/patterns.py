"""OpenSSH's host patterns (match.c), shared by ssh_config and known_hosts reading. Pure stdlib.

`*` matches any run of characters, `?` one character, and everything else is
literal (`[` included, unlike fnmatch). A pattern list matches a name when some
pattern does and no `!pattern` does.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["glob", "match_list"]


def glob(name: str, pattern: str) -> bool:
    """Whether `pattern` matches all of `name`.

    Greedy, backtracking only to the last `*`: O(len(name) * len(pattern)) even for
    patterns like `*a*a*a*b`, where a regex backtracks combinatorially.
    """
    n = p = 0
    star, resume = -1, 0
    while n < len(name):
        if p < len(pattern) and pattern[p] == "*":
            star, resume = p, n
            p += 1
        elif p < len(pattern) and pattern[p] in ("?", name[n]):
            n += 1
            p += 1
        elif star >= 0:  # let the last `*` swallow one more character and retry
            p, resume = star + 1, resume + 1
            n = resume
        else:
            return False
    return pattern[p:].strip("*") == ""


def match_list(name: str, patterns: Iterable[str]) -> int:
    """match_pattern_list: 1 if a pattern matches, -1 if a `!pattern` does (it vetoes), else 0."""
    positive = 0
    for pattern in patterns:
        negated = pattern.startswith("!")
        if glob(name, pattern[1:] if negated else pattern):
            if negated:
                return -1
            positive = 1
    return positive
