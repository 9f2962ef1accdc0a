"""Connection reuse: a second command over kept connections, against a first over fresh ones.

One real sshd serving N loopback hosts. Measures, in one run:
- fleetexec `FleetSession`: the first `run()` (connects) and the next ones (reuse);
- fleetexec CLI `--persist`: the first call (starts the agent, connects) and the next;
- fleetexec `run()` (fresh connections every time), the baseline;
- asyncssh with its connections kept open, the peer: connect all, then one command
  on every kept connection (at most 128 in flight, as in bench.py).
Prints wall seconds and ratios: first / reused (the speed-up reuse buys) and
fleetexec reused / asyncssh reused (< 1.00: fleetexec faster).

Then, with `--pairs K` (default 5), the two kept-connection runs side by side: one
`FleetSession` and one set of asyncssh connections open at once, and K rounds that
each run the command once over each (the order alternating), so both see the same
machine; medians of wall and client CPU (this process, plus the workers for fleetexec).

    python bench/reuse.py [--n 500] [--command true] [--repeats 3] [--pairs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import fleetexec
from fleetexec.testing.sshd import OpenSSHServer, addresses


def timed(action: object) -> tuple[float, object]:
    begin = time.perf_counter()
    value = action()  # type: ignore[operator]
    return time.perf_counter() - begin, value


def ok_count(result: fleetexec.FleetResult) -> int:
    return len(result.succeeded)


def cli_run(inventory: Path, command: str, env: dict[str, str]) -> int:
    done = subprocess.run(
        [sys.executable, "-m", "fleetexec", "run", "-i", str(inventory), "--no-system-known-hosts",
         "--persist", "-o", "json", "--", command],
        capture_output=True, text=True, env=env, check=False)
    return int(json.loads(done.stdout)["summary"]["counts"].get("ok", 0))


class _Asyncssh:
    """asyncssh as a careful user drives it: options parsed once, 128 in flight."""

    def __init__(self, port: int, user: str, key: Path, known: Path, command: str) -> None:
        import asyncssh

        self.port, self.command = port, command
        self.options = asyncssh.SSHClientConnectionOptions(
            username=user, known_hosts=asyncssh.read_known_hosts(str(known)),
            client_keys=[asyncssh.read_private_key(str(key))], agent_path=None, config=[])
        self.limit = asyncio.Semaphore(128)

    async def connect_all(self, hosts: list[str]) -> list[Any]:
        import asyncssh

        async def connect(host: str) -> asyncssh.SSHClientConnection:
            async with self.limit:
                return await asyncssh.connect(host, self.port, options=self.options)

        return list(await asyncio.gather(*(connect(h) for h in hosts)))

    async def run_all(self, conns: list[Any]) -> int:
        async def run(conn: Any) -> bool:
            async with self.limit:
                return bool((await conn.run(self.command, check=False)).exit_status == 0)

        return sum(await asyncio.gather(*(run(c) for c in conns)))


async def asyncssh_reused(hosts: list[str], port: int, user: str, key: Path, known: Path,
                          command: str) -> tuple[float, float, int]:
    client = _Asyncssh(port, user, key, known, command)
    begin = time.perf_counter()
    conns = await client.connect_all(hosts)
    await client.run_all(conns)
    first = time.perf_counter() - begin
    begin = time.perf_counter()
    oks = await client.run_all(conns)
    reused = time.perf_counter() - begin
    for conn in conns:
        conn.close()
    return first, reused, oks


def _tree_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its live descendants (and what they reaped)."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        total = sum(int(x) for x in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1]
                    .split()[11:15]) / tick
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += _tree_cpu(int(child))
    except OSError:
        return 0.0
    return total


def _client_cpu(sshd_pid: int) -> float:
    """This process's CPU plus its children's but the sshd's (the FleetSession's workers)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    mine = usage.ru_utime + usage.ru_stime
    children = sum(_tree_cpu(int(c)) for task in Path(f"/proc/{os.getpid()}/task").iterdir()
                   for c in (task / "children").read_text().split() if int(c) != sshd_pid)
    return mine + children


def side_by_side(selected: list[fleetexec.Host], hosts: list[str], port: int, user: str,
                 key: Path, known: Path, command: str, pairs: int,
                 sshd_pid: int) -> dict[str, list[tuple[float, float]]]:
    """Kept connections on both sides at once, then `pairs` alternating rounds."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    client = _Asyncssh(port, user, key, known, command)
    found: dict[str, list[tuple[float, float]]] = {"fleetexec": [], "asyncssh": []}
    with fleetexec.FleetSession(selected, system_known_hosts=False) as session:
        assert ok_count(session.run(command)) == len(selected)  # noqa: S101
        conns = loop.run_until_complete(client.connect_all(hosts))
        loop.run_until_complete(client.run_all(conns))
        steps = {"fleetexec": lambda: ok_count(session.run(command)),
                 "asyncssh": lambda: loop.run_until_complete(client.run_all(conns))}
        for round_ in range(pairs):
            for name in (("fleetexec", "asyncssh") if round_ % 2 == 0
                         else ("asyncssh", "fleetexec")):
                time.sleep(0.5)  # the sshd's session processes exit
                cpu = _client_cpu(sshd_pid)
                seconds, ok = timed(steps[name])
                found[name].append((seconds, _client_cpu(sshd_pid) - cpu))
                print(f"side by side, {name}: {seconds:.2f} s, ok {ok}/{len(hosts)}",
                      file=sys.stderr)
        for conn in conns:
            conn.close()
    loop.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--command", default="true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=5,
                        help="alternating rounds over kept connections on both sides (0: none)")
    args = parser.parse_args()
    rows: dict[str, list[float]] = {}

    loads: list[float] = []

    def add(name: str, seconds: float, ok: int) -> None:
        rows.setdefault(name, []).append(seconds)
        loads.append(float(Path("/proc/loadavg").read_text().split()[0]))
        print(f"{name}: {seconds:.2f} s, ok {ok}/{args.n}", file=sys.stderr)

    with OpenSSHServer(max_startups="4000:30:8000") as sshd, \
            tempfile.TemporaryDirectory() as tmp:
        hosts = addresses(args.n)
        inventory = sshd.write_inventory(Path(tmp) / "inventory.yaml", hosts)
        known = Path(tmp) / "known_hosts"
        selected = fleetexec.load_inventory(inventory).select()
        env = dict(os.environ, XDG_RUNTIME_DIR=tmp)
        (Path(tmp) / "fleetexec").mkdir(mode=0o700)
        for _ in range(args.repeats):
            seconds, result = timed(lambda: fleetexec.run(selected, args.command,
                                                          system_known_hosts=False))
            add("fleetexec run() (fresh connections)", seconds, ok_count(result))
            with fleetexec.FleetSession(selected, system_known_hosts=False) as session:
                seconds, result = timed(lambda: session.run(args.command))
                add("FleetSession first run", seconds, ok_count(result))
                seconds, result = timed(lambda: session.run(args.command))
                add("FleetSession second run", seconds, ok_count(result))
            seconds, ok = timed(lambda: cli_run(inventory, args.command, env))
            add("CLI --persist first call", seconds, ok)  # type: ignore[arg-type]
            seconds, ok = timed(lambda: cli_run(inventory, args.command, env))
            add("CLI --persist second call", seconds, ok)  # type: ignore[arg-type]
            subprocess.run([sys.executable, "-m", "fleetexec", "agent", "stop"], env=env,
                           capture_output=True, check=False)
            first, reused, ok = asyncio.run(asyncssh_reused(
                hosts, sshd.port, sshd.user, sshd.client_key_path, known, args.command))
            add("asyncssh first (connect + run)", first, ok)
            add("asyncssh second run (kept)", reused, ok)
        assert sshd.pid is not None  # noqa: S101
        pairs = side_by_side(selected, hosts, sshd.port, sshd.user, sshd.client_key_path,
                             known, args.command, args.pairs, sshd.pid) if args.pairs else {}

    median = {name: statistics.median(values) for name, values in rows.items()}
    print(f"N = {args.n}, command `{args.command}`, {args.repeats} repeats, median wall seconds\n")
    print("| run | wall s |\n|---|---|")
    for name, value in median.items():
        print(f"| {name} | {value:.2f} |")
    print()
    session = median["FleetSession first run"] / median["FleetSession second run"]
    persist = median["CLI --persist first call"] / median["CLI --persist second call"]
    peer = median["FleetSession second run"] / median["asyncssh second run (kept)"]
    print(f"- FleetSession: second run {session:.1f}x faster than the first")
    print(f"- CLI --persist: second call {persist:.1f}x faster than the first")
    print(f"- reused run, FleetSession / asyncssh (kept connections): {peer:.2f}")
    if pairs:
        wall = {name: statistics.median(w for w, _ in runs) for name, runs in pairs.items()}
        cpu = {name: statistics.median(c for _, c in runs) for name, runs in pairs.items()}
        print(f"\nSide by side over kept connections, {args.pairs} alternating rounds, medians:\n")
        print("| client | wall s | client CPU s |\n|---|---|---|")
        for name in pairs:
            walls = ", ".join(f"{w:.2f}" for w, _ in pairs[name])
            print(f"| {name} | {wall[name]:.2f} ({walls}) | {cpu[name]:.2f} |")
        print(f"\n- side by side, fleetexec / asyncssh: wall "
              f"{wall['fleetexec'] / wall['asyncssh']:.2f}, client CPU "
              f"{cpu['fleetexec'] / cpu['asyncssh']:.2f}")
    print(f"- load average (1 min) after each run: {min(loads):.1f}–{max(loads):.1f} "
          f"(median {statistics.median(loads):.1f}); fleetexec git {_git()}")


def _git() -> str:
    done = subprocess.run(["git", "-C", str(Path(__file__).parent), "describe", "--always",
                           "--dirty"], capture_output=True, text=True, check=False)
    return done.stdout.strip()


if __name__ == "__main__":
    main()
