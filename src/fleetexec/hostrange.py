"""Host ranges: `web[01-20].example.com` → names, and names → folded ranges.

Pure functions, no I/O. `expand` is what the inventory and `--hosts` use;
`fold` is what the gathered renderer uses to head a block of hosts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["expand", "fold"]

_BRACKET = re.compile(r"\[([^\[\]]*)\]")
# At most 9 digits a number: a 5000-digit "number" would make int() itself refuse.
_PART = re.compile(r"(\d{1,9})(?:-(\d{1,9}))?", re.ASCII)
_MAX_EXPANSION = 100_000


def expand(pattern: str) -> list[str]:
    """Expand every `[a-b,c]` range in `pattern`, left to right.

    `expand("db[1-3,7]")` → `["db1", "db2", "db3", "db7"]`; leading zeros set
    the width: `expand("web[01-03]")` → `["web01", "web02", "web03"]`.
    Raises `ValueError` with a one-line reason for a malformed range.
    """
    match = _BRACKET.search(pattern)
    if match is None:
        if "[" in pattern or "]" in pattern:
            raise ValueError(f"unbalanced bracket in {pattern!r}")
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    if "[" in head or "]" in head:
        raise ValueError(f"unbalanced bracket in {pattern!r}")
    names: list[str] = []
    rests = expand(tail)
    for number in _numbers(match.group(1), pattern):
        for rest in rests:
            names.append(f"{head}{number}{rest}")
            if len(names) > _MAX_EXPANSION:
                raise ValueError(f"{pattern!r} expands to more than {_MAX_EXPANSION} names")
    return names


def _numbers(body: str, pattern: str) -> list[str]:
    numbers: list[str] = []
    for part in body.split(","):
        found = _PART.fullmatch(part.strip())
        if found is None:
            raise ValueError(
                f"bad range {f'[{body}]'!r} in {pattern!r}: use [1-5], [01-20] or [1,3,7-9]"
            )
        first, last = found.group(1), found.group(2) or found.group(1)
        if int(last) < int(first):
            raise ValueError(f"bad range {f'[{body}]'!r} in {pattern!r}: {first} > {last}")
        # Count across all parts: `[1-90000,1-90000,…]` must not build a huge list first.
        if len(numbers) + int(last) - int(first) > _MAX_EXPANSION:
            raise ValueError(f"{pattern!r} expands to more than {_MAX_EXPANSION} names")
        width = len(first) if first.startswith("0") and len(first) > 1 else 0
        numbers.extend(str(n).zfill(width) for n in range(int(first), int(last) + 1))
    return numbers


_TRAILING_NUMBER = re.compile(r"^(.*?)(\d+)(\D*)$")


def fold(names: Iterable[str]) -> str:
    """Fold host names into a short range expression, like ClusterShell's nodeset.

    `fold(["web01", "web02", "web03", "db1"])` → `"db1,web[01-03]"`. Only the
    last number in a name is folded; names with different digit widths or
    affixes stay apart, so `expand` of each part gives back exactly the input.
    """
    groups: dict[tuple[str, str, int], list[int]] = {}
    plain: list[str] = []
    for name in dict.fromkeys(names):
        found = _TRAILING_NUMBER.match(name)
        if found is None or "[" in name or "]" in name:
            plain.append(name)
            continue
        head, digits, tail = found.groups()
        width = len(digits) if digits.startswith("0") and len(digits) > 1 else 0
        groups.setdefault((head, tail, width), []).append(int(digits))
    parts = list(plain)
    for (head, tail, width), numbers in groups.items():
        if len(numbers) == 1:
            parts.append(f"{head}{str(numbers[0]).zfill(width)}{tail}")
            continue
        spans = _spans(sorted(numbers))
        body = ",".join(
            str(a).zfill(width) if a == b else f"{str(a).zfill(width)}-{str(b).zfill(width)}"
            for a, b in spans
        )
        parts.append(f"{head}[{body}]{tail}")
    return ",".join(sorted(parts))


def _spans(numbers: list[int]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for number in numbers:
        if spans and number == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], number)
        else:
            spans.append((number, number))
    return spans
