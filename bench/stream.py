"""Live output (`-o stream`): what it costs, and how late lines reach the terminal.

One real sshd serving N loopback hosts. In one run, alternating:
- the CLI with `-o table` and with `-o stream`, each host printing 20 lines:
  wall seconds and client CPU (user+sys of the CLI and its workers, via wait4), as a
  ratio stream / table;
- latency: once all are connected, each host prints `EPOCH` timestamps (`date +%s.%N`)
  every 0.2 s for 2 s;
  the reader notes when each `host: EPOCH` line reaches it. Reported as p50 / p99 /
  max of (arrival − remote timestamp), which includes the SSH transit on loopback.

    python bench/stream.py [--n 500] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fleetexec.testing.sshd import OpenSSHServer, addresses

FLEETEXEC = str(Path(sys.executable).parent / "fleetexec")
LINES = 'i=0; while [ $i -lt 20 ]; do echo "line $i of some output"; i=$((i+1)); done'
# The ticks start once every host is connected (the handshakes of N hosts saturate the two
# cores for a few seconds, and that lag is the sshd's, not the pipeline's); one perl per
# host prints them, since a shell loop would fork `date` and `sleep` 5000 times a second
# at N=500 and measure the server's fork rate instead.
TICKS = ("sleep {settle}; perl -MTime::HiRes=time,sleep -e "
         "'$|=1; for (1..10) {{ printf qq(%.6f\\n), time; sleep 0.2 }}'")


def measured(argv: list[str]) -> tuple[float, float, str]:
    """Wall seconds, client CPU seconds (the CLI and its workers), stdout."""
    begin = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - begin
        out.seek(0)
        return wall, usage.ru_utime + usage.ru_stime, out.read().decode(errors="replace")


def latencies(argv: list[str]) -> list[float]:
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, bufsize=1)
    found = []
    assert process.stdout is not None
    for line in process.stdout:
        arrived = time.time()
        _, _, text = line.partition(": ")
        try:
            found.append(arrived - float(text))
        except ValueError:
            continue
    process.wait()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with OpenSSHServer() as sshd, tempfile.TemporaryDirectory() as tmp:
        inventory = sshd.write_inventory(Path(tmp) / "inv.yaml", addresses(args.n))
        base = [FLEETEXEC, "run", "-i", str(inventory), "--no-system-known-hosts",
                "--no-save", "-t", "120", "--connect-timeout", "60"]
        rows: dict[str, list[tuple[float, float]]] = {"table": [], "stream": []}
        for _ in range(args.repeats):
            for fmt in ("table", "stream"):
                wall, cpu, out = measured([*base, "-o", fmt, "--", LINES])
                if fmt == "stream":
                    assert out.count(" of some output") == 20 * args.n, "lost lines"
                rows[fmt].append((wall, cpu))
        lag = latencies([*base, "-o", "stream", "--", TICKS.format(settle=4 + args.n // 50)])
    print(f"## -o stream vs -o table, N={args.n}, 20 lines per host, "
          f"median of {args.repeats}\n")
    print("| format | wall s | client CPU s | CPU ms/host |")
    print("|---|---|---|---|")
    med = {fmt: (statistics.median(w for w, _ in r), statistics.median(c for _, c in r))
           for fmt, r in rows.items()}
    for fmt, (wall, cpu) in med.items():
        print(f"| {fmt} | {wall:.2f} | {cpu:.2f} | {1000 * cpu / args.n:.1f} |")
    print(f"\nratio stream / table: wall {med['stream'][0] / med['table'][0]:.2f}, "
          f"CPU {med['stream'][1] / med['table'][1]:.2f}")
    lag.sort()
    print(f"\nlatency of {len(lag)} timestamp lines ({args.n} hosts x 10, one every 0.2 s), "
          f"remote print to terminal: p50 {1000 * statistics.median(lag):.1f} ms, "
          f"p99 {1000 * lag[int(len(lag) * 0.99) - 1]:.1f} ms, max {1000 * lag[-1]:.1f} ms")


if __name__ == "__main__":
    main()
