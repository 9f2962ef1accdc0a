"""Host ranges: `web[01-20].example.com` → names, and names → folded ranges.

Pure functions, no I/O. `expand` is what the inventory and `--hosts` use;
`fold` is what the gathered renderer uses to head a block of hosts; `split`
cuts a comma list into terms.

The syntax and its meaning are ClusterShell's (`nodeset -e`, clush), so a
range names the same hosts in fleetexec as there: `[1-5]`, `[01-20]` (the
zero padding sets the width), `[1,3,7-9]`, steps `[1-12/2]` (1,3,...,11),
spaces around the numbers allowed. Where pdsh and ClusterShell disagree,
ClusterShell wins: digits right before a bracket belong to each bound, so
`n1[0-20]` is n10, n11, ..., n120 (111 hosts; pdsh gives n10-n19, n110-n120),
`n0[7-10]` is an error (bounds 07 and 010 differ in width), and `n[1-2]0`
is n10, n20. Two ranges need a non-digit between them (`r[1-2]n[1-4]`).
Not supported, and refused rather than read differently: negative numbers
and ClusterShell's set operators (`!`, `&`, `^`) inside a range pattern.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Iterable

__all__ = ["expand", "fold", "split"]

_BRACKET = re.compile(r"\[([^\[\]]*)\]")
# A number is at most 63 digits, the longest DNS label: a 5000-digit "number"
# would make int() itself refuse. `fold` leaves longer digit runs as text.
_MAX_DIGITS = 63
_PART = re.compile(r" *(\d{1,63}) *(?:- *(\d{1,63}) *(?:/ *(\d{1,63}) *)?)?", re.ASCII)
_NUMBER = re.compile(r"(?<!\d)(\d{1,63})(?!\d)", re.ASCII)
_MAX_EXPANSION = 100_000
_MAX_RANGES = 16  # bracket groups in one pattern: bounds the work before any is done
_HELP = "use [1-5], [01-20], [1,3,7-9] or [1-9/2]"


def split(text: str) -> list[str]:
    """Split a comma list on the commas outside `[...]`, stripping each term:
    `split("web[1,3],db1")` → `["web[1,3]", "db1"]`. Linear in the length."""
    terms: list[str] = []
    start = depth = 0
    for index, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth = max(depth - 1, 0)  # a stray `]` is for `expand` to report
        elif char == "," and not depth:
            terms.append(text[start:index].strip())
            start = index + 1
    terms.append(text[start:].strip())
    return terms


def expand(pattern: str) -> list[str]:
    """Expand every `[...]` range in `pattern`, first range varying slowest.

    `expand("db[1-3,7]")` → `["db1", "db2", "db3", "db7"]`; leading zeros set
    the width: `expand("web[01-03]")` → `["web01", "web02", "web03"]`.
    Raises `ValueError` with a one-line reason for a malformed range, more
    than 16 ranges, or more than 100000 names.
    """
    if any(c in pattern for c in "!&^"):  # ClusterShell's set operators: refused, not names
        raise ValueError(f"'!', '&' and '^' are not allowed in a host range: {_short(pattern)}")
    if pattern.count("[") > _MAX_RANGES:
        raise ValueError(f"more than {_MAX_RANGES} ranges in {_short(pattern)}")
    pieces = _BRACKET.split(pattern)  # text, range, text, range, ..., text
    texts, bodies = pieces[0::2], pieces[1::2]
    if any("[" in text or "]" in text for text in texts):
        raise ValueError(f"unbalanced bracket in {_short(pattern)}")
    if any(not text.strip(string.digits) for text in texts[1:-1]):
        # ClusterShell refuses these too: whose number would the digits be?
        raise ValueError(f"ranges in {_short(pattern)} must be apart, with a non-digit "
                         "between them: r[1-2]n[1-4]")
    names, total = [""], 1
    for i, body in enumerate(bodies):
        before, after = texts[i], texts[i + 1]
        head = before.rstrip(string.digits)
        tail = after.lstrip(string.digits)
        numbers = _numbers(body, before[len(head):], after[: len(after) - len(tail)], pattern)
        total *= len(numbers)
        if total > _MAX_EXPANSION:
            raise ValueError(f"{_short(pattern)} expands to more than {_MAX_EXPANSION} names")
        texts[i + 1] = tail
        names = [f"{name}{head}{number}" for name in names for number in numbers]
    return [name + texts[-1] for name in names]


def _short(pattern: str) -> str:
    return repr(pattern if len(pattern) <= 80 else pattern[:80] + "…")


def _numbers(body: str, lead: str, trail: str, pattern: str) -> list[str]:
    """The numbers of one range; `lead`/`trail` are the digits written right
    before/after the bracket, which ClusterShell makes part of the numbers."""
    shown = f"bad range {f'[{body}]'!r} in {_short(pattern)}"
    if trail:  # n[1-2]0 is 10-20/10 (ClusterShell amends the trailing digits first)
        if "/" in body:
            raise ValueError(f"{shown}: digits right after a range with steps are ambiguous")
        step = "/1" + "0" * len(trail)
        body = ",".join(
            "-".join(b.strip() + trail for b in part.split("-")) + (step if "-" in part else "")
            for part in body.split(","))
    if lead:  # n1[0-20] is 10-120: each contiguous run gets the digits on both bounds
        runs = _runs(_parse(body, shown, pattern))
        body = ",".join(f"{lead}{a}" if a == b else f"{lead}{a}-{lead}{b}" for a, b in runs)
    return _parse(body, shown, pattern)


def _parse(body: str, shown: str, pattern: str) -> list[str]:
    numbers: list[str] = []
    for part in body.split(","):
        found = _PART.fullmatch(part)
        if found is None:
            raise ValueError(f"{shown}: {_HELP}")
        first, last, step = found.group(1), found.group(2) or found.group(1), found.group(3)
        padded = _width(first) or _width(last)
        if padded and len(first) != len(last):
            raise ValueError(f"{shown}: {first}-{last} are zero-padded to different widths")
        low, high, stride = int(first), int(last), int(step or 1)
        if high < low:
            raise ValueError(f"{shown}: {first} > {last}")
        if stride < 1:
            raise ValueError(f"{shown}: the step must be 1 or more")
        # Count across all parts: `[1-90000,1-90000,…]` must not build a huge list first.
        if len(numbers) + (high - low) // stride >= _MAX_EXPANSION:
            raise ValueError(f"{_short(pattern)} expands to more than {_MAX_EXPANSION} names")
        width = len(first) if padded else 0
        numbers.extend(str(n).zfill(width) for n in range(low, high + 1, stride))
    return numbers


def _width(number: str) -> int:
    """The width a zero-padded number sets (`007` → 3); 0 when not padded."""
    return len(number) if len(number) > 1 and number[0] == "0" else 0


def _runs(numbers: Iterable[str]) -> list[tuple[str, str]]:
    """Sorted numbers as contiguous runs `(first, last)`, each of one padding,
    so that `first-last` expands to exactly the run."""
    runs: list[tuple[str, str]] = []
    for number in sorted(set(numbers), key=lambda n: (len(n), int(n))):
        if runs and _continues(runs[-1], number):
            runs[-1] = (runs[-1][0], number)
        else:
            runs.append((number, number))
    return runs


def _continues(run: tuple[str, str], number: str) -> bool:
    width = _width(run[0])
    return (int(number) == int(run[1]) + 1 and number == str(int(number)).zfill(width)
            and (not width or len(number) == width))


def fold(names: Iterable[str]) -> str:
    """Fold host names into a short range expression, like ClusterShell's `nodeset -f`.

    `fold(["web01", "web02", "web03", "db1"])` → `"db1,web[01-03]"`;
    `fold(["r1n1", "r1n2", "r2n1", "r2n2"])` → `"r[1-2]n[1-2]"`. Any number in
    a name can be folded; `split` then `expand` of the result always gives
    back exactly the input names (a name holding `[`, `]` or `,` is kept as
    is, and cannot be expanded back).
    """
    shapes: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    parts: list[tuple[str, int, str]] = []  # sorted as nodeset does: by pattern, largest first
    for name in dict.fromkeys(names):
        pieces = _NUMBER.split(name)  # text, number, text, number, ..., text
        if len(pieces) == 1 or len(pieces) > 2 * _MAX_RANGES + 1 or any(c in name for c in "[],"):
            parts.append((name, -1, name))
            continue
        shapes.setdefault(tuple(pieces[0::2]), []).append(tuple(pieces[1::2]))
    for texts, vectors in shapes.items():
        for box in _boxes(vectors):
            out = [texts[0]]
            for numbers, text in zip(box, texts[1:], strict=True):
                body = ",".join(a if a == b else f"{a}-{b}" for a, b in _runs(numbers))
                out += [body if len(numbers) == 1 else f"[{body}]", text]
            parts.append(("%s".join(texts), -math.prod(map(len, box)), "".join(out)))
    return ",".join(text for *_, text in sorted(parts))


def _boxes(vectors: list[tuple[str, ...]]) -> list[tuple[frozenset[str], ...]]:
    """Cover a set of number vectors with disjoint boxes (a set of numbers per
    position), merging boxes that differ in one position only, last position
    first, until nothing merges: r1n1, r1n2, r2n1, r2n2 → ({1, 2}, {1, 2})."""
    boxes = [tuple(frozenset((n,)) for n in vector) for vector in vectors]
    while True:
        count = len(boxes)
        for axis in reversed(range(len(boxes[0]))):
            merged: dict[tuple[frozenset[str], ...], set[str]] = {}
            for box in boxes:
                merged.setdefault(box[:axis] + box[axis + 1 :], set()).update(box[axis])
            boxes = [rest[:axis] + (frozenset(numbers),) + rest[axis:]
                     for rest, numbers in merged.items()]
        if len(boxes) == count:
            return boxes
