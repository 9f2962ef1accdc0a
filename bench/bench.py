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
import statistics
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

from fleetexec.testing.sshd import OpenSSHServer, addresses, is_available

PEERS_DIR = Path(__file__).resolve().parent / "peers"
FLEETEXEC = str(Path(sys.executable).parent / "fleetexec")  # not a pyenv shim: it costs ~50 ms
OUT_10MIB = 'yes "$(printf %01023d 0)" | head -c 10485760'  # 10 MiB in 1 KiB lines
ALIASES = {"df": "df -h", "sleep": "sleep 2", "10mib": OUT_10MIB}
LABELS = {OUT_10MIB: "10 MiB output"}
DEFAULT_COMMANDS = ["true", "df -h", "sleep 2", OUT_10MIB]
PEERS = ["fleetexec-cli", "fleetexec-api", "asyncssh", "pssh", "xargs-ssh", "fabric"]
PY_PEERS = {"fleetexec-api": ("peer_fleetexec_api.py", "fleetexec"),
            "asyncssh": ("peer_asyncssh.py", "asyncssh"), "pssh": ("peer_pssh.py", "pssh"),
            "fabric": ("peer_fabric.py", "fabric")}
KEEPS_ALL_OUTPUT = {"pssh", "fabric"}  # hold every byte of every host in memory
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
        if peer == "fleetexec-cli":
            return [FLEETEXEC, "run", "-i", str(self.inventory(n)), "--no-system-known-hosts",
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
        return [sys.executable, script, "--hosts", str(self.hosts(n)), "--port", str(sshd.port),
                "--user", sshd.user, "--key", str(sshd.client_key_path),
                "--known-hosts", str(self.known_hosts), "--inventory", str(self.inventory(n)),
                "--concurrency", str(CONCURRENCY), "--command", command]


# ---- /proc readings --------------------------------------------------------------------

def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat from field 3 (state) on: the comm may contain spaces."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_cpu(pid: int) -> float:
    """utime+stime+cutime+cstime in seconds (children count once they are reaped)."""
    return sum(int(x) for x in _stat(pid)[11:15]) / TICK


def children(pid: int) -> list[int]:
    return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


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
        for pid in set(children(os.getpid())) - SKIP_PIDS:
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




def measure(argv: list[str], sshd_pid: int, workdir: Path) -> dict[str, Any]:
    """Run one client to completion and return what it cost (stdout/stderr left in workdir)."""
    wait_sshd_idle(sshd_pid)
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
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting
    orphans, leaked = _reap_orphans(proc.pid)
    wait_sshd_idle(sshd_pid)
    usages = [usage, *orphans]
    # Linux charges a child the parent's RSS at fork as ru_maxrss, so the client's own
    # wait4 figure would be at least this driver's ~46 MiB; GNU time forks it instead.
    client_rss = int(rss_file.read_text().split()[-1]) if GNU_TIME else usage.ru_maxrss
    cpu = sum(u.ru_utime + u.ru_stime for u in usages)
    sshd_cpu = process_cpu(sshd_pid) - sshd0
    return {
        "wall": round(wall, 4), "cpu": round(cpu, 4), "rc": proc.returncode,
        "user": round(sum(u.ru_utime for u in usages), 4),
        "sys": round(sum(u.ru_stime for u in usages), 4),
        "maxrss_mib": round(max([client_rss, *(u.ru_maxrss for u in orphans)]) / 1024, 1),
        "sshd_cpu": round(sshd_cpu, 3), "overflows": listen_overflows() - ovf0,
        # the rest of the machine: this driver, and anything else running meanwhile
        "other_cpu": round(max(0.0, machine_busy() - busy0 - cpu - sshd_cpu), 3),
        # CPU of re-parented descendants (fleetexec: forkserver + workers), in "cpu" too
        "orphans": len(orphans), "orphan_cpu": round(sum(u.ru_utime + u.ru_stime for u in orphans), 4),
        "leaked": leaked,
    }


def parse_outcome(peer: str, workdir: Path, total: int) -> tuple[int, Counter[str]]:
    """How many hosts ended ok, and the failure texts, from the client's stdout."""
    errors: Counter[str] = Counter()
    stdout = workdir / "stdout"
    if peer == "xargs-ssh":
        ok = 0
        with stdout.open(errors="replace") as lines:
            for line in lines:
                ok += line.startswith("OK ")
                if line.startswith("FAIL "):  # "FAIL host rc=255 text": group by the text
                    errors[re.sub(r"127\.\d+\.\d+\.\d+", "HOST", line[5:].strip())[:200]] += 1
        return ok, errors
    if peer == "fleetexec-cli":
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
    lines = stdout.read_text(errors="replace").strip().splitlines()
    try:
        found = json.loads(lines[-1])
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


def skip_reason(peer: str, n: int, command: str) -> str | None:
    """Runs left out because they would exhaust memory rather than measure SSH."""
    if peer in KEEPS_ALL_OUTPUT and command == OUT_10MIB:
        available = int(re.findall(r"MemAvailable:\s+(\d+)", Path("/proc/meminfo").read_text())[0])
        if n * 10 * 1024 * 3 > available:  # kB; x3: bytes + decoded text + copies
            return f"skipped: keeps all output in memory ({n} x 10 MiB)"
    return None


def run_all(args: argparse.Namespace, records: list[dict[str, Any]], jsonl: Any) -> None:
    """Start the sshd, probe the KEX, warm up, then the interleaved measured runs."""
    with OpenSSHServer(max_startups="4000:30:8000") as sshd, \
            tempfile.TemporaryDirectory(prefix="fleetexec-bench-") as tmp:
        assert sshd.pid is not None
        SKIP_PIDS.add(sshd.pid)
        fleet = Fleet(sshd, [*args.n, 2], Path(tmp))
        records[0]["meta"]["kex"] = probe_kex(fleet)
        plan = [(r, n, c, p) for r in range(args.repeats) for n in args.n for c in args.commands
                for p in args.peers[r % len(args.peers):] + args.peers[:r % len(args.peers)]]
        for peer in args.peers:  # warm-up: page cache and bytecode cache; not recorded
            if not unavailable(peer):
                measure(fleet.peer_argv(peer, 2, "true"), sshd.pid, Path(tmp))
        for index, (repeat, n, command, peer) in enumerate(plan, 1):
            record: dict[str, Any] = {"peer": peer, "n": n, "command": command, "repeat": repeat}
            reason = unavailable(peer) or skip_reason(peer, n, command)
            if reason:
                record.update(ok=0, total=n, errors={}, skipped=reason)
            else:
                record.update(measure(fleet.peer_argv(peer, n, command), sshd.pid, Path(tmp)))
                ok, errors = parse_outcome(peer, Path(tmp), n)
                record.update(ok=ok, total=n, errors=dict(errors.most_common(10)))
            records.append(record)
            if jsonl:
                jsonl.write(json.dumps(record) + "\n")
                jsonl.flush()
            print(f"[{index}/{len(plan)}] {peer} N={n} {label(command)!r}: "
                  + (record.get("skipped") or f"{record['wall']:.2f} s, cpu {record['cpu']:.2f} s,"
                     f" ok {record['ok']}/{n}"), file=sys.stderr, flush=True)


def probe_kex(fleet: Fleet) -> dict[str, str]:
    argv = fleet.peer_argv("asyncssh", 2, "true")
    argv[1] = str(PEERS_DIR / "probe_kex.py")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                          env=CHILD_ENV)
    try:
        return dict(json.loads(done.stdout))
    except ValueError:
        return {"probe": f"failed: {_tail_text(done.stderr)}"}


def _tail_text(text: str) -> str:
    return " ".join(text[-300:].split())


def machine() -> dict[str, Any]:
    """Date, hardware and versions, for the report header."""
    cpu = re.findall(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    versions = {}
    for dist in ("fleetexec", "paramiko", "cryptography", "asyncssh", "parallel-ssh",
                 "ssh2-python", "fabric"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
    versions["OpenSSH"] = ssh.stderr.strip()
    repo = Path(__file__).resolve().parent.parent
    git = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty"],
                         capture_output=True, text=True, check=False).stdout.strip()
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "nproc": os.cpu_count(), "cpu": cpu[0] if cpu else platform.processor(),
            "kernel": platform.release(), "python": platform.python_version(),
            "versions": versions, "fleetexec_git": git}


# ---- the report ------------------------------------------------------------------------

def label(command: str) -> str:
    return LABELS.get(command, command)


def spread(values: list[float], digits: int = 2) -> str:
    """median [min–max], or the one value."""
    if not values:
        return "–"
    med = f"{statistics.median(values):.{digits}f}"
    if len(values) == 1:
        return med
    return f"{med} [{min(values):.{digits}f}–{max(values):.{digits}f}]"


def report(records: list[dict[str, Any]]) -> str:
    """The Markdown tables: one per (command, N), peers as rows."""
    meta = records[0]["meta"]
    runs = [r for r in records[1:] if "peer" in r]
    out = [f"## fleetexec bench, {meta['date']}", "",
           f"Machine: {meta['nproc']} CPUs ({meta['cpu']}), kernel {meta['kernel']}, "
           f"Python {meta['python']}; fleetexec git {meta['fleetexec_git']}.",
           "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
           "", "Negotiated KEX / client-to-server cipher (one probe connection each): "
           + "; ".join(f"{k}: {v}" for k, v in meta.get("kex", {}).items()) + ".", "",
           "Cells: median [min–max] over repeats. Client CPU = user+sys of the client's whole "
           "process tree; peak RSS = the largest single process of the tree. Ratios = "
           f"{meta['reference']} ÷ peer (medians); < 1.00 means fleetexec is faster / cheaper. "
           "`!` = some run lost hosts (see Failures). Other CPU = the rest of the machine "
           "during the run (driver, other processes: noise).", ""]
    failures: list[str] = []
    for command in dict.fromkeys(r["command"] for r in runs):
        for n in sorted({r["n"] for r in runs if r["command"] == command}):
            group = [r for r in runs if r["command"] == command and r["n"] == n]
            out += [f"### `{label(command)}`, N={n}", "",
                    "| peer | hosts ok | wall s | client CPU s | CPU ms/host | peak RSS MiB "
                    "| sshd CPU s | other CPU s | listen ovf | wall ratio | CPU ratio |",
                    "|---|---|---|---|---|---|---|---|---|---|---|"]
            ref = [r for r in group if r["peer"] == meta["reference"] and "skipped" not in r]
            for peer in dict.fromkeys(r["peer"] for r in group):
                mine = [r for r in group if r["peer"] == peer]
                done = [r for r in mine if "skipped" not in r]
                if not done:
                    out.append(f"| {peer} | {mine[0]['skipped']} |" + " |" * 9)
                    continue
                out.append("| " + " | ".join([peer, _hosts_cell(done, n), *_cells(done, ref, n)])
                           + " |")
                for r in done:
                    for text, count in r["errors"].items():
                        failures.append(f"- {peer}, `{label(command)}`, N={n}, repeat "
                                        f"{r['repeat']}: {count} × {text}")
                    if r["leaked"]:
                        failures.append(f"- {peer}, N={n}: leaked processes {r['leaked']}")
            out.append("")
    if failures:
        out += ["### Failures (error texts as the clients reported them)", "", *failures, ""]
    return "\n".join(out)


def _hosts_cell(done: list[dict[str, Any]], n: int) -> str:
    oks = [r["ok"] for r in done]
    if all(ok == n for ok in oks):
        return f"{n}/{n}"
    return f"! {','.join(map(str, oks))} of {n}"


def _cells(done: list[dict[str, Any]], ref: list[dict[str, Any]], n: int) -> list[str]:
    def get(key: str, runs: list[dict[str, Any]] = done) -> list[float]:
        return [r[key] for r in runs]

    def ratio(key: str) -> str:
        if not ref or done[0]["peer"] == ref[0]["peer"]:
            return "–"
        return f"{statistics.median(get(key, ref)) / statistics.median(get(key)):.2f}"

    return [spread(get("wall")), spread(get("cpu")),
            spread([c * 1000 / n for c in get("cpu")], 1), spread(get("maxrss_mib"), 0),
            spread(get("sshd_cpu")), spread(get("other_cpu")),
            str(int(statistics.median(get("overflows")))), ratio("wall"), ratio("cpu")]


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
    parser.add_argument("--peers", nargs="+", default=PEERS, help=f"comma list of {PEERS}")
    parser.add_argument("--quick", action="store_true", help="N=100, true and sleep 2, 1 repeat")
    parser.add_argument("--json", metavar="FILE", help="append raw records (JSON lines)")
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
    if unknown := set(args.peers) - set(PEERS):
        parser.error(f"unknown peers {sorted(unknown)}; choose from {PEERS}")
    ok, why = is_available()
    if not ok:
        sys.exit(f"bench: cannot start a real sshd: {why}")
    # Orphaned descendants of a client (e.g. multiprocessing's forkserver) come to us.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    reference = "fleetexec-cli" if "fleetexec-cli" in args.peers else "fleetexec-api"
    records: list[dict[str, Any]] = [{"meta": {**machine(), "reference": reference}}]
    jsonl = Path(args.json).open("a") if args.json else None
    try:
        if jsonl:
            jsonl.write(json.dumps(records[0]) + "\n")
        run_all(args, records, jsonl)
    finally:
        if jsonl:
            jsonl.close()
    print(report(records))


if __name__ == "__main__":
    main()
