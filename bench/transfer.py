"""File transfer: `fleetexec put/get` against `xargs -P 64 scp` and parallel-ssh's copy.

One real sshd (`fleetexec.testing.sshd.OpenSSHServer`, MaxStartups 4000:30:8000)
serves N loopback "hosts"; each client process copies one S MiB file (random
bytes) to every host (put) and from every host (get). The hosts share this
machine's disk, so put writes the same remote path N times (fleetexec: N
temporary files renamed in turn; scp and parallel-ssh: N writers of one file)
and get reads one remote file N times into N local files.

Measured as in bench.py (its `measure`): wall time, the CPU of the client's
whole process tree (this process is the child subreaper), its peak RSS, and
the sshd's CPU; then how many hosts ended ok and that the files have the size.
Each run is preceded by a warm-up of the same client on 2 hosts.

Clients (concurrency: fleetexec its defaults, every host at once with a worker
process per core; the others 64):

- fleetexec: `fleetexec put|get -i INV --no-system-known-hosts -o json -t 600
  --connect-timeout 60 --no-save`;
- scp: `xargs -P 64` running `scp -q` per host (OpenSSH's scp speaks SFTP;
  strict host keys, `KexAlgorithms=curve25519-sha256`, as bench.py's xargs-ssh);
- pssh: `peers/peer_pssh_copy.py`, parallel-ssh `copy_file` / `copy_remote_file`,
  `pool_size=64`, host keys checked as in `peer_pssh.py`.

    python bench/transfer.py                       # N=100, 10 MiB, once
    python bench/transfer.py --n 20 --mib 1 --peers fleetexec,scp
    python bench/transfer.py --save                # also bench/results/DATE-transfer.md
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import bench as driver  # bench/bench.py: measure(), parse_outcome(), machine()

from fleetexec.testing.sshd import OpenSSHServer, addresses, is_available

PEERS = ["fleetexec", "scp", "pssh"]
CONCURRENCY = 64
SCP_WRAPPER = (
    'set -f; h=$1; mode=$2; a=$3; b=$4; shift 4; '
    'if [ "$mode" = put ]; then src=$a; dst="$h:$b"; '
    'else mkdir -p "$b/$h" && src="$h:$a" && dst="$b/$h/"; fi; '
    'e=$(scp -q "$@" "$src" "$dst" 2>&1 >/dev/null); rc=$?; '
    'if [ $rc -eq 0 ]; then echo "OK $h"; else echo "FAIL $h rc=$rc" $e; fi')


class Setup:
    """The sshd, the hosts files, the payload and the directories of one benchmark."""

    def __init__(self, sshd: OpenSSHServer, root: Path, n: int, mib: int) -> None:
        self.sshd, self.root, self.n, self.size = sshd, root, n, mib * 1024 * 1024
        self.known_hosts = root / "known_hosts"
        sshd.write_known_hosts(self.known_hosts, addresses(n))
        self.payload = root / "payload.bin"
        with self.payload.open("wb") as file:
            for _ in range(mib):
                file.write(os.urandom(1024 * 1024))
        self.remote = root / "remote"  # the "hosts'" directory (one disk for all)
        self.remote.mkdir()
        shutil.copyfile(self.payload, self.remote / "source.bin")
        self.out = root / "out"

    def files(self, n: int) -> tuple[Path, Path]:
        hosts, inventory = self.root / f"hosts-{n}.txt", self.root / f"inventory-{n}.yaml"
        if not hosts.exists():
            hosts.write_text("\n".join(addresses(n)) + "\n")
            self.sshd.write_inventory(inventory, addresses(n), known_hosts=self.known_hosts)
        return hosts, inventory

    def argv(self, peer: str, direction: str, n: int) -> list[str]:
        hosts, inventory = self.files(n)
        sshd = self.sshd
        if peer == "fleetexec":
            where = ([str(self.payload), f"{self.remote}/"] if direction == "put"
                     else [f"{self.remote}/source.bin", str(self.out)])
            return [driver.FLEETEXEC, direction, "-i", str(inventory), "--no-system-known-hosts",
                    "-o", "json", "-t", "600", "--connect-timeout", "60", "--no-save", *where]
        if peer == "scp":
            options = [
                "-o", "KexAlgorithms=curve25519-sha256", "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=60",
                "-i", str(sshd.client_key_path), "-F", "/dev/null", "-P", str(sshd.port),
                "-o", f"User={sshd.user}"]
            a, b = ((str(self.payload), f"{self.remote}/") if direction == "put"
                    else (f"{self.remote}/source.bin", str(self.out)))
            return ["xargs", "-P", str(CONCURRENCY), "-a", str(hosts), "-I", "{}",
                    "sh", "-c", SCP_WRAPPER, "sh", "{}", direction, a, b, *options]
        script = str(Path(__file__).resolve().parent / "peers" / "peer_pssh_copy.py")
        local, remote = ((str(self.payload), f"{self.remote}/payload.bin") if direction == "put"
                         else (str(self.out / "source.bin"), f"{self.remote}/source.bin"))
        return [sys.executable, script, "--hosts", str(hosts), "--port", str(sshd.port),
                "--user", sshd.user, "--key", str(sshd.client_key_path),
                "--known-hosts", str(self.known_hosts), "--direction", direction,
                "--local", local, "--remote", remote, "--concurrency", str(CONCURRENCY)]

    def reset(self) -> None:
        shutil.rmtree(self.out, ignore_errors=True)
        self.out.mkdir()
        for path in self.remote.iterdir():
            if path.name != "source.bin":
                path.unlink()

    def files_ok(self, peer: str, direction: str) -> int:
        """How many copies have the payload's size where this peer should have put them."""
        if direction == "put":
            target = self.remote / "payload.bin"  # one path, written by every host
            return int(target.exists() and target.stat().st_size == self.size)
        found = [p for p in self.out.rglob("*") if p.is_file()]
        return sum(p.stat().st_size == self.size for p in found)


def measure(setup: Setup, peer: str, direction: str, n: int, work: Path) -> dict[str, Any]:
    setup.reset()
    work.mkdir(parents=True, exist_ok=True)
    record = driver.measure(setup.argv(peer, direction, n), setup.sshd.pid or 0, work)
    kind = {"fleetexec": "fleetexec-cli", "scp": "xargs-ssh"}.get(peer, peer)
    ok, errors = driver.parse_outcome(kind, work, n)
    record.update(peer=peer, direction=direction, n=n, ok=ok,
                  errors=dict(errors.most_common(3)), files=setup.files_ok(peer, direction))
    return record


def report(records: list[dict[str, Any]], n: int, mib: int, meta: dict[str, Any]) -> str:
    lines = [f"# File transfer: {n} hosts x {mib} MiB, put and get",
             "",
             f"{meta['date']}; {meta['cpu']}, {meta['nproc']} cores; Linux "
             f"{meta['kernel']}; Python {meta['python']}; fleetexec "
             f"{meta['versions']['fleetexec']} ({meta['fleetexec_git']}), paramiko "
             f"{meta['versions']['paramiko']}, parallel-ssh {meta['versions']['parallel-ssh']}; "
             f"{meta['versions']['OpenSSH']}. One sshd on loopback (the hosts share one "
             "disk); median of the repeats. Client CPU: the client's whole process tree "
             "(for scp: xargs, every sh, scp and ssh).",
             "",
             "| direction | client | ok | wall s | client CPU s | sshd CPU s | peak RSS MiB "
             "| MiB/s (all hosts) |",
             "|---|---|---|---|---|---|---|---|"]
    table: dict[tuple[str, str], dict[str, float]] = {}
    for direction in ("put", "get"):
        for peer in PEERS:
            runs = [r for r in records if r["peer"] == peer and r["direction"] == direction]
            if not runs:
                continue
            row = {key: statistics.median(r[key] for r in runs)
                   for key in ("wall", "cpu", "sshd_cpu", "maxrss_mib", "ok")}
            table[(direction, peer)] = row
            rate = n * mib / row["wall"] if row["wall"] else 0
            lines.append(f"| {direction} | {peer} | {row['ok']:.0f}/{n} | {row['wall']:.2f} | "
                         f"{row['cpu']:.2f} | {row['sshd_cpu']:.2f} | {row['maxrss_mib']:.0f} | "
                         f"{rate:.0f} |")
    lines += ["", "Ratios, fleetexec / peer (< 1.00: fleetexec better):", ""]
    for direction in ("put", "get"):
        ours = table.get((direction, "fleetexec"))
        for peer in PEERS[1:]:
            theirs = table.get((direction, peer))
            if ours and theirs and theirs["wall"] and theirs["cpu"]:
                lines.append(f"- {direction}, vs {peer}: wall {ours['wall'] / theirs['wall']:.2f}, "
                             f"client CPU {ours['cpu'] / theirs['cpu']:.2f}")
    problems = [f"- {r['direction']} {r['peer']}: {r['ok']}/{n} ok, files {r['files']}, "
                f"errors {r['errors']}" for r in records
                if r["ok"] != n or r["files"] < (1 if r["direction"] == "put" else n)]
    if problems:
        lines += ["", "Runs with failures:", "", *problems]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--mib", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma list of {PEERS}")
    parser.add_argument("--save", action="store_true",
                        help="also write bench/results/DATE-transfer.md")
    args = parser.parse_args()
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if unknown := set(peers) - set(PEERS):
        parser.error(f"unknown peers {sorted(unknown)}")
    if "pssh" in peers and importlib.util.find_spec("pssh") is None:
        peers.remove("pssh")
        print("bench: parallel-ssh not installed; pssh left out", file=sys.stderr)
    ok, why = is_available()
    if not ok:
        sys.exit(f"bench: cannot start a real sshd: {why}")
    ctypes.CDLL(None, use_errno=True).prctl(driver.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fleetexec-bench-transfer-") as tmp, \
            OpenSSHServer(max_startups="4000:30:8000") as sshd:
        driver.SKIP_PIDS.add(sshd.pid or 0)
        setup = Setup(sshd, Path(tmp), args.n, args.mib)
        for direction in ("put", "get"):
            for peer in peers:
                measure(setup, peer, direction, 2, Path(tmp) / "warm")  # warm-up, not kept
                for repeat in range(args.repeats):
                    record = measure(setup, peer, direction, args.n,
                                     Path(tmp) / f"{direction}-{peer}-{repeat}")
                    records.append(record)
                    print(f"{direction} {peer}: {record['ok']}/{args.n} ok, "
                          f"{record['wall']:.2f} s, cpu {record['cpu']:.2f} s", file=sys.stderr)
        setup.reset()
    text = report(records, args.n, args.mib, driver.machine())
    print(text)
    if args.save:
        out = (Path(__file__).resolve().parent / "results"
               / f"{datetime.date.today().isoformat()}-transfer.md")
        out.write_text(text)
        print(f"saved {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
