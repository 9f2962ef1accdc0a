"""Round trips per command: how long each client waits on the network for one host.

    python bench/rtt.py                          # RTT 50 ms, 5 repeats, every peer
    python bench/rtt.py --repeats 3 --peers fleetexec-api,paramiko --save   # appends the table
    python bench/rtt.py --baseline-src /tmp/fleetexec-base/src   # also an older fleetexec

One real sshd (`fleetexec.testing.sshd.OpenSSHServer`) on loopback; two
`delayproxy.py` processes in front of it, one adding nothing (RTT 0) and one
adding `--rtt` (RTT/2 each way). Each peer connects to one host through a proxy,
runs `true`, and we time it; effective round trips =
(median wall at RTT − median wall at RTT 0) / RTT, so the client's own CPU,
interpreter start and the sshd's work cancel out. The TCP handshake is not
delayed by a userspace proxy, so the figure is round trips *plus TCP*.

Two cases: the accepted key only, and a rejected key offered first (then the
accepted one). Peers, every one checking the host key strictly:

- fleetexec-api: `fleetexec.run([Host], "true")` in a fresh process, timed around
  the call (it starts its worker process inside the call);
- fleetexec-cli: `fleetexec run -i INV -- true`, the whole process timed;
- fleetexec-inproc: the same with `backend=InProcessBackend()`: no worker process, so
  the least noise around the handshake;
- fleetexec-base, fleetexec-base-inproc: the same two with another source tree
  (`--baseline-src`, e.g. the commit before this work);
- paramiko: `SSHClient.connect(sock=<TCP_NODELAY socket>)` + `exec_command`, timed;
- asyncssh: `asyncssh.connect` + `conn.run("true")`, timed;
- ssh: OpenSSH `ssh -o BatchMode=yes -o StrictHostKeyChecking=yes ...`, the whole
  process timed (KexAlgorithms curve25519-sha256: its default sntrup761 only
  costs CPU, which cancels anyway).

Runs alternate between RTT 0 and RTT, and peers rotate, so a load change hits
both sides alike; the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = ["fleetexec-api", "fleetexec-inproc", "fleetexec-cli", "paramiko", "asyncssh", "ssh"]
CASES = ["one accepted key", "rejected key first"]


# ---- children: one timed connection each -------------------------------------------------

def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("peer")
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--keys", required=True)
    parser.add_argument("--known-hosts", required=True)
    args = parser.parse_args(argv)
    keys = args.keys.split(",")
    if args.peer.startswith("fleetexec-"):
        import fleetexec
        from fleetexec.backends.inprocess import InProcessBackend

        host = fleetexec.Host("h", address=args.address, port=args.port, user=args.user,
                              key_files=tuple(keys))
        backend = InProcessBackend() if args.peer.endswith("-inproc") else None
        t0 = time.perf_counter()
        result = fleetexec.run([host], "true", known_hosts=[args.known_hosts], backend=backend,
                               system_known_hosts=False, use_agent=False, connect_timeout=30)
        elapsed = time.perf_counter() - t0
        ok = result["h"].ok
        error = result["h"].error
    elif args.peer == "paramiko":
        import socket

        import paramiko

        t0 = time.perf_counter()
        sock = socket.create_connection((args.address, args.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = paramiko.SSHClient()
        client.load_host_keys(args.known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(args.address, args.port, username=args.user, key_filename=keys,
                       sock=sock, look_for_keys=False, allow_agent=False, timeout=30)
        _, stdout, _ = client.exec_command("true")
        status = stdout.channel.recv_exit_status()
        elapsed = time.perf_counter() - t0
        client.close()
        ok, error = status == 0, f"exit {status}"
    elif args.peer == "asyncssh":
        import asyncio

        import asyncssh

        async def one() -> tuple[bool, str]:
            options = asyncssh.SSHClientConnectionOptions(
                username=args.user, known_hosts=asyncssh.read_known_hosts(args.known_hosts),
                client_keys=[asyncssh.read_private_key(k) for k in keys], agent_path=None,
                config=[], connect_timeout=30)
            async with asyncssh.connect(args.address, args.port, options=options) as conn:
                done = await conn.run("true")
            return done.exit_status == 0, f"exit {done.exit_status}"

        t0 = time.perf_counter()
        ok, error = asyncio.run(one())
        elapsed = time.perf_counter() - t0
    else:
        raise SystemExit(f"unknown peer {args.peer}")
    print(json.dumps({"elapsed": elapsed, "ok": ok, "error": error}))


# ---- the driver ------------------------------------------------------------------------

class Bench:
    def __init__(self, rtt: float, baseline_src: str | None) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from fleetexec.testing.sshd import OpenSSHServer

        self.rtt = rtt
        self.baseline_src = baseline_src
        self.sshd = OpenSSHServer().__enter__()
        self.dir = Path(tempfile.mkdtemp(prefix="fleetexec-rtt-"))
        wrong = self.dir / "id_wrong"
        fd = os.open(wrong, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption()))
        self.good, self.wrong = str(self.sshd.client_key_path), str(wrong)
        # Two proxies, 16 addresses each: a fresh address per run (no connection reuse).
        self.proxies: dict[float, tuple[subprocess.Popen[bytes], int, list[str]]] = {}
        self.known_hosts = self.dir / "known_hosts"
        lines = []
        for index, delay in enumerate((0.0, rtt)):
            addresses = [f"127.0.{40 + index}.{i}" for i in range(1, 17)]
            port = _free_port(addresses[0])
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "delayproxy.py"), "--rtt", str(delay),
                 "--listen", f"{addresses[0]}-{addresses[-1]}", "--port", str(port),
                 "--upstream-port", str(self.sshd.port)], stdout=subprocess.PIPE)
            assert proc.stdout is not None  # noqa: S101
            if proc.stdout.readline().strip() != b"ready":
                raise RuntimeError("delay proxy did not start")
            self.proxies[delay] = (proc, port, addresses)
            lines += [f"[{a}]:{port} {self.sshd.host_public_key}\n" for a in addresses]
        self.known_hosts.write_text("".join(lines))
        self.turn = 0

    def close(self) -> None:
        for proc, _, _ in self.proxies.values():
            proc.terminate()
            proc.wait(5)
        self.sshd.__exit__(None, None, None)

    def _target(self, delay: float) -> tuple[str, int]:
        _, port, addresses = self.proxies[delay]
        self.turn += 1
        return addresses[self.turn % len(addresses)], port

    def once(self, peer: str, delay: float, keys: list[str]) -> float:
        """Seconds for one `true` through the proxy of `delay`."""
        address, port = self._target(delay)
        env = dict(os.environ)
        if peer.startswith("fleetexec-base"):
            env["PYTHONPATH"] = self.baseline_src or ""
        if peer != "fleetexec-cli" and peer.startswith("fleetexec-") or peer in (
                "paramiko", "asyncssh"):
            done = subprocess.run(
                [sys.executable, __file__, "--child", peer, "--address", address, "--port",
                 str(port), "--user", self.sshd.user, "--keys", ",".join(keys),
                 "--known-hosts", str(self.known_hosts)],
                capture_output=True, text=True, env=env, timeout=120, check=False)
            try:
                record = json.loads(done.stdout.strip().splitlines()[-1])
            except (IndexError, json.JSONDecodeError):
                raise RuntimeError(f"{peer}: {done.stdout}{done.stderr}") from None
            if not record["ok"]:
                raise RuntimeError(f"{peer} failed: {record['error']}")
            return float(record["elapsed"])
        if peer == "fleetexec-cli":
            inventory = self.dir / f"inv-{address}-{port}.yaml"
            inventory.write_text(
                f"defaults:\n  user: {json.dumps(self.sshd.user)}\n  port: {port}\n"
                f"  key_files: {json.dumps(keys)}\n"
                f"  known_hosts_file: {json.dumps(str(self.known_hosts))}\n"
                f"hosts:\n  h: {{ address: {json.dumps(address)} }}\n")
            argv = [sys.executable, "-m", "fleetexec", "run", "-i", str(inventory),
                    "--no-system-known-hosts", "--no-agent", "--no-ssh-config", "-o", "json",
                    "--connect-timeout", "30", "--", "true"]
        else:
            argv = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes",
                    "-o", "StrictHostKeyChecking=yes",
                    "-o", f"UserKnownHostsFile={self.known_hosts}",
                    "-o", "GlobalKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
                    "-o", "KexAlgorithms=curve25519-sha256", "-o", "ConnectTimeout=30",
                    *[x for k in keys for x in ("-i", k)], "-p", str(port),
                    "-l", self.sshd.user, address, "true"]
        t0 = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, env=env, timeout=120, check=False)
        elapsed = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"{peer} failed ({done.returncode}): {done.stderr[-500:]!r}")
        return elapsed


def _free_port(address: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


def measure(bench: Bench, peers: list[str], repeats: int) -> dict[tuple[str, str], dict]:
    """{(case, peer): {"0": [walls], "rtt": [walls]}}, runs interleaved."""
    cases = {CASES[0]: [bench.good], CASES[1]: [bench.wrong, bench.good]}
    walls: dict[tuple[str, str], dict[str, list[float]]] = {
        (c, p): {"0": [], "rtt": []} for c in cases for p in peers}
    loads = []
    for rep in range(repeats + 1):  # round 0 warms caches up and is not kept
        order = peers[rep % len(peers):] + peers[:rep % len(peers)]
        for case, keys in cases.items():
            for peer in order:
                for label, delay in (("0", 0.0), ("rtt", bench.rtt)):
                    wall = bench.once(peer, delay, keys)
                    if rep:
                        walls[(case, peer)][label].append(wall)
        loads.append(os.getloadavg()[0])
        print(f"repeat {rep}/{repeats} done, load {loads[-1]:.2f}", file=sys.stderr)
    return {"walls": walls, "loads": loads}  # type: ignore[return-value]


def table(results: dict, rtt: float, peers: list[str]) -> str:
    walls = results["walls"]
    ms = 1000
    lines = [f"| peer | case | wall at RTT 0, ms | wall at RTT {rtt * ms:g} ms, ms | round trips "
             "(+TCP), medians | same, minima | fleetexec ÷ peer |", "|---|---|---|---|---|---|---|"]
    trips: dict[tuple[str, str], float] = {}
    floor: dict[tuple[str, str], float] = {}
    for case in CASES:
        for peer in peers:
            w = walls[(case, peer)]
            trips[(case, peer)] = (statistics.median(w["rtt"]) - statistics.median(w["0"])) / rtt
            floor[(case, peer)] = (min(w["rtt"]) - min(w["0"])) / rtt
    reference = next((p for p in ("fleetexec-inproc", "fleetexec-api") if p in peers), None)
    for case in CASES:
        for peer in peers:
            w = walls[(case, peer)]
            ratio = f"{trips[(case, reference)] / trips[(case, peer)]:.2f}" if reference else ""
            lines.append(
                f"| {peer} | {case} | {statistics.median(w['0']) * ms:.0f} "
                f"[{min(w['0']) * ms:.0f}-{max(w['0']) * ms:.0f}] | "
                f"{statistics.median(w['rtt']) * ms:.0f} "
                f"[{min(w['rtt']) * ms:.0f}-{max(w['rtt']) * ms:.0f}] | "
                f"**{trips[(case, peer)]:.2f}** | {floor[(case, peer)]:.2f} | {ratio} |")
    note = (f"\nRatio: {reference}'s round trips ÷ the peer's (below 1: fewer waits). Cells: "
            "median [min-max]." if reference else "")
    return "\n".join(lines) + note


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rtt", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--baseline-src", help="another fleetexec source tree: fleetexec-base")
    parser.add_argument("--save", action="store_true", help="append to results/DATE-rtt.md")
    args = parser.parse_args()
    peers = args.peers.split(",")
    if args.baseline_src and not any(p.startswith("fleetexec-base") for p in peers):
        peers += ["fleetexec-base", "fleetexec-base-inproc"]
    bench = Bench(args.rtt, args.baseline_src)
    try:
        results = measure(bench, peers, args.repeats)
    finally:
        bench.close()
    loads = results["loads"]
    described = subprocess.run(["git", "-C", str(HERE), "describe", "--always", "--dirty"],
                               capture_output=True, text=True, check=False).stdout.strip()
    report = (f"<!-- python bench/rtt.py --rtt {args.rtt} --repeats {args.repeats} "
              f"--peers {args.peers}; {datetime.date.today()}, fleetexec {described}, "
              f"load average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores -->\n"
              f"## One host, `true`, median of {args.repeats}: effective round trips = "
              f"(wall at RTT {args.rtt * 1000:g} ms - wall at RTT 0) / RTT\n\n"
              + table(results, args.rtt, peers) + "\n")
    print(report)
    if args.save:
        out = HERE / "results" / f"{datetime.date.today()}-rtt.md"
        with out.open("a") as f:
            f.write(report + "\n")
        print(f"appended to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
