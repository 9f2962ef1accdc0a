"""The agent's wire format: newline-delimited JSON over the Unix socket, never pickle.

Hosts and results travel as JSON objects; output bytes as base64.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import socket
from pathlib import Path
from typing import Any

from ..exceptions import ConfigError
from ..host import Host
from ..results import HostResult, Status
from .paths import private_directory

__all__ = ["connect", "decode_host", "decode_result", "encode_host", "encode_result", "send"]


def encode_result(result: HostResult) -> dict[str, Any]:
    fields = dataclasses.asdict(result)
    fields["status"] = result.status.value
    fields["stdout"] = base64.b64encode(result.stdout).decode()
    fields["stderr"] = base64.b64encode(result.stderr).decode()
    return fields


def decode_result(fields: dict[str, Any]) -> HostResult:
    fields = dict(fields, status=Status(fields["status"]))
    fields["stdout"] = base64.b64decode(fields["stdout"])
    fields["stderr"] = base64.b64decode(fields["stderr"])
    return HostResult(**fields)


def encode_host(host: Host) -> dict[str, Any]:
    fields = dataclasses.asdict(host)
    fields["explicit"] = sorted(host.explicit)
    fields["via"] = [encode_host(bastion) for bastion in host.via]
    return fields


def decode_host(fields: object) -> Host:
    if not isinstance(fields, dict):
        raise ConfigError("a host must be a JSON object")
    lists = {k: tuple(v) for k, v in fields.items()
             if k in ("key_files", "groups", "user_known_hosts", "global_known_hosts")
             and isinstance(v, list)}
    via = fields.get("via", [])
    if not isinstance(via, list):
        raise ConfigError("a host's via must be a list of hosts")
    try:
        return Host(**dict(fields, **lists, explicit=frozenset(fields.get("explicit", ())),
                           via=tuple(decode_host(bastion) for bastion in via)))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"bad host: {error}") from None


def send(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def connect(path: Path) -> socket.socket:
    private_directory(path.parent)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        raise
    return conn

