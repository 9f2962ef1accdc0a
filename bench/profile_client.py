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
import statistics
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

# (category, test on "file:line(function)") in order: the first that matches wins.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("kex math (X25519, exchange hash, key derivation)", (
        "kex_", "x25519", "X25519", "_compute_key", "_set_K_H", "exchange", "add_mpint",
        "deflate_long", "inflate_long", "_activate_inbound", "_activate_outbound",
        "_get_cipher", "_get_engine", "_parse_newkeys", "_send_kex_init", "_parse_kex_init",
        "built-in method _hashlib", "of '_hashlib", "_negotiate_keys", "sha256", "sha512",
        "urandom", "from_public_bytes", "public_bytes", "generate")),
    ("signatures (host key verify, auth sign)", (
        "pkey.py", "ed25519key.py", "ecdsakey.py", "rsakey.py", "_verify_key", "verify",
        "sign", "from_type_string", "load_public", "_ED25519", "ed25519")),
    ("packet layer (Packetizer, Message, cipher, MAC)", (
        "packet.py", "message.py", "encryptor", "decryptor", "update", "finalize",
        "AESGCM", "aead", "_send_message", "_send_user_message", "hmac", "compute_hmac",
        "_read_all", "_write_all", "read_message", "send_message", "'recv'", "'send'",
        "'sendall'", "_check_keepalive", "_py_inflate", "util.py", "common.py", "byte_",
        "ciphers", "'select'", "'poll'")),
    ("auth (auth_handler, auth strategy, FleetAuth)", (
        "auth_handler.py", "auth_strategy.py", "credentials.py")),
    ("channel / exec / drain", (
        "channel.py", "buffered_pipe.py", "command.py", "sudo.py")),
    ("transport machinery (run loop, handlers, start/close)", (
        "paramiko/transport.py", "paramiko/client.py", "fleetexec/ssh/transport.py",
        "_check_banner", "file.py")),
    ("fleetexec per host (connect, session, known_hosts, results, pacing)", (
        "fleetexec/", "hostkeys.py")),
    ("threads (start, locks, events, queues)", (
        "threading.py", "queue.py", "'acquire'", "'release'", "_thread", "'wait'", "lock")),
    ("socket set-up", ("socket.py", "'connect'", "_socket", "getaddrinfo")),
    ("logging", ("logging/",)),
]


def category(key: tuple[str, int, str]) -> str:
    text = f"{key[0]}:{key[1]}({key[2]})"
    for name, needles in CATEGORIES:
        if any(n in text for n in needles):
            return name
    return "other (builtins, dataclasses, GC, ...)"


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
    table: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    total = python_calls = c_calls = 0.0
    for key, (_cc, calls, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        cat = category(key)
        table[cat][0] += tottime
        table[cat][1] += calls
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
    args = parser.parse_args()
    if args.parallel:
        PARALLEL["parallel"] = args.parallel
    with OpenSSHServer(max_startups="4000:30:8000") as sshd, \
            tempfile.TemporaryDirectory(prefix="fleetexec-prof-") as tmp:
        assert sshd.pid is not None
        inventory = sshd.write_inventory(Path(tmp) / "inv.yaml", addresses(args.n))
        hosts = list(fleetexec.load_inventory(inventory).select())
        run(hosts[:4])  # warm-up: imports, page cache
        plain = [measured(hosts, sshd.pid) for _ in range(args.runs)]
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
    print("\n| category | profiled ms/host | share | scaled to unprofiled ms/host | calls/host |")
    print("|---|---|---|---|---|")
    for cat, (seconds, calls) in sorted(table.items(), key=lambda item: -item[1][0]):
        share = seconds / total
        print(f"| {cat} | {seconds / n * 1000:.3f} | {share:.1%} | {share * client:.2f} | "
              f"{calls / n:.0f} |")
    print(f"\ntop {args.top} functions by own time (per host):\n")
    print("| function | calls/host | own µs/host | cumulative µs/host | category |")
    print("|---|---|---|---|---|")
    rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])  # type: ignore[attr-defined]
    for key, (_cc, calls, tottime, cumtime, _callers) in rows[:args.top]:
        name = f"{os.path.basename(key[0])}:{key[1]}({key[2]})" if key[0] != "~" else key[2]
        print(f"| `{name}` | {calls / n:.1f} | {tottime / n * 1e6:.0f} | {cumtime / n * 1e6:.0f}"
              f" | {category(key).split(' (')[0]} |")
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
