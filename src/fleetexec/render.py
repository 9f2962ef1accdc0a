"""Pure functions from results to text, and the one terminal sanitiser.

Nothing here does I/O or knows about click; every function returns a string
without a trailing newline. This is the only module that imports tabulate.

Everything meant for a terminal (output, host names, error texts, signal
names) passes through `sanitize`: remote output can otherwise set the window
title, write the clipboard (OSC 52), forge earlier lines or make the terminal
type an answer (`CSI 6 n`). Control and format characters become visible
escapes (`\\x1b`, `\\u202e`), invalid UTF-8 bytes become `\\xNN`. Backslashes
are not doubled, so literal `\\x1b` text in the output looks the same as an
escaped ESC: harmless (both are inert), and paths stay readable.

JSON (`render_json`, `render_jsonl_line`) is machine output and is *not*
sanitised: strings hold the real text. It is written with `ensure_ascii=True`,
so the document is printable ASCII (ESC appears as `\\u001b`, U+202E as
`\\u202e`) and safe to print to a terminal anyway. Schema of one host::

    {"host": str, "status": str (a Status value), "exit_code": int | null,
     "signal": str | null, "stdout": str, "stderr": str,
     "stdout_b64": str | null, "stderr_b64": str | null,
     "stdout_truncated": bool, "stderr_truncated": bool, "truncated": bool,
     "started": float (epoch seconds), "duration": float (seconds),
     "error": str | null}

`stdout`/`stderr` are the bytes decoded as UTF-8 with U+FFFD for invalid
bytes; `*_b64` is null when the bytes are valid UTF-8 (the text is then exact),
otherwise the base64 of the raw bytes, so the exact bytes are always
recoverable. `render_json` wraps the hosts (inventory order) as
`{"hosts": [...], "summary": {"total": int, "counts": {status: int},
"wall_time": float, "exit_code": int, "interrupted": bool}}`; `counts` is in
`Status` order and leaves out zero counts.
"""

from __future__ import annotations

import base64
import difflib
import functools
import json
import re
import unicodedata
import zlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from tabulate import tabulate

from .host import Host
from .hostrange import fold
from .results import FleetResult, HostResult, Status

if TYPE_CHECKING:
    from .options import Options
    from .resolve import Resolved

__all__ = [
    "LiveLines", "iter_json", "render_diff", "render_gathered", "render_hosts", "render_json",
    "render_jsonl_line", "render_progress_line", "render_summary", "render_table",
    "result_to_dict", "sanitize",
]

# Controls, format/bidi characters, surrogates and the line/paragraph separators.
# Private-use (Co) and unassigned (Cn) code points are left alone: terminals
# do not act on them, and escaping Cn would mangle text newer than our Unicode.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Every code point in those categories lies in planes 0, 1 and 14; scanning only
# these keeps the one-off table build at ~10 ms (a test checks the full range).
_SCAN_RANGES = (range(0x20000), range(0xE0000, 0xE1000))
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
_TABLE_FORMAT = "simple"
_ELLIPSIS = "…"
_TRUNCATED = "[truncated]"


def _escape(cp: int) -> str:
    if 0xDC80 <= cp <= 0xDCFF:  # a byte smuggled in by surrogateescape: show the byte
        return f"\\x{cp - 0xDC00:02x}"
    if cp < 0x100:
        return f"\\x{cp:02x}"
    return f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}"


@functools.cache
def _table(single_line: bool) -> dict[int, str]:
    # Built on first use, not at import, so `fleetexec --help` pays nothing.
    table = {cp: _escape(cp) for span in _SCAN_RANGES for cp in span
             if unicodedata.category(chr(cp)) in _UNSAFE_CATEGORIES}
    table.update({ord(ch): esc for ch, esc in _NAMED.items()})
    if not single_line:
        del table[ord("\n")], table[ord("\t")]
    return table


def sanitize(text: str | bytes, *, single_line: bool = False) -> str:
    """Make `text` safe to print on a terminal, keeping it readable.

    Bytes are decoded as UTF-8 with invalid bytes shown as `\\xNN`. Every
    C0 control but newline and tab, DEL, C1 (U+0080-U+009F, including the
    8-bit CSI U+009B), ESC, format/bidi characters (category Cf, e.g. U+202E,
    U+200B), surrogates and U+2028/U+2029 become visible escapes; a lone `\\r`
    is shown as `\\r` (it would let a line overwrite itself) but CRLF is
    read as a plain line end. With `single_line=True`, newline, tab and CRLF
    are escaped too: for table cells, host names and error texts.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "backslashreplace")
    if not single_line:
        # CR right before LF cannot hide anything; showing it on every line of
        # a Windows-style output would only add noise.
        text = text.replace("\r\n", "\n")
    # str.translate with a cached dict: ~30 ms per MiB even when every
    # character needs escaping (a regex with a callback is ~4x slower).
    return text.translate(_table(single_line))


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
    # disable_numparse: cells are shown as given (left-aligned, never reformatted
    # as numbers); trailing blanks of an empty last cell are dropped.
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


_SURROGATE = re.compile("[\ud800-\udfff]")


def _json_text(text: str | None) -> str | None:
    # A lone surrogate (e.g. from surrogateescape) would make strict JSON readers fail.
    return None if text is None else _SURROGATE.sub("\ufffd", text)


def _b64_unless_utf8(data: bytes) -> str | None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii")
    return None


def result_to_dict(r: HostResult) -> dict[str, Any]:
    """One host as a JSON-ready dict (schema in the module docstring). Not sanitised."""
    return {
        "host": _json_text(r.host),
        "status": str(r.status),
        "exit_code": r.exit_code,
        "signal": _json_text(r.signal),
        "stdout": r.stdout_text,
        "stderr": r.stderr_text,
        "stdout_b64": _b64_unless_utf8(r.stdout),
        "stderr_b64": _b64_unless_utf8(r.stderr),
        "stdout_truncated": r.stdout_truncated,
        "stderr_truncated": r.stderr_truncated,
        "truncated": r.truncated,
        "started": round(r.started, 6),
        "duration": round(r.duration, 6),
        "error": _json_text(r.error),
    }


def render_json(result: FleetResult) -> str:
    """The whole run as one JSON document (indented, printable ASCII, not sanitised)."""
    return "".join(iter_json(result))


def iter_json(result: FleetResult) -> Iterator[str]:
    """`render_json`'s text in pieces, one host at a time.

    The same bytes as `json.dumps(document, indent=2)`, but a 1000-host run
    with 1 MiB per host never holds the whole document in memory. Indenting
    by line is safe: JSON text has newlines only between tokens.
    """
    yield '{\n  "hosts": ['
    separator = "\n"
    for r in result.values():
        text = json.dumps(result_to_dict(r), indent=2, ensure_ascii=True)
        yield separator + "    " + text.replace("\n", "\n    ")
        separator = ",\n"
    summary = {
        "total": len(result),
        "counts": {str(status): n for status, n in result.counts().items()},
        "wall_time": round(result.wall_time, 6),
        "exit_code": result.exit_code,
        "interrupted": result.interrupted,
    }
    closing = "]" if separator == "\n" else "\n  ]"
    yield closing + ',\n  "summary": ' + json.dumps(summary, indent=2).replace("\n", "\n  ") + "\n}"


def render_jsonl_line(r: HostResult) -> str:
    """One host as one compact JSON line (printable ASCII, no newline inside)."""
    return json.dumps(result_to_dict(r), ensure_ascii=True, separators=(",", ":"))


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
    return _tabulate(rows, headers)


def render_hosts_json(explained: Sequence[Resolved], options: Options) -> str:
    """`fleetexec hosts -o json`: each host's effective settings, and where each came from.

    `sources` maps a setting to target, flag, inventory, ssh-config or default;
    `ssh_config` gives the file and line of each ssh-config value. Derived
    values (the known_hosts files read, the file accept-new records into, the
    agent socket and the default identity files offered) follow from those.
    """
    import os

    from .resolve import accept_new_file, default_identity_files, known_hosts_files

    hosts = []
    for item in explained:
        h = item.host
        agent = h.identity_agent or "none"
        socket = (os.environ.get(agent.removeprefix("$"))
                  if agent == "SSH_AUTH_SOCK" or agent.startswith("$") else None
                  if agent == "none" else agent)
        hosts.append({
            "name": h.name, "address": h.address, "port": h.port, "user": h.user,
            "key_files": list(h.key_files),
            "default_identity_files": list(default_identity_files()) if h.default_keys else [],
            "identities_only": h.identities_only, "identity_agent": agent,
            "agent_socket": None if h.identities_only else socket or None,
            "connect_timeout": h.connect_timeout, "command_timeout": h.command_timeout,
            "host_key_policy": h.host_key_policy, "host_key_alias": h.host_key_alias,
            "known_hosts_name": h.known_hosts_name,
            "user_known_hosts": list(h.user_known_hosts or ()),
            "global_known_hosts": list(h.global_known_hosts or ()),
            "known_hosts": list(options.known_hosts), "known_hosts_file": h.known_hosts_file,
            "known_hosts_files": list(known_hosts_files(h, options)),
            "accept_new_file": accept_new_file(h, options)
            if h.host_key_policy == "accept-new" else None,
            "address_family": h.address_family,
            "server_alive_interval": h.server_alive_interval,
            "server_alive_count_max": h.server_alive_count_max,
            "groups": list(h.groups),
            "sources": {**dict(item.sources),
                        "known_hosts": "flag" if options.known_hosts else "default"},
            "ssh_config": dict(item.ssh_config),
        })
    return json.dumps({"hosts": hosts}, indent=2)


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


_PALETTE = (32, 33, 34, 35, 36, 92, 93, 94, 95, 96)  # ANSI colours for host names


class LiveLines:
    """Output chunks as they arrive → whole `host: line` lines, sanitised, one host per line.

    A partial line waits for its end (or for `flush` when the host finishes),
    so two hosts never share a line. stderr lines read `host [err]: …`.
    `colour` paints host names (our own escapes; remote text never gets one).
    """

    def __init__(self, width: int = 0, colour: bool = False) -> None:
        self.width, self.colour = width, colour
        self._partial: dict[tuple[str, str], bytes] = {}

    def feed(self, host: str, stream: str, data: bytes) -> list[str]:
        """The lines `data` completes for `host`'s `stream`."""
        pending = self._partial.pop((host, stream), b"") + data
        *whole, rest = pending.split(b"\n")
        if rest:
            self._partial[(host, stream)] = rest
        return [self._line(host, stream, line) for line in whole]

    def flush(self, host: str) -> list[str]:
        """`host`'s unfinished last lines, now that it has finished."""
        return [self._line(host, stream, self._partial.pop((host, stream)))
                for stream in ("stdout", "stderr") if (host, stream) in self._partial]

    def _line(self, host: str, stream: str, data: bytes) -> str:
        name = sanitize(host, single_line=True)
        label = name.ljust(self.width) if stream == "stdout" else f"{name} [err]"
        if self.colour:
            label = f"\x1b[{_PALETTE[zlib.crc32(host.encode()) % len(_PALETTE)]}m{label}\x1b[0m"
        text = sanitize(data.removesuffix(b"\r"), single_line=True)  # CRLF output
        return f"{label}: {text}"
