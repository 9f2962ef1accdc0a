"""Host names as Ansible inventories write them: `host:port`, `[host]:port` and ranges
(`www[01:50]`, `db-[a:f]`, `[1:10:2]`), and whether a text reads as one host. Pure stdlib."""

from __future__ import annotations

import ipaddress
import re
import string

from .limits import MAX_HOSTS

__all__ = ["expand_range", "is_address", "split_port"]

# `host:port` and `[host]:port`; the host must then look like a host name (ranges allowed)
# or an IPv6 address, or the colon is part of the name, as in Ansible.
_BRACKETED_PORT = re.compile(r"\[(.+)\]:([0-9]+)")
_HOST_PORT = re.compile(r"((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)")
_RANGE = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_LABEL = rf"(?:\w|{_RANGE})(?:[\w-]|{_RANGE})*(?<![_-])"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*", re.IGNORECASE)
_HEX_RANGE = re.compile(r"\[([0-9a-f]+):[0-9a-f]+(?::[0-9]+)?\]", re.IGNORECASE)


def split_port(pattern: str) -> tuple[str, int | None]:
    """`web:2222` → (`web`, 2222); the port is split off only when what is left reads as a
    host name (ranges allowed) or an IPv6 address, as Ansible does."""
    address, port = pattern, None
    for form in (_BRACKETED_PORT, _HOST_PORT):
        if found := form.fullmatch(address):
            digits = found.group(2)
            address, port = found.group(1), int(digits) if len(digits) <= 12 else 10**12
    if not is_address(address):
        return pattern, None
    return address, port


def is_address(text: str) -> bool:
    if _HOSTNAME.fullmatch(text):
        return True
    if ":" not in text:
        return False
    try:  # an IPv6 address, each hex range standing for its first bound
        ipaddress.IPv6Address(_HEX_RANGE.sub(lambda m: m.group(1), text))
    except ValueError:
        return False
    return True


def expand_range(name: str) -> list[str]:
    """Ansible's `[begin:end]` / `[begin:end:step]` ranges, numeric (a leading zero sets the
    width) or one letter each, first range varying slowest. Raises ValueError."""
    if "[" not in name:
        return [name]
    head, _, rest = name.partition("[")
    body, closed, tail = rest.partition("]")
    if not closed or "]" in head:
        raise ValueError(f"unbalanced bracket in {name!r}")
    bounds = body.split(":")
    if len(bounds) not in (2, 3):
        raise ValueError(f"bad range [{body}] in {name!r}: use [begin:end] or "
                         "[begin:end:step]")
    begin, end = bounds[0] or "0", bounds[1]
    step = bounds[2] if len(bounds) == 3 else "1"
    if not end:
        raise ValueError(f"bad range [{body}] in {name!r}: no end")
    if not (step.isascii() and step.isdigit() and len(step) <= 18) or int(step) < 1:
        raise ValueError(f"bad range [{body}] in {name!r}: the step must be 1 or more")
    if len(begin) == len(end) == 1 and begin in string.ascii_letters and (
            end in string.ascii_letters):
        first, last = string.ascii_letters.index(begin), string.ascii_letters.index(end)
        if first > last:
            raise ValueError(f"bad range [{body}] in {name!r}: {begin} is after {end}")
        items = list(string.ascii_letters[first:last + 1:int(step)])
    elif begin.isascii() and begin.isdigit() and end.isascii() and end.isdigit() and (
            len(begin) <= 18 and len(end) <= 18):
        width = len(begin) if begin[0] == "0" and len(begin) > 1 else 0
        if width and len(end) != width:
            raise ValueError(f"bad range [{body}] in {name!r}: {begin} and {end} are not "
                             "the same width")
        if int(begin) > int(end):  # Ansible makes no hosts of it, silently
            raise ValueError(f"bad range [{body}] in {name!r}: {begin} is after {end}")
        if (int(end) - int(begin)) // int(step) >= MAX_HOSTS:
            raise ValueError(f"{name!r} expands to more than {MAX_HOSTS} names")
        items = [str(n).zfill(width) for n in range(int(begin), int(end) + 1, int(step))]
    else:
        raise ValueError(f"bad range [{body}] in {name!r}: use numbers ([01:50]) or "
                         "single letters ([a:f])")
    names: list[str] = []
    for item in items:
        names.extend(expand_range(head + item + tail))
        if len(names) > MAX_HOSTS:
            raise ValueError(f"{name!r} expands to more than {MAX_HOSTS} names")
    return names
