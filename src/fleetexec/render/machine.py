"""Results as machine output: JSON and JSON Lines, and `fleetexec hosts -o json`.

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
import json
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..results import FleetResult, HostResult

if TYPE_CHECKING:
    from ..options import Options
    from ..resolve import Resolved

__all__ = ["iter_json", "render_hosts_json", "render_json", "render_jsonl_line", "result_to_dict"]

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


def result_to_dict(r: HostResult, *, outputs: bool = True) -> dict[str, Any]:
    """One host as a JSON-ready dict (schema in the module docstring). Not sanitised.

    `outputs=False`: stdout, stderr and their `_b64` are None (filled in later).
    """
    return {
        "host": _json_text(r.host),
        "status": str(r.status),
        "exit_code": r.exit_code,
        "signal": _json_text(r.signal),
        "stdout": r.stdout_text if outputs else None,
        "stderr": r.stderr_text if outputs else None,
        "stdout_b64": _b64_unless_utf8(r.stdout) if outputs else None,
        "stderr_b64": _b64_unless_utf8(r.stderr) if outputs else None,
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
    by line is safe: JSON text has newlines only between tokens. An output
    that several hosts share (the `Collector` keeps one copy of each) is
    encoded once.
    """
    yield '{\n  "hosts": ['
    separator = "\n"
    encoded: dict[int, tuple[str, str]] = {}  # id(output bytes) -> its JSON text, b64 JSON
    for r in result.values():
        yield separator + "    " + _host_json(r, encoded)
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


_LARGE = 4096  # outputs at least this long are encoded once per distinct bytes object


def _host_json(r: HostResult, encoded: dict[int, tuple[str, str]]) -> str:
    """One host's `result_to_dict` as indented JSON, nested one level (as `iter_json` puts it).

    Large outputs are left out of the dict and put into the text afterwards: the
    placeholder lines are unique, since every string before them is escaped
    (no raw newline in it).
    """
    large = len(r.stdout) >= _LARGE or len(r.stderr) >= _LARGE
    text = json.dumps(result_to_dict(r, outputs=not large), indent=2,
                      ensure_ascii=True).replace("\n", "\n    ")
    if not large:
        return text
    for stream, data in (("stdout", r.stdout), ("stderr", r.stderr)):
        found = encoded.get(id(data))
        if found is None:
            found = encoded[id(data)] = (json.dumps(data.decode("utf-8", "replace"),
                                                    ensure_ascii=True),
                                         json.dumps(_b64_unless_utf8(data)))
        text = text.replace(f'\n      "{stream}": null,', f'\n      "{stream}": {found[0]},', 1)
        text = text.replace(f'\n      "{stream}_b64": null,',
                            f'\n      "{stream}_b64": {found[1]},', 1)
    return text


def render_jsonl_line(r: HostResult) -> str:
    """One host as one compact JSON line (printable ASCII, no newline inside)."""
    return json.dumps(result_to_dict(r), ensure_ascii=True, separators=(",", ":"))


def render_hosts_json(explained: Sequence[Resolved], options: Options) -> str:
    """`fleetexec hosts -o json`: each host's effective settings, and where each came from.

    `sources` maps a setting to target, flag, inventory, ssh-config or default;
    `ssh_config` gives the file and line of each ssh-config value. Derived
    values (the known_hosts files read, the file accept-new records into, the
    agent socket and the default identity files offered) follow from those.
    `jump_chain` lists the bastions, first hop first, each as resolved for itself.
    """
    import os

    from ..resolve import accept_new_file, default_identity_files, known_hosts_files

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
            "proxy_jump": h.proxy_jump, "proxy_command": h.proxy_command,
            "jump_chain": [{"name": j.name, "address": j.address, "port": j.port, "user": j.user,
                            "key_files": list(j.key_files),
                            "known_hosts_name": j.known_hosts_name,
                            "known_hosts_files": list(known_hosts_files(j, options)),
                            "proxy_command": j.proxy_command} for j in h.via],
            "groups": list(h.groups),
            "sources": {**dict(item.sources),
                        "known_hosts": "flag" if options.known_hosts else "default"},
            "ssh_config": dict(item.ssh_config),
        })
    return json.dumps({"hosts": hosts}, indent=2)
