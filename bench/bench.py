"""Benchmark fleetexec against other parallel SSH clients on one real OpenSSH sshd.

    python bench/bench.py                      # N=100,500,1000 x 4 commands x 3 repeats
    python bench/bench.py --quick              # N=100, `true` and `sleep 2`, 1 repeat
    python bench/bench.py --n 500 --commands 'true,df -h' --repeats 2 --json out.jsonl
    python bench/bench.py --from-json out.jsonl   # print the tables of saved records again

Every peer runs as its own client process (a new session); the driver measures
its wall time, the CPU and peak RSS of its whole process tree (os.wait4, with
this process as child subreaper so orphaned descendants are reaped and counted
too), the sshd's CPU from /proc and how many hosts ended ok. See bench/README.md.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import importlib.util
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tables import report

from fleetexec.testing.sshd import OpenSSHServer, addresses, is_available

PEERS_DIR = Path(__file__).resolve().parent / "peers"
FLEETEXEC = str(Path(sys.executable).parent / "fleetexec")  # not a pyenv shim: it costs ~50 ms
OUT_10MIB = 'yes "$(printf %01023d 0)" | head -c 10485760'  # 10 MiB in 1 KiB lines
ALIASES = {"df": "df -h", "sleep": "sleep 2", "10mib": OUT_10MIB}
LABELS = {OUT_10MIB: "10 MiB output"}
DEFAULT_COMMANDS = ["true", "df -h", "sleep 2", OUT_10MIB]
PEERS = ["fleetexec-cli", "fleetexec-api", "asyncssh", "pssh", "xargs-ssh", "fabric",
         "asyncssh-gcm"]  # the last: not by default (asyncssh with fleetexec's cipher)
DEFAULT_PEERS = PEERS[:-1]
GCM = "aes128-gcm@openssh.com"  # what fleetexec negotiates (bench/results: the KEX line)
BASELINE: list[str] = []  # --baseline: another fleetexec install's CLI, e.g. the last release
PY_PEERS = {"fleetexec-api": ("peer_fleetexec_api.py", "fleetexec"),
            "asyncssh": ("peer_asyncssh.py", "asyncssh"),
            "asyncssh-gcm": ("peer_asyncssh.py", "asyncssh"), "pssh": ("peer_pssh.py", "pssh"),
            "fabric": ("peer_fabric.py", "fabric")}
# Peers that keep every byte of output and process it slowly, measured here with the 10 MiB
# command at N=10..50: client CPU s per host, peak MiB per host. Too slow for big N.
BULK_COST = {"fabric": (3.5, 52), "pssh": (1.6, 14)}
BULK_MAX_N = 50
CONCURRENCY = 128  # asyncssh semaphore and xargs -P
RUN_TIMEOUT = 900.0  # a client still running then is killed (its process group)
TICK = os.sysconf("SC_CLK_TCK")
PR_SET_CHILD_SUBREAPER = 36
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
SKIP_PIDS: set[int] = set()  # our long-lived children (the sshd): never reaped as orphans
# Children get a bytecode cache: this machine sets PYTHONDONTWRITEBYTECODE, and the
# editable fleetexec would otherwise be recompiled at every start (~30 ms).
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
CHILD_ENV["PYTHONPYCACHEPREFIX"] = str(Path.home() / ".cache" / "fleetexec-bench" / "pycache")
# xargs runs this per host: ssh's stdout is discarded, its stderr kept for the report.
SSH_WRAPPER = ('set -f; h=$1; c=$2; shift 2; e=$(ssh "$@" "$h" "$c" 2>&1 >/dev/null); rc=$?; '
               'if [ $rc -eq 0 ]; then echo "OK $h"; else echo "FAIL $h rc=$rc" $e; fi')


# ---- the fleet ----------------------------------------------------------------------

class Fleet:
    """One sshd plus, per N, a hosts file and a fleetexec inventory; one shared known_hosts."""

    def __init__(self, sshd: OpenSSHServer, ns: Iterable[int], workdir: Path) -> None:
        self.sshd, self.dir = sshd, workdir
        self.known_hosts = workdir / "known_hosts"
        biggest = max(ns)
        for n in ns:
            sshd.write_inventory(self.inventory(n), addresses(n), known_hosts=self.known_hosts)
            self.hosts(n).write_text("\n".join(addresses(n)) + "\n")
        # Every peer sees the same known_hosts, one line per host of the largest N.
        sshd.write_known_hosts(self.known_hosts, addresses(biggest))

    def hosts(self, n: int) -> Path:
        return self.dir / f"hosts-{n}.txt"

    def inventory(self, n: int) -> Path:
        return self.dir / f"inventory-{n}.yaml"

    def peer_argv(self, peer: str, n: int, command: str) -> list[str]:
        """The client command line of `peer` for N hosts."""
        sshd = self.sshd
        if peer in ("fleetexec-cli", "fleetexec-baseline"):
            executable = FLEETEXEC if peer == "fleetexec-cli" else BASELINE[0]
            return [executable, "run", "-i", str(self.inventory(n)), "--no-system-known-hosts",
                    "-o", "json", "-t", "120", "--connect-timeout", "60", "--", command]
        if peer == "xargs-ssh":
            ssh_options = [
                "-o", "KexAlgorithms=curve25519-sha256", "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=60",
                "-i", str(sshd.client_key_path), "-F", "/dev/null", "-p", str(sshd.port),
                "-l", sshd.user]
            return ["xargs", "-P", str(CONCURRENCY), "-a", str(self.hosts(n)), "-I", "{}",
                    "sh", "-c", SSH_WRAPPER, "sh", "{}", command, *ssh_options]
        script = str(PEERS_DIR / PY_PEERS[peer][0])
        cipher = ["--cipher", GCM] if peer == "asyncssh-gcm" else []
        return [sys.executable, script, "--hosts", str(self.hosts(n)), "--port", str(sshd.port),
                "--user", sshd.user, "--key", str(sshd.client_key_path),
                "--known-hosts", str(self.known_hosts), "--inventory", str(self.inventory(n)),
                "--concurrency", str(CONCURRENCY), "--command", command, *cipher]


# ---- /proc readings --------------------------------------------------------------------

def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat from field 3 (state) on: the comm may contain spaces."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_cpu(pid: int) -> float:
    """utime+stime+cutime+cstime in seconds (children count once they are reaped)."""
    return sum(int(x) for x in _stat(pid)[11:15]) / TICK


def children(pid: int) -> set[int]:
    """Live children of `pid`, whichever of its threads they hang off."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.update(int(x) for x in task.read_text().split())
        except FileNotFoundError:  # the thread ended meanwhile
            pass
    return found


def machine_busy() -> float:
    """CPU seconds the whole machine spent not idle, since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK  # minus idle and iowait


def listen_overflows() -> int:
    """TcpExt ListenOverflows: SYNs dropped because an accept queue was full (all sockets)."""
    lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines()
             if line.startswith("TcpExt:")]
    return int(dict(zip(lines[0], lines[1], strict=True)).get("ListenOverflows", 0))


def wait_sshd_idle(pid: int, timeout: float = 300.0) -> None:
    """Until the sshd has no connection processes left, so runs never overlap."""
    deadline = time.monotonic() + timeout
    while children(pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd still has children {children(pid)} after {timeout} s")
        time.sleep(0.05)


# ---- one measured run -----------------------------------------------------------------

def _reap_orphans(session: int) -> tuple[list[Any], list[str]]:
    """Reap descendants of the client that were re-parented to us; rusage of each, and leaks.

    Our children besides the sshd are orphans: the client's (its session id is the
    client's pid) are counted; a process still alive 30 s after the client exited
    is killed and reported as leaked. Others (sshd's) are reaped, not counted.
    """
    usages: list[Any] = []
    leaked: list[str] = []
    deadline = time.monotonic() + 30
    while True:
        ours_alive = False
        for pid in children(os.getpid()) - SKIP_PIDS:
            try:
                ours = int(_stat(pid)[3]) == session
                if ours and time.monotonic() > deadline:
                    leaked.append(Path(f"/proc/{pid}/comm").read_text().strip())
                    os.kill(pid, signal.SIGKILL)
                done, _status, usage = os.wait4(pid, os.WNOHANG)
            except (FileNotFoundError, ProcessLookupError, ChildProcessError):
                continue
            if ours and done:
                usages.append(usage)
            ours_alive |= ours and not done
        if not ours_alive:
            return usages, leaked
        time.sleep(0.02)


def _cpu(usages: list[Any]) -> float:
    return float(sum(u.ru_utime + u.ru_stime for u in usages))


def measure(argv: list[str], sshd_pid: int, workdir: Path) -> dict[str, Any]:
    """Run one client to completion and return what it cost (stdout/stderr left in workdir)."""
    wait_sshd_idle(sshd_pid)
    load = float(Path("/proc/loadavg").read_text().split()[0])  # others share the machine?
    sshd0, busy0, ovf0 = process_cpu(sshd_pid), machine_busy(), listen_overflows()
    rss_file = workdir / "maxrss"
    rss_file.unlink(missing_ok=True)
    if GNU_TIME:  # see below: only a small parent gives the client a true ru_maxrss
        argv = [GNU_TIME, "-q", "-f", "%M", "-o", str(rss_file), *argv]
    with (workdir / "stdout").open("wb") as out, (workdir / "stderr").open("wb") as err:
        begin = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                cwd=workdir, env=CHILD_ENV, start_new_session=True)
    killer = threading.Timer(RUN_TIMEOUT, os.killpg, (proc.pid, signal.SIGKILL))
    killer.start()
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - begin
    killer.cancel()
    killer.join()  # orphans may be re-parented to any of our threads; keep just one
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting
    orphans, leaked = _reap_orphans(proc.pid)
    wait_sshd_idle(sshd_pid)
    # Linux charges a child the parent's RSS at fork as ru_maxrss, so the client's own
    # wait4 figure would be at least this driver's ~46 MiB; GNU time forks it instead.
    timed = rss_file.read_text().split() if rss_file.exists() else []  # none if killed
    client_rss = int(timed[-1]) if timed else usage.ru_maxrss
    cpu, sshd_cpu = _cpu([usage, *orphans]), process_cpu(sshd_pid) - sshd0
    return {
        "wall": round(wall, 4), "cpu": round(cpu, 4), "rc": proc.returncode,
        "maxrss_mib": round(max([client_rss, *(u.ru_maxrss for u in orphans)]) / 1024, 1),
        "sshd_cpu": round(sshd_cpu, 3), "overflows": listen_overflows() - ovf0,
        # the rest of the machine: this driver, and anything else running meanwhile
        "other_cpu": round(max(0.0, machine_busy() - busy0 - cpu - sshd_cpu), 3),
        # re-parented descendants (fleetexec: forkserver + its workers), included in "cpu"
        "orphans": len(orphans), "orphan_cpu": round(_cpu(orphans), 4), "leaked": leaked,
        # voluntary context switches of the client's tree: its threads waiting (GIL, sockets)
        "vcsw": sum(u.ru_nvcsw for u in [usage, *orphans]),
        "load": load,
    }


def parse_outcome(peer: str, workdir: Path, total: int) -> tuple[int, Counter[str]]:
    """How many hosts ended ok, and the failure texts, from the client's stdout."""
    errors: Counter[str] = Counter()
    stdout = workdir / "stdout"
    if peer == "xargs-ssh":
        ok = 0
        # newline="\n": ssh ends its messages with \r\n, which must not split a FAIL line
        with stdout.open(errors="replace", newline="\n") as lines:
            for line in lines:
                ok += line.startswith("OK ")
                if line.startswith("FAIL "):  # "FAIL host rc=255 text": group by the text
                    text = re.sub(r"127\.\d+\.\d+\.\d+", "HOST", line[5:])
                    errors[" ".join(re.sub(r"@{3,}", "", text).split())[:200]] += 1
        return ok, errors
    if peer in ("fleetexec-cli", "fleetexec-baseline"):
        # The JSON can be ~1 GiB (1 MiB kept per host x 1000): stream it. With indent=2
        # every key is on its own line, and "error" is the last key of a host.
        ok, status = 0, None
        with stdout.open(errors="replace") as lines:
            for line in lines:
                key, _, value = line.strip().partition(": ")
                if key == '"status"':
                    status = json.loads(value.rstrip(","))
                    ok += status == "ok"
                elif key == '"error"' and status is not None and status != "ok":
                    errors[f"{status}: {json.loads(value.rstrip(','))}"] += 1
                elif key == '"summary"':
                    break
        if ok == 0 and not errors:
            errors[f"no JSON on stdout; stderr: {_tail(workdir / 'stderr')}"] = total
        return ok, errors
    last = stdout.read_text(errors="replace").strip().splitlines()[-1:]  # the result line
    try:
        found = json.loads(last[0])
        return int(found["ok"]), Counter(found["errors"])
    except (IndexError, ValueError, KeyError):
        errors[f"no result line; stderr: {_tail(workdir / 'stderr')}"] = total
        return 0, errors


def _tail(path: Path, size: int = 300) -> str:
    return " ".join(path.read_text(errors="replace")[-size:].split())


# ---- the whole benchmark -------------------------------------------------------------

def unavailable(peer: str) -> str | None:
    """Why `peer` cannot run here, or None."""
    if peer in PY_PEERS and importlib.util.find_spec(PY_PEERS[peer][1]) is None:
        return f"{PY_PEERS[peer][1]} not installed (pip install -e '.[bench]')"
    return None


def skip_reason(peer: str, n: int, command: str, no_skip: bool) -> str | None:
    """Runs left out because they would exhaust memory or take hours, rather than measure SSH."""
    if command != OUT_10MIB or peer not in BULK_COST:
        return None
    cpu_s, mib = BULK_COST[peer]
    available = int(re.findall(r"MemAvailable:\s+(\d+)", Path("/proc/meminfo").read_text())[0])
    if n * mib * 1024 > 0.7 * available:
        return f"skipped: keeps all output, would need ~{n * mib / 1024:.0f} GiB of memory"
    if n > BULK_MAX_N and not no_skip:
        return (f"skipped (--no-skip runs it): ~{cpu_s} s client CPU/host for 10 MiB "
                f"measured at N<={BULK_MAX_N}, ~{n * cpu_s / 60:.0f} min per run")
    return None


def run_all(args: argparse.Namespace, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Start the sshd, probe the KEX, check strictness, then the interleaved measured runs."""
    records: list[dict[str, Any]] = [{"meta": meta}]
    with OpenSSHServer(max_startups="4000:30:8000") as sshd, \
            tempfile.TemporaryDirectory(prefix="fleetexec-bench-") as tmp, \
            open(args.json or os.devnull, "w") as jsonl:
        assert sshd.pid is not None
        SKIP_PIDS.add(sshd.pid)
        fleet = Fleet(sshd, [*args.n, 2], Path(tmp))
        meta["kex"] = probe_kex(fleet)
        meta["strict"] = check_strict(fleet, sshd.pid, args.peers)
        jsonl.write(json.dumps(records[0]) + "\n")
        plan = [(r, n, c, p) for r in range(args.repeats) for n in args.n for c in args.commands
                for p in args.peers[r % len(args.peers):] + args.peers[:r % len(args.peers)]]
        for index, (repeat, n, command, peer) in enumerate(plan, 1):
            record: dict[str, Any] = {"peer": peer, "n": n, "command": command,
                                      "label": label(command), "repeat": repeat}
            reason = unavailable(peer) or skip_reason(peer, n, command, args.no_skip)
            if reason:
                record.update(ok=0, total=n, errors={}, skipped=reason)
            else:
                record.update(measure(fleet.peer_argv(peer, n, command), sshd.pid, Path(tmp)))
                ok, errors = parse_outcome(peer, Path(tmp), n)
                record.update(ok=ok, total=n, errors=dict(errors.most_common(10)))
            records.append(record)
            jsonl.write(json.dumps(record) + "\n")
            jsonl.flush()  # a run interrupted later keeps what it measured (--from-json)
            print(f"[{index}/{len(plan)}] {peer} N={n} {label(command)!r}: "
                  + (record.get("skipped") or f"{record['wall']:.2f} s, cpu {record['cpu']:.2f} s,"
                     f" ok {record['ok']}/{n}"), file=sys.stderr, flush=True)
    return records


def check_strict(fleet: Fleet, sshd_pid: int, peers: list[str]) -> dict[str, str]:
    """Each peer against a known_hosts with a wrong key for every host: it must fail both hosts.

    Then each runs once with the right keys: a warm-up (page cache, bytecode cache).
    Neither is recorded as a run.
    """
    good = fleet.known_hosts.read_text()
    wrong = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    fleet.known_hosts.write_text(re.sub(r"ssh-ed25519 \S+", wrong, good))
    found: dict[str, str] = {}
    try:
        for peer in peers:
            if not unavailable(peer):
                measure(fleet.peer_argv(peer, 2, "true"), sshd_pid, fleet.dir)
                ok, errors = parse_outcome(peer, fleet.dir, 2)
                first = next(iter(errors), "no error text")[:90]
                found[peer] = f"refused ({first})" if ok == 0 else f"ACCEPTED on {ok} of 2 hosts"
    finally:
        fleet.known_hosts.write_text(good)
    for peer in found:
        measure(fleet.peer_argv(peer, 2, "true"), sshd_pid, fleet.dir)
    return found


def probe_kex(fleet: Fleet) -> dict[str, str]:
    argv = fleet.peer_argv("asyncssh", 2, "true")
    argv[1] = str(PEERS_DIR / "probe_kex.py")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                          env=CHILD_ENV)
    try:
        return dict(json.loads(done.stdout))
    except ValueError:
        return {"probe": "failed: " + " ".join(done.stderr[-300:].split())}


def machine() -> dict[str, Any]:
    """Date, hardware and versions, for the report header."""
    cpu = re.findall(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    installed = {d.metadata["Name"].lower(): d.version for d in metadata.distributions()}
    versions = {name: installed.get(name, "not installed") for name in (
        "fleetexec", "paramiko", "cryptography", "asyncssh", "parallel-ssh", "ssh2-python",
        "fabric")}
    versions["OpenSSH"] = _output(["ssh", "-V"])
    git = _output(["git", "-C", str(PEERS_DIR.parent.parent), "describe", "--always", "--dirty"])
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "nproc": os.cpu_count(), "cpu": cpu[0] if cpu else platform.processor(),
            "kernel": platform.release(), "python": platform.python_version(),
            "versions": versions, "fleetexec_git": git}


def label(command: str) -> str:
    return LABELS.get(command, command)


def _output(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).strip()


# ---- command line ----------------------------------------------------------------------

def _list(values: list[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", nargs="+", default=["100", "500", "1000"], help="fleet sizes")
    parser.add_argument("--commands", nargs="+", default=None, metavar="CMD",
                        help="comma list: true, 'df -h', 'sleep 2', 10mib, or any command")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peers", nargs="+", default=DEFAULT_PEERS,
                        help=f"comma list of {PEERS} (asyncssh-gcm: asyncssh limited to {GCM}, "
                             "the cipher fleetexec negotiates; not run by default)")
    parser.add_argument("--quick", action="store_true", help="N=100, true and sleep 2, 1 repeat")
    parser.add_argument("--no-skip", action="store_true",
                        help=f"also run Fabric/pssh with 10 MiB output at N>{BULK_MAX_N}")
    parser.add_argument("--json", metavar="FILE", help="write raw records (JSON lines)")
    parser.add_argument("--baseline", metavar="PATH",
                        help="another fleetexec executable (an older version) to compare, "
                             "as peer fleetexec-baseline")
    parser.add_argument("--from-json", metavar="FILE", help="print the report of saved records")
    args = parser.parse_args()
    if args.from_json:
        print(report([json.loads(line) for line in Path(args.from_json).read_text().splitlines()]))
        return
    if args.quick:
        args.n, args.commands, args.repeats = ["100"], ["true", "sleep 2"], 1
    args.n = [int(n) for n in _list(args.n)]
    args.commands = [ALIASES.get(c.lower(), c) for c in _list(args.commands or DEFAULT_COMMANDS)]
    args.peers = _list(args.peers)
    if args.baseline:
        BASELINE.append(args.baseline)
        PEERS.append("fleetexec-baseline")
        args.peers.append("fleetexec-baseline")
    if unknown := set(args.peers) - set(PEERS):
        parser.error(f"unknown peers {sorted(unknown)}; choose from {PEERS}")
    ok, why = is_available()
    if not ok:
        sys.exit(f"bench: cannot start a real sshd: {why}")
    # Orphaned descendants of a client (e.g. multiprocessing's forkserver) come to us.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    reference = "fleetexec-cli" if "fleetexec-cli" in args.peers else "fleetexec-api"
    print(report(run_all(args, {**machine(), "reference": reference})))

if __name__ == "__main__":
    main()
