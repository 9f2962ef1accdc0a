"""Results and hosts as text for a terminal: table, gathered, diff, summary, progress, hosts.

Pure functions: nothing here does I/O or knows about click; every function
returns a string without a trailing newline. This is the only module that
imports tabulate. Every text from a host or a user passes through `sanitize`.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from ..host import Host
from ..hostrange import fold
from ..results import FleetResult, HostResult, Status
from .terminal import sanitize

__all__ = [
    "render_diff", "render_gathered", "render_hosts", "render_progress_line", "render_summary",
    "render_table",
]

_TABLE_FORMAT = "simple"
_ELLIPSIS = "…"
_TRUNCATED = "[truncated]"


def _cut(text: str, width: int) -> str:
    width = max(width, 1)
    return text if len(text) <= width else text[: width - 1] + _ELLIPSIS


def _seconds(value: float) -> str:
    return f"{value:.2f}s"


def _exit_text(r: HostResult) -> str:
    """`0`, `sig KILL`, or `-` when the server gave no exit status."""
    if r.signal:
        return f"sig {sanitize(r.signal, single_line=True)}"
    return "-" if r.exit_code is None else str(r.exit_code)


def _last_line(data: bytes) -> str:
    # Cut the last non-blank line out of the bytes first: sanitising a whole
    # capped stream for one table cell is wasted work. (A \n byte is never
    # inside a UTF-8 sequence, so the cut cannot split a character.)
    data = data.rstrip()
    return sanitize(data[data.rfind(b"\n") + 1 :].strip(), single_line=True)


def _excerpt(r: HostResult, width: int) -> str:
    """The table's output cell: the last stdout line, else stderr's, else the error."""
    text = _last_line(r.stdout)
    if not text and (text := _last_line(r.stderr)):
        text = f"stderr: {text}"
    if not text and r.error:
        text = sanitize(r.error, single_line=True)
    if not r.truncated:
        return _cut(text, width)
    return f"{_cut(text, width - len(_TRUNCATED) - 1)} {_TRUNCATED}".lstrip()


def _tabulate(rows: list[list[str]], headers: list[str]) -> str:
    # Imported here: tabulate imports importlib.metadata (~30 ms), which a run printing
    # JSON or lines never needs. disable_numparse: cells are shown as given
    # (left-aligned, never reformatted as numbers); trailing blanks of an empty last
    # cell are dropped.
    from tabulate import tabulate

    text = tabulate(rows, headers=headers, tablefmt=_TABLE_FORMAT, disable_numparse=True)
    return "\n".join(line.rstrip() for line in text.split("\n"))


def render_table(result: FleetResult, *, width: int = 60) -> str:
    """One row per host, in inventory order: host, status, exit, duration, output.

    The output cell is an excerpt (see `_excerpt`) cut to `width` characters
    with `…`; `[truncated]` marks a host whose captured output hit the cap.
    """
    rows = [[sanitize(r.host, single_line=True), str(r.status), _exit_text(r),
             _seconds(r.duration), _excerpt(r, width)] for r in result.values()]
    return _tabulate(rows, ["host", "status", "exit", "duration", "output"])


def _status_line(r: HostResult) -> str:
    parts = [str(r.status)]
    if r.signal:
        parts.append(f"signal {sanitize(r.signal, single_line=True)}")
    elif r.exit_code is not None:
        parts.append(f"exit {r.exit_code}")
    line = "status: " + ", ".join(parts)
    return f"{line}: {sanitize(r.error, single_line=True)}" if r.error else line


def _indented(data: bytes) -> list[str]:
    text = sanitize(data)  # the line breaks left are \n only: no lone CR, VT, FF, U+2028
    lines = text[:-1].split("\n") if text.endswith("\n") else text.split("\n")
    return [f"  {line}" if line else "" for line in lines]


def render_gathered(result: FleetResult) -> str:
    """Hosts with identical results folded into blocks, like `clubak` / `clush -b`.

    Each block: a header `---------------- web[01-03] (3) ----------------`,
    a `status:` line unless the hosts are ok, the full stdout, then stderr
    under a `[stderr]` marker; `[stdout truncated]` / `[stderr truncated]`
    say the output cap was hit. Largest group first. Every line of output is
    indented by two spaces (an empty one stays empty), so only fleetexec's own
    lines start at column 0: a host cannot print a header and forge a block.
    """
    lines: list[str] = []
    for names, r in result.gathered():
        hosts = sanitize(fold(names), single_line=True)
        lines.append(f"{'-' * 16} {hosts} ({len(names)}) {'-' * 16}")
        if not r.ok:
            lines.append(_status_line(r))
        if r.stdout:
            lines.extend(_indented(r.stdout))
        if r.stdout_truncated:
            lines.append("[stdout truncated]")
        if r.stderr:
            lines.append("[stderr]")
            lines.extend(_indented(r.stderr))
        if r.stderr_truncated:
            lines.append("[stderr truncated]")
    return "\n".join(lines)


def _diff_lines(r: HostResult) -> list[str]:
    """What `render_diff` compares: a block of the gathered view, plus a mark for a
    missing final newline (else `a` and `a\\n` would look the same)."""
    lines = [] if r.ok else [_status_line(r)]
    for name, data, truncated in (("stdout", r.stdout, r.stdout_truncated),
                                  ("stderr", r.stderr, r.stderr_truncated)):
        if data:
            if name == "stderr":
                lines.append("[stderr]")
            lines.extend(_indented(data))
            if not data.endswith(b"\n"):
                lines.append("[no newline at end]")
        if truncated:
            lines.append(f"[{name} truncated]")
    return lines


def render_diff(result: FleetResult) -> str:
    """The gathered view, then each other group's differences from the largest, like
    `clush --diff`.

    After `render_gathered(result)`, for each group but the first (largest;
    ties in inventory order) comes an empty line and a unified diff
    (`difflib`, 3 lines of context) of that group's block against the first
    one's, headed `--- <first group's hosts> (n)` and `+++ <this group's
    hosts> (n)`, folded. The blocks compared are those of the gathered view
    (status line, output indented by two spaces, `[stderr]`), plus
    `[no newline at end]` where an output does not end with one; so a diff
    line is `+`, `-` or a space followed by either two spaces and host output
    or one of fleetexec's own lines, and host output cannot forge a header.
    Groups whose blocks read the same (outputs that differ only in bytes
    the sanitiser shows alike) say so under their headers. With one group,
    this is the gathered view alone.
    """
    groups = result.gathered()
    lines = [render_gathered(result)]
    if len(groups) < 2:
        return lines[0]
    first_names, first = groups[0]
    first_label = f"{sanitize(fold(first_names), single_line=True)} ({len(first_names)})"
    first_lines = _diff_lines(first)
    for names, r in groups[1:]:
        label = f"{sanitize(fold(names), single_line=True)} ({len(names)})"
        diff = list(difflib.unified_diff(first_lines, _diff_lines(r), first_label, label,
                                         lineterm=""))
        lines.append("")
        lines.extend(diff or [f"--- {first_label}", f"+++ {label}",
                              "[the outputs differ only in bytes shown alike here]"])
    return "\n".join(lines)


def render_summary(result: FleetResult) -> str:
    """`12 hosts: 10 ok, 1 failed, 1 unreachable in 1.84s`, then one line per
    unsuccessful status naming its hosts folded (`failed: web[03-04]`)."""
    counts = result.counts()
    total = len(result)
    head = f"{total} host{'' if total == 1 else 's'}"
    if counts:
        head += ": " + ", ".join(f"{n} {status}" for status, n in counts.items())
    head += f" in {_seconds(result.wall_time)}"
    if result.interrupted:
        head += " (interrupted)"
    lines = [head]
    for status in counts:
        if status is not Status.OK:
            names = [name for name, r in result.items() if r.status is status]
            lines.append(f"{status}: {sanitize(fold(names), single_line=True)}")
    return "\n".join(lines)


def _optional(value: object, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return sanitize(text + unit, single_line=True)


def render_hosts(hosts: Sequence[Host]) -> str:
    """The `fleetexec hosts` table: one row per host with its effective settings.

    `-` marks an unset value (a `None` timeout means the run's default).
    """
    rows = [
        [
            sanitize(h.name, single_line=True),
            sanitize(h.address, single_line=True),
            _optional(h.port),
            _optional(h.user),
            sanitize(",".join(h.key_files), single_line=True) or "-",
            _optional(h.connect_timeout, "s"),
            _optional(h.command_timeout, "s"),
            _optional(h.known_hosts_file),
            sanitize(",".join(h.groups), single_line=True) or "-",
        ]
        for h in hosts
    ]
    headers = ["name", "address", "port", "user", "key files", "connect timeout",
               "command timeout", "known_hosts", "groups"]
    if any(h.via or h.proxy_command for h in hosts):  # the column only where it says something
        headers.append("via")
        for row, h in zip(rows, hosts, strict=True):
            via = ",".join(j.name for j in h.via) or (h.proxy_command and "ProxyCommand")
            row.append(sanitize(via, single_line=True) if via else "-")
    return _tabulate(rows, headers)



def render_progress_line(r: HostResult, *, host_width: int = 0) -> str:
    """One short line for a host that just finished, e.g. `web01  ok  exit 0  0.21s`.

    `host_width` pads the host name so that a stream of lines lines up; an
    error text is appended (cut to 80 characters), and `[truncated]` when the
    output hit the cap.
    """
    parts = [sanitize(r.host, single_line=True).ljust(host_width), str(r.status)]
    exit_text = _exit_text(r)
    if exit_text != "-":
        parts.append(exit_text if r.signal else f"exit {exit_text}")
    parts.append(_seconds(r.duration))
    if r.error:
        parts.append(_cut(sanitize(r.error, single_line=True), 80))
    if r.truncated:
        parts.append(_TRUNCATED)
    return "  ".join(parts)
