"""Scale on one box: N up to 5000 loopback hosts of one sshd, all `ok`, linear wall, flat RSS.

One real sshd (MaxStartups 4000:30:8000) serves N distinct loopback addresses. Three parts:

1. **CLI runs** at each N (`fleetexec run -i INV -o json -- CMD`), measured as in bench.py
   (its `measure`: wall, client process-tree CPU, peak RSS of the largest process, sshd
   CPU, listen-queue overflows) `--repeats` times; hosts ok from the JSON. Reported with
   wall ms per host, so linear growth shows as a flat column.
2. **Parent RSS across runs**: one Python process runs `fleetexec.run(hosts, CMD)` three
   times on the largest N and prints its VmRSS after each (the parent: the workers are
   other processes); flat means nothing is kept from one run to the next.
3. **A low open-files limit**: the CLI at the largest N with RLIMIT_NOFILE (soft) at
   `--nofile` (default 1024), which caps sessions in flight; every host must still be ok,
   with no "Too many open files".

    python bench/scale.py                         # N = 1000, 5000; `true`; 1 repeat
    python bench/scale.py --n 1000 2000 5000 --repeats 2 --save
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import bench as driver  # bench/bench.py: measure(), parse_outcome(), machine()

from fleetexec.testing.sshd import OpenSSHServer, addresses, is_available

RSS_SCRIPT = textwrap.dedent("""
    import json, re, sys, time
    import fleetexec
    hosts = fleetexec.load_inventory(sys.argv[1]).select()
    for _ in range(3):
        begin = time.perf_counter()
        result = fleetexec.run(hosts, sys.argv[2], system_known_hosts=False,
                               command_timeout=120, connect_timeout=60)
        wall = time.perf_counter() - begin
        status = open("/proc/self/status").read()
        rss = int(re.search(r"VmRSS:\\s+(\\d+)", status).group(1)) // 1024
        print(json.dumps({"ok": len(result.succeeded), "wall": round(wall, 2), "rss_mib": rss}),
              flush=True)
        del result
""")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cli_argv(inventory: Path, command: str) -> list[str]:
    return [driver.FLEETEXEC, "run", "-i", str(inventory), "--no-system-known-hosts", "--no-save",
            "-o", "json", "-t", "120", "--connect-timeout", "60", "--", command]


def run_cli(inventory: Path, n: int, command: str, sshd_pid: int, workdir: Path,
            nofile: int | None = None) -> dict[str, Any]:
    argv = cli_argv(inventory, command)
    if nofile is not None:  # prlimit applies the limit to the CLI, which its workers inherit
        argv = ["prlimit", f"--nofile={nofile}:{resource.getrlimit(resource.RLIMIT_NOFILE)[1]}",
                *argv]
    before = load()
    record = driver.measure(argv, sshd_pid, workdir)
    ok, errors = driver.parse_outcome("fleetexec-cli", workdir, n)
    stderr = (workdir / "stderr").read_text(errors="replace")
    record.update(n=n, ok=ok, errors=dict(errors.most_common(5)), load=before,
                  emfile="Too many open files" in stderr or "EMFILE" in stderr)
    return record


def parent_rss(inventory: Path, command: str) -> list[dict[str, Any]]:
    env = dict(driver.CHILD_ENV)
    done = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(inventory), command],
                          capture_output=True, text=True, env=env, timeout=1800, check=False)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if len(rows) != 3:
        raise RuntimeError(f"the RSS script failed: {done.stderr[-800:]}")
    return rows


def report(meta: dict[str, Any], runs: list[dict[str, Any]], rss: list[dict[str, Any]],
           limited: dict[str, Any] | None, args: argparse.Namespace) -> str:
    lines = [f"## fleetexec at scale, {meta['date']}", "",
             f"Machine: {meta['nproc']} CPUs ({meta['cpu']}), kernel {meta['kernel']}, Python "
             f"{meta['python']}; fleetexec git {meta['fleetexec_git']}; command `{args.command}`."
             f" Load (1/5/15 min) before each run in its row.", "",
             "| N | hosts ok | wall s | wall ms/host | client CPU s | CPU ms/host | peak RSS MiB "
             "| sshd CPU s | listen ovf | load before |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for n in args.n:
        mine = [r for r in runs if r["n"] == n]
        wall = statistics.median(r["wall"] for r in mine)
        cpu = statistics.median(r["cpu"] for r in mine)
        oks = ",".join(str(r["ok"]) for r in mine)
        lines.append(f"| {n} | {oks} of {n} | {wall:.2f} | {1000 * wall / n:.2f} | {cpu:.2f} | "
                     f"{1000 * cpu / n:.2f} | {max(r['maxrss_mib'] for r in mine):.0f} | "
                     f"{statistics.median(r['sshd_cpu'] for r in mine):.1f} | "
                     f"{sum(r['overflows'] for r in mine)} | {mine[0]['load']} |")
    small, large = min(args.n), max(args.n)
    if small != large:
        per = {n: statistics.median(r["wall"] for r in runs if r["n"] == n) / n
               for n in (small, large)}
        lines += ["", f"Wall per host at N={large} ÷ at N={small}: {per[large] / per[small]:.2f} "
                      "(1.00 = linear)."]
    lines += ["", f"Parent RSS after each of three `fleetexec.run()` in one process, N={large}: "
              + ", ".join(f"{r['rss_mib']} MiB (ok {r['ok']}, {r['wall']} s)" for r in rss) + "."]
    if limited is not None:
        lines += ["", f"CLI at N={large} with RLIMIT_NOFILE {args.nofile}: ok {limited['ok']} of "
                      f"{large}, wall {limited['wall']:.2f} s, exit {limited['rc']}, "
                      f"EMFILE seen: {'yes' if limited['emfile'] else 'no'}; load before "
                      f"{limited['load']}."]
    failures = [r for r in [*runs, *([limited] if limited else [])] if r["errors"]]
    if failures:
        lines += ["", "Failures:"] + [f"- N={r['n']}: {r['errors']}" for r in failures]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--command", default="true")
    parser.add_argument("--nofile", type=int, default=1024,
                        help="soft RLIMIT_NOFILE of the limited run (0: skip it)")
    parser.add_argument("--no-rss", action="store_true", help="skip the parent RSS runs")
    parser.add_argument("--save", action="store_true",
                        help="also write bench/results/DATE-scale.md")
    args = parser.parse_args()
    ok, why = is_available()
    if not ok:
        sys.exit(f"scale: cannot start a real sshd: {why}")
    ctypes.CDLL(None, use_errno=True).prctl(driver.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    meta = driver.machine()
    runs: list[dict[str, Any]] = []
    with OpenSSHServer(max_startups="4000:30:8000") as sshd, \
            tempfile.TemporaryDirectory(prefix="fleetexec-scale-") as tmp:
        assert sshd.pid is not None
        driver.SKIP_PIDS.add(sshd.pid)
        work = Path(tmp)
        known = work / "known_hosts"
        sshd.write_known_hosts(known, addresses(max(args.n)))
        inventories = {n: sshd.write_inventory(work / f"inv-{n}.yaml", addresses(n),
                                               known_hosts=known) for n in {*args.n, 2}}
        driver.measure(cli_argv(inventories[2], args.command), sshd.pid, work)  # warm-up
        for repeat in range(args.repeats):
            for n in args.n:
                record = run_cli(inventories[n], n, args.command, sshd.pid, work)
                runs.append(record)
                print(f"[{repeat + 1}] N={n}: {record['wall']:.2f} s, ok {record['ok']}/{n}, "
                      f"load {record['load']}", file=sys.stderr, flush=True)
        largest = inventories[max(args.n)]
        rss = [] if args.no_rss else parent_rss(largest, args.command)
        print(f"parent RSS: {rss}", file=sys.stderr, flush=True)
        limited = None
        if args.nofile:
            limited = run_cli(largest, max(args.n), args.command, sshd.pid, work, args.nofile)
            print(f"nofile {args.nofile}: ok {limited['ok']}", file=sys.stderr, flush=True)
    text = report(meta, runs, rss, limited, args)
    print(text)
    if args.save:
        path = Path(__file__).parent / "results" / f"{datetime.date.today()}-scale.md"
        path.write_text(text)


if __name__ == "__main__":
    main()
