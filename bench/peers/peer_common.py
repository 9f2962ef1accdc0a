"""Shared command line and result line of the Python peer runners.

Every peer is started by ``bench/bench.py`` as its own process, so its whole
process tree can be measured; the driver passes the same arguments to each and
reads one JSON line from stdout: ``{"ok": int, "total": int, "errors": {text:
count}, "bytes": int}``. Peers read the command's output and count it, but do
not keep it: at N=1000 x 10 MiB keeping it would measure memory, not SSH.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path


def parse_args(description: str) -> argparse.Namespace:
    """The arguments every peer takes (all paths absolute, written by the driver)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--hosts", required=True, help="file with one loopback address a line")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--key", required=True, help="ed25519 private key (OpenSSH format)")
    parser.add_argument("--known-hosts", required=True, help="the only known_hosts to trust")
    parser.add_argument("--inventory", help="fleetexec YAML inventory (fleetexec peers only)")
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--command", required=True)
    parser.add_argument("--cipher", help="the one cipher to offer (asyncssh only)")
    return parser.parse_args()


def read_hosts(path: str) -> list[str]:
    """The addresses in `path`, in order."""
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def known_hosts_name(address: str, port: int) -> str:
    """How OpenSSH (and paramiko) name a host on a non-standard port in known_hosts."""
    return address if port == 22 else f"[{address}]:{port}"


def one_line(error: object) -> str:
    """A short, single-line description of an exception, for grouping failures."""
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
    return " ".join(text.split())[:200]


def report(ok: int, total: int, errors: Counter[str], nbytes: int = 0) -> None:
    """Print the one result line the driver parses, and flush it."""
    json.dump({"ok": ok, "total": total, "errors": dict(errors), "bytes": nbytes}, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
