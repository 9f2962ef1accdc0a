"""Where the client's CPU per host goes: fleetexec in-process on N hosts running `true`.

    python bench/profile_client.py                  # N=200: 3 plain runs, 1 profiled, the split
    python bench/profile_client.py --n 200 --runs 5 --top 40 --pstats /tmp/client.pstats

One real sshd (ed25519 host key) on N loopback hosts, as bench.py has it. First `--runs`
unprofiled runs: CPU per host of this process (`getrusage`, every thread) and of the sshd.
Then one run under cProfile, with a profiler in every thread (each session thread and each
paramiko transport thread gets its own, started in `Thread._bootstrap_inner`), merged; its
clock is each thread's CPU time (`time.thread_time`), so time blocked in a lock, a queue or
`recv` is not counted. It
prints the Python function calls per host (C functions counted apart), the own time per host
split into categories by the file or name of each function, scaled to the unprofiled CPU per
host (cProfile inflates every call, so the scaled split over-weights code that makes many
small calls: read it as a ranking), and the top functions.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import bench  # beside this file: /proc readings

import fleetexec
from fleetexec.backends.inprocess import InProcessBackend
from fleetexec.testing.sshd import OpenSSHServer, addresses

# Anchors: a function whose (file, name) matches is charged to the category; any other
# function's own time goes to the category of its callers (by the time each caller spent in
# it, up the call graph), so Message building inside the key exchange counts as kex, inside
# auth as auth. First match wins.
Key = tuple[str, int, str]
ANCHORS: list[tuple[str, list[tuple[str, str]]]] = [
    ("thread switching: lock waits, GIL hand-offs", [
        ("~", "acquire' of '_thread.lock"), ("~", "acquire' of '_thread.RLock"),
        ("~", "get' of '_queue.SimpleQueue")]),
    ("socket syscalls (recv/send/poll, kernel TCP)", [
        ("~", "'recv' of '_socket"), ("~", "'send' of '_socket"), ("~", "'sendall' of"),
        ("~", "'poll' of 'select"), ("~", "'shutdown' of '_socket"), ("~", "'connect' of"),
        ("~", "getaddrinfo"), ("~", "'settimeout' of"), ("~", "'setsockopt' of")]),
    ("thread start-up", [("threading.py", "start"), ("~", "start_new_thread")]),
    ("signatures: host key verify, auth signature", [
        ("transport.py", "_verify_key"), ("pkey.py", "from_type_string"),
        ("ed25519key.py", ""), ("ecdsakey.py", ""), ("rsakey.py", ""), ("pkey.py", "sign"),
        ("auth_handler.py", "_get_session_blob")]),
    ("kex: key agreement, exchange hash, key derivation, negotiation", [
        ("kex_", ""), ("transport.py", "_compute_key"), ("transport.py", "_activate_"),
        ("transport.py", "_send_kex_init"), ("transport.py", "_parse_kex_init"),
        ("transport.py", "_negotiate_keys"), ("transport.py", "_parse_newkeys"),
        ("transport.py", "_set_K_H"), ("transport.py", "_get_engine"),
        ("transport.py", "_get_cipher")]),
    ("packet layer: Packetizer, cipher, framing", [("packet.py", "")]),
    ("auth: paramiko auth handler, FleetAuth", [
        ("auth_handler.py", ""), ("auth_strategy.py", ""), ("credentials.py", "")]),
    ("channel, exec, drain", [
        ("channel.py", ""), ("buffered_pipe.py", ""), ("fleetexec/ssh/command.py", ""),
        ("transport.py", "open_session"), ("transport.py", "open_channel"),
        ("transport.py", "_parse_channel_"), ("fleetexec/ssh/transport.py", "_handle_channel")]),
    ("fleetexec: connect, session, known_hosts, results, API, watchdog", [
        ("fleetexec/", "")]),
    ("paramiko transport/client: thread loop, start, close, host keys", [
        ("paramiko/transport.py", ""), ("paramiko/client.py", ""), ("paramiko/hostkeys.py", "")]),
]
OTHER = "other (interpreter, profiler roots)"
BLOCKING = {ANCHORS[0][0], ANCHORS[1][0]}  # lock waits, socket syscalls


def anchor(key: Key) -> str | None:
    """The category `key` is charged to by itself, or None (then: its callers')."""
    path, _line, name = key
    for category, tests in ANCHORS:
        for where, what in tests:
            if (where == "~" and path == "~" and what in name) or (
                    where != "~" and where in path and what in name):
                return category
    return None


def attribute(stats: pstats.Stats) -> dict[str, list[float]]:
    """Own time and calls per category, own time charged to anchors up the call graph."""
    table: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    entries = stats.stats  # type: ignore[attr-defined]
    memo: dict[Key, dict[str, float]] = {}

    def shares(key: Key, seen: frozenset[Key]) -> dict[str, float]:
        """How `key`'s time divides among categories (fractions summing to 1)."""
        if key in memo:
            return memo[key]
        own = anchor(key)
        if own is not None:
            return {own: 1.0}
        callers = entries.get(key, (0, 0, 0, 0, {}))[4]
        weights = {c: edge[3] for c, edge in callers.items() if c not in seen}
        total = sum(weights.values())
        if not total:
            return {OTHER: 1.0}
        found: dict[str, float] = defaultdict(float)
        for caller, weight in weights.items():
            for category, fraction in shares(caller, seen | {key}).items():
                found[category] += fraction * weight / total
        if not seen:
            memo[key] = dict(found)
        return found

    for key, (_cc, calls, tottime, _ct, _callers) in entries.items():
        for category, fraction in shares(key, frozenset()).items():
            table[category][0] += tottime * fraction
            table[category][1] += calls * fraction
    return table


class ThreadProfiles:
    """A cProfile.Profile in every thread started while active (and in this thread)."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()
        self._original = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def __enter__(self) -> ThreadProfiles:
        original, profiles, lock = self._original, self.profiles, self._lock

        def bootstrap(thread: threading.Thread) -> None:
            profile = cProfile.Profile(time.thread_time)  # CPU, not waiting
            with lock:
                profiles.append(profile)
            profile.enable()
            try:
                original(thread)
            finally:
                profile.disable()

        threading.Thread._bootstrap_inner = bootstrap  # type: ignore[attr-defined]
        self.main = cProfile.Profile(time.thread_time)
        self.main.enable()
        return self

    def __exit__(self, *exc: object) -> None:
        self.main.disable()
        threading.Thread._bootstrap_inner = self._original  # type: ignore[attr-defined]

    def stats(self) -> pstats.Stats:
        merged = pstats.Stats(self.main)
        with self._lock:
            for profile in self.profiles:
                with contextlib.suppress(TypeError):  # a thread that never made a call
                    merged.add(profile)
        return merged


PARALLEL: dict[str, int] = {}  # --parallel: sessions in flight (default: fleetexec's)


def run(hosts: list[fleetexec.Host]) -> fleetexec.FleetResult:
    return fleetexec.run(hosts, "true", system_known_hosts=False, command_timeout=120,
                         connect_timeout=60, backend=InProcessBackend(), **PARALLEL)


def measured(hosts: list[fleetexec.Host], sshd_pid: int) -> dict[str, float]:
    """One unprofiled run: CPU (user, sys), context switches and sshd CPU, per host."""
    bench.wait_sshd_idle(sshd_pid)
    load = os.getloadavg()[0]
    before, sshd0 = resource.getrusage(resource.RUSAGE_SELF), bench.process_cpu(sshd_pid)
    wall0 = time.perf_counter()
    result = run(hosts)
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - wall0
    bench.wait_sshd_idle(sshd_pid)
    n = len(hosts)
    bad = [r for r in result.values() if not r.ok]
    if bad:
        raise SystemExit(f"{len(bad)} hosts failed: {bad[0].status} {bad[0].error}")
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return {"client_ms": (user + system) / n * 1000, "user_ms": user / n * 1000,
            "sys_ms": system / n * 1000,
            "voluntary_cs": (after.ru_nvcsw - before.ru_nvcsw) / n,
            "involuntary_cs": (after.ru_nivcsw - before.ru_nivcsw) / n,
            "sshd_ms": (bench.process_cpu(sshd_pid) - sshd0) / n * 1000, "wall": wall,
            "load": load}


def split(stats: pstats.Stats, n: int) -> tuple[dict[str, list[float]], float, float, float]:
    """Per category: [own seconds, calls]; plus total own time, Python calls, C calls."""
    table = attribute(stats)
    total = python_calls = c_calls = 0.0
    for key, (_cc, calls, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        total += tottime
        if key[0] == "~":  # built-in (C) functions
            c_calls += calls
        else:
            python_calls += calls
    return table, total, python_calls / n, c_calls / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3, help="unprofiled runs")
    parser.add_argument("--top", type=int, default=30, help="functions listed by own time")
    parser.add_argument("--pstats", metavar="FILE", help="save the merged profile")
    parser.add_argument("--parallel", type=int, help="sessions in flight (default: fleetexec's)")
    parser.add_argument("--no-profile", action="store_true", help="the unprofiled runs only")
    parser.add_argument("--json", metavar="FILE", help="write the unprofiled runs as JSON")
    parser.add_argument("--perf", metavar="FILE",
                        help="`perf record` this process during the unprofiled runs into FILE")
    parser.add_argument("--switch-interval", type=float,
                        help="sys.setswitchinterval (the GIL's; Python's default 0.005 s)")
    args = parser.parse_args()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    if args.parallel:
        PARALLEL["parallel"] = args.parallel
    with OpenSSHServer(max_startups="4000:30:8000") as sshd, \
            tempfile.TemporaryDirectory(prefix="fleetexec-prof-") as tmp:
        assert sshd.pid is not None
        inventory = sshd.write_inventory(Path(tmp) / "inv.yaml", addresses(args.n))
        hosts = list(fleetexec.load_inventory(inventory).select())
        run(hosts[:4])  # warm-up: imports, page cache
        perf = None
        if args.perf:  # sampled by the kernel: no per-call bias, C and kernel code included
            perf = subprocess.Popen(["perf", "record", "-F", "1999", "-o", args.perf, "-p",
                                     str(os.getpid())], stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # perf attaches to every thread that exists and every new one
        plain = [measured(hosts, sshd.pid) for _ in range(args.runs)]
        if perf is not None:
            perf.send_signal(signal.SIGINT)
            perf.wait()
        client = statistics.median(r["client_ms"] for r in plain)
        print(f"unprofiled, {len(plain)} runs, N={args.n}, parallel "
              f"{args.parallel or 'default'}: median client CPU {client:.2f} ms/host")
        print("| run | client CPU ms/host | user | sys | voluntary cs/host | involuntary cs/host |"
              " sshd CPU ms/conn | wall s | load |")
        print("|---|---|---|---|---|---|---|---|---|")
        for i, r in enumerate(plain, 1):
            print(f"| {i} | {r['client_ms']:.2f} | {r['user_ms']:.2f} | {r['sys_ms']:.2f} | "
                  f"{r['voluntary_cs']:.1f} | {r['involuntary_cs']:.1f} | {r['sshd_ms']:.2f} | "
                  f"{r['wall']:.2f} | {r['load']:.1f} |")
        if args.json:
            Path(args.json).write_text(json.dumps(plain))
        if args.no_profile:
            return
        bench.wait_sshd_idle(sshd.pid)
        with ThreadProfiles() as profiles:
            result = run(hosts)
        assert all(r.ok for r in result.values())
        stats = profiles.stats()
    if args.pstats:
        stats.dump_stats(args.pstats)
    n = args.n
    table, total, py_calls, c_calls = split(stats, n)
    print(f"profiled: {py_calls:.0f} Python function calls/host, {c_calls:.0f} C function "
          f"calls/host; own time {total / n * 1000:.2f} ms/host under cProfile")
    # The blocking categories (lock waits, socket calls) are not scaled: under cProfile a
    # thread's clock also advances while it waits in them (an idle watchdog thread showed
    # 2 ms/host there, 0 in /proc unprofiled), so the kernel's user/sys split stands for
    # them; the Python-level categories share the unprofiled *user* time.
    user = statistics.median(r["user_ms"] for r in plain)
    python_level = sum(sec for cat, (sec, _c) in table.items() if cat not in BLOCKING)
    print("\n| category | profiled ms/host | share of profiled | share of user CPU | "
          f"≈ ms/host of the unprofiled user {user:.2f} | calls/host |")
    print("|---|---|---|---|---|---|")
    for cat, (seconds, calls) in sorted(table.items(), key=lambda item: -item[1][0]):
        share = seconds / total
        level = "" if cat in BLOCKING else f"{seconds / python_level:.1%}"
        scaled = "(sys time)" if cat in BLOCKING else f"{seconds / python_level * user:.2f}"
        print(f"| {cat} | {seconds / n * 1000:.3f} | {share:.1%} | {level} | {scaled} | "
              f"{calls / n:.0f} |")
    print(f"\ntop {args.top} functions by own time (per host):\n")
    print("| function | calls/host | own µs/host | cumulative µs/host | category |")
    print("|---|---|---|---|---|")
    rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])  # type: ignore[attr-defined]
    for key, (_cc, calls, tottime, cumtime, _callers) in rows[:args.top]:
        name = f"{os.path.basename(key[0])}:{key[1]}({key[2]})" if key[0] != "~" else key[2]
        print(f"| `{name}` | {calls / n:.1f} | {tottime / n * 1e6:.0f} | {cumtime / n * 1e6:.0f}"
              f" | {(anchor(key) or '-').split(':')[0].split(' (')[0]} |")
    print("\nmost called (per host):\n")
    print("| function | calls/host | own µs/host |")
    print("|---|---|---|")
    rows = sorted(stats.stats.items(), key=lambda item: -item[1][1])  # type: ignore[attr-defined]
    for key, (_cc, calls, tottime, _cumtime, _callers) in rows[:args.top]:
        name = f"{os.path.basename(key[0])}:{key[1]}({key[2]})" if key[0] != "~" else key[2]
        print(f"| `{name}` | {calls / n:.1f} | {tottime / n * 1e6:.0f} |")
    print(f"\nuptime: {bench._output(['uptime'])}", file=sys.stderr)


if __name__ == "__main__":
    main()
