"""Client CPU per host against sessions in flight: where fleetexec's CPU gap to asyncssh comes from.

One real sshd serving N loopback hosts, `true` on each, fresh connections. For each
in-flight limit C, in one run and alternating: the fleetexec CLI with `--parallel C`
in one worker process, and with `--parallel C` and its default processes (one per
core); asyncssh with a semaphore of C (`peers/peer_asyncssh.py --concurrency C`).
Prints, per C, medians over the repeats of wall, client CPU per host (the client's
whole process tree) and voluntary context switches per host, and fleetexec's CPU ratio
to asyncssh at the same C (< 1.00: fleetexec cheaper).

    python bench/concurrency.py [--n 300] [--inflight 1 8 32 128] [--repeats 2]
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import tempfile
from pathlib import Path

import bench

from fleetexec.testing.sshd import OpenSSHServer

CLIENTS = ("fleetexec, 1 process", "fleetexec, default processes", "asyncssh")


def argv_of(fleet: bench.Fleet, client: str, n: int, inflight: int) -> list[str]:
    if client == "asyncssh":
        argv = fleet.peer_argv("asyncssh", n, "true")
        argv[argv.index("--concurrency") + 1] = str(inflight)
        return argv
    argv = fleet.peer_argv("fleetexec-cli", n, "true")
    one = ["--processes", "1"] if client == "fleetexec, 1 process" else []
    return [*argv[:2], "--parallel", str(inflight), *one, *argv[2:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--inflight", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    n = args.n
    ctypes.CDLL(None, use_errno=True).prctl(bench.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    with OpenSSHServer(max_startups="4000:30:8000") as sshd, \
            tempfile.TemporaryDirectory() as tmp:
        bench.SKIP_PIDS.add(sshd.pid)
        fleet = bench.Fleet(sshd, [n], Path(tmp))
        for repeat in range(args.repeats):
            for inflight in args.inflight:
                order = CLIENTS if repeat % 2 == 0 else CLIENTS[::-1]
                for client in order:
                    record = bench.measure(argv_of(fleet, client, n, inflight), sshd.pid,
                                           Path(tmp))
                    peer = "asyncssh" if client == "asyncssh" else "fleetexec-cli"
                    ok, errors = bench.parse_outcome(peer, Path(tmp), n)
                    if ok != n:
                        sys.exit(f"{client} at {inflight} in flight: {ok} of {n} ok: "
                                 f"{dict(errors)}")
                    runs.setdefault((client, inflight), []).append(record)
                    print(f"[{repeat + 1}/{args.repeats}] {client}, {inflight} in flight: "
                          f"{record['wall']:.2f} s, cpu {record['cpu']:.2f} s", file=sys.stderr)
    print(f"### `true` on {n} hosts, fresh connections, medians of {args.repeats}\n")
    print("| in flight | client | wall s | CPU ms/host | context switches/host | "
          "CPU ratio to asyncssh |")
    print("|---|---|---|---|---|---|")
    for inflight in args.inflight:
        def median(client: str, key: str, inflight: int = inflight) -> float:
            return statistics.median(r[key] for r in runs[(client, inflight)])

        peer_cpu = median("asyncssh", "cpu")
        for client in CLIENTS:
            cpu = median(client, "cpu")
            ratio = "–" if client == "asyncssh" else f"{cpu / peer_cpu:.2f}"
            print(f"| {inflight} | {client} | {median(client, 'wall'):.2f} | "
                  f"{cpu / n * 1000:.2f} | {median(client, 'vcsw') / n:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
