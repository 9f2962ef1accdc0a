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
