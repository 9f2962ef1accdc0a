"""A fleet behind a long round trip: N hosts at RTT 150 ms, against N hosts at RTT 0.

    python bench/fleet_rtt.py                       # N=1000, RTT 150 ms, 1 repeat
    python bench/fleet_rtt.py --n 500 --rtt 0.1 --repeats 2 --peers fleetexec-cli,asyncssh

One sshd (`OpenSSHServer`, MaxStartups 4000:30:8000) and two `delayproxy.py`
processes in front of it, each listening on N loopback addresses: one adds
nothing, one adds `--rtt`. Every peer runs `true` on all N hosts through each
(bench.py's `measure`: wall, client process-tree CPU, sshd CPU), and on one
host through each, a few times, for its per-host round trips
R = (wall at RTT - wall at RTT 0) / RTT (as `rtt.py`, plus TCP).

The check (issue 10, target 2): wall(N, RTT) <= 1.2 x (R x RTT + wall(N, RTT 0)),
i.e. latency adds about one host's round trips to a run whose length is set by
CPU (here mostly the sshd's, on the same two cores). Peers: fleetexec-cli (its
defaults: up to 1024 sessions, 128 handshakes until the server's banner),
asyncssh (128 connections at once, as in bench.py) and
`xargs -P 128 ssh` (curve25519, BatchMode, strict host keys), as in bench.py.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import (
    CONCURRENCY,
    FLEETEXEC,
    PEERS_DIR,
    PR_SET_CHILD_SUBREAPER,
    SKIP_PIDS,
    SSH_WRAPPER,
    measure,
    parse_outcome,
)

from fleetexec.testing.sshd import OpenSSHServer, addresses

HERE = Path(__file__).resolve().parent
PEERS = ["fleetexec-cli", "asyncssh", "xargs-ssh"]


class Side:
    """One proxy (RTT 0 or RTT) and the files to reach N hosts through it."""

    def __init__(self, sshd: OpenSSHServer, rtt: float, n: int, base: str, workdir: Path
                 ) -> None:
        self.sshd, self.rtt, self.n = sshd, rtt, n
        self.addresses = addresses(n, base=base)
        self.dir = workdir / f"rtt-{rtt:g}"
        self.dir.mkdir()
        self.port = _free_port(self.addresses[0])
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "delayproxy.py"), "--rtt", str(rtt), "--listen",
             f"{self.addresses[0]}-{self.addresses[-1]}", "--port", str(self.port),
             "--upstream-port", str(sshd.port)], stdout=subprocess.PIPE)
        assert self.proc.stdout is not None  # noqa: S101
        if self.proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("delay proxy did not start")
        SKIP_PIDS.add(self.proc.pid)
        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts.write_text("".join(f"[{a}]:{self.port} {sshd.host_public_key}\n"
                                            for a in self.addresses))
        for count in (1, n):
            self.hosts(count).write_text("\n".join(self.addresses[:count]) + "\n")
            lines = ["defaults:", f"  user: {json.dumps(sshd.user)}", f"  port: {self.port}",
                     f"  key_files: [{json.dumps(str(sshd.client_key_path))}]",
                     f"  known_hosts_file: {json.dumps(str(self.known_hosts))}", "hosts:"]
            lines += [f"  h{i}: {{ address: {json.dumps(a)} }}"
                      for i, a in enumerate(self.addresses[:count], 1)]
            self.inventory(count).write_text("\n".join(lines) + "\n")

    def hosts(self, n: int) -> Path:
        return self.dir / f"hosts-{n}.txt"

    def inventory(self, n: int) -> Path:
        return self.dir / f"inventory-{n}.yaml"

    def argv(self, peer: str, n: int) -> list[str]:
        sshd = self.sshd
        if peer == "fleetexec-cli":
            return [FLEETEXEC, "run", "-i", str(self.inventory(n)), "--no-system-known-hosts",
                    "--no-ssh-config", "--no-agent", "-o", "json", "-t", "120",
                    "--connect-timeout", "60", "--", "true"]
        if peer == "xargs-ssh":
            options = ["-o", "KexAlgorithms=curve25519-sha256", "-o", "BatchMode=yes",
                       "-o", "StrictHostKeyChecking=yes",
                       "-o", f"UserKnownHostsFile={self.known_hosts}",
                       "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=60",
                       "-i", str(sshd.client_key_path), "-F", "/dev/null",
                       "-p", str(self.port), "-l", sshd.user]
            return ["xargs", "-P", str(CONCURRENCY), "-a", str(self.hosts(n)), "-I", "{}",
                    "sh", "-c", SSH_WRAPPER, "sh", "{}", "true", *options]
        return [sys.executable, str(PEERS_DIR / "peer_asyncssh.py"), "--hosts", str(self.hosts(n)),
                "--port", str(self.port), "--user", sshd.user, "--key", str(sshd.client_key_path),
                "--known-hosts", str(self.known_hosts), "--concurrency", str(CONCURRENCY),
                "--command", "true"]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _free_port(address: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


def run(args: argparse.Namespace) -> dict[str, Any]:
    records: list[dict[str, Any]] = []
    loads: list[float] = []
    with OpenSSHServer(max_startups="4000:30:8000") as sshd, \
            tempfile.TemporaryDirectory(prefix="fleetexec-fleet-rtt-") as tmp:
        assert sshd.pid is not None  # noqa: S101
        SKIP_PIDS.add(sshd.pid)
        sides = {0.0: Side(sshd, 0.0, args.n, "127.0.60.1", Path(tmp)),
                 args.rtt: Side(sshd, args.rtt, args.n, "127.0.80.1", Path(tmp))}
        try:
            plan = [(n, rep) for n in (1, args.n)
                    for rep in range(args.single_repeats if n == 1 else args.repeats)]
            for peer in args.peers:  # warm-up, not kept
                measure(sides[0.0].argv(peer, 1), sshd.pid, sides[0.0].dir)
            for n, rep in plan:
                order = args.peers[rep % len(args.peers):] + args.peers[:rep % len(args.peers)]
                for peer in order:
                    for rtt, side in sides.items():
                        record = measure(side.argv(peer, n), sshd.pid, side.dir)
                        ok, errors = parse_outcome(peer, side.dir, n)
                        record.update(peer=peer, n=n, rtt=rtt, ok=ok,
                                      errors=dict(errors.most_common(5)))
                        records.append(record)
                        loads.append(os.getloadavg()[0])
                        print(f"{peer} N={n} RTT {rtt * 1000:g} ms: {record['wall']:.2f} s, "
                              f"cpu {record['cpu']:.2f} s, ok {ok}/{n}, load {loads[-1]:.1f}",
                              file=sys.stderr, flush=True)
        finally:
            for side in sides.values():
                side.close()
    return {"records": records, "loads": loads}


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    records, loads = result["records"], result["loads"]

    def wall(peer: str, n: int, rtt: float) -> float:
        return statistics.median(r["wall"] for r in records
                                 if (r["peer"], r["n"], r["rtt"]) == (peer, n, rtt))

    def field(peer: str, n: int, rtt: float, name: str) -> float:
        return statistics.median(r[name] for r in records
                                 if (r["peer"], r["n"], r["rtt"]) == (peer, n, rtt))

    ms = args.rtt * 1000
    lines = [f"| peer | R: round trips per host (+TCP) | N={args.n} wall at RTT 0 s | "
             f"N={args.n} wall at RTT {ms:g} ms s | client CPU s (0 / {ms:g}) | "
             f"bound 1.2 x (R x RTT + wall at 0) s | within | hosts ok |",
             "|---|---|---|---|---|---|---|---|"]
    for peer in args.peers:
        trips = (wall(peer, 1, args.rtt) - wall(peer, 1, 0.0)) / args.rtt
        zero, slow = wall(peer, args.n, 0.0), wall(peer, args.n, args.rtt)
        bound = 1.2 * (trips * args.rtt + zero)
        ok = min(r["ok"] for r in records if r["peer"] == peer and r["n"] == args.n)
        lines.append(
            f"| {peer} | {trips:.2f} | {zero:.2f} | {slow:.2f} | "
            f"{field(peer, args.n, 0.0, 'cpu'):.2f} / {field(peer, args.n, args.rtt, 'cpu'):.2f}"
            f" | {bound:.2f} | {'yes' if slow <= bound else f'no ({slow / bound:.2f}x)'} | "
            f"{ok}/{args.n} |")
    fleet = {p: wall(p, args.n, args.rtt) for p in args.peers}
    ratios = ", ".join(f"{p} {fleet['fleetexec-cli'] / w:.2f}" for p, w in fleet.items()
                       if p != "fleetexec-cli") if "fleetexec-cli" in fleet else ""
    described = subprocess.run(["git", "-C", str(HERE), "describe", "--always", "--dirty"],
                               capture_output=True, text=True, check=False).stdout.strip()
    return (f"<!-- python bench/fleet_rtt.py --n {args.n} --rtt {args.rtt} --repeats "
            f"{args.repeats}; {datetime.date.today()}, fleetexec {described}, load average "
            f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores -->\n"
            f"## `true` on N={args.n} hosts at RTT {ms:g} ms vs RTT 0 (one sshd, through "
            f"delayproxy.py), median of {args.repeats}; R from N=1, median of "
            f"{args.single_repeats}\n\n" + "\n".join(lines)
            + (f"\n\nfleetexec-cli wall at RTT {ms:g} ms ÷ peer: {ratios}\n" if ratios else "\n"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rtt", type=float, default=0.15)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--single-repeats", type=int, default=3)
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--save", action="store_true", help="append to results/DATE-rtt.md")
    args = parser.parse_args()
    args.peers = args.peers.split(",")
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    text = report(run(args), args)
    print(text)
    if args.save:
        out = HERE / "results" / f"{datetime.date.today()}-rtt.md"
        with out.open("a") as f:
            f.write("\n" + text)
        print(f"appended to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
