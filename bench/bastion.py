"""N hosts behind one bastion: fleetexec -J against `xargs -P 128 ssh -J` and asyncssh.

    python bench/bastion.py --n 500 --repeats 2

One sshd (LogLevel VERBOSE) serves the bastion on 127.0.0.2 and the targets on
127.0.1.x; every client goes to the targets through the bastion. Besides wall
time, client CPU and sshd CPU (as `bench.py` measures them), it counts the
handshakes the bastion saw (sshd's "Connection from ... on 127.0.0.2" lines):
`ssh -J` makes one per target, asyncssh's `tunnel=` one in all, fleetexec one
per worker process. Prints a Markdown table with fleetexec's ratios.
"""

from __future__ import annotations

import argparse
import ctypes
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import (
    CONCURRENCY,
    FLEETEXEC,
    PEERS_DIR,
    PR_SET_CHILD_SUBREAPER,
    SKIP_PIDS,
    SSH_WRAPPER,
    machine_busy,
    measure,
    parse_outcome,
)

from fleetexec.testing.sshd import OpenSSHServer, addresses, is_available

BASTION = "127.0.0.2"
PEERS = ["fleetexec-cli", "asyncssh-tunnel", "xargs-ssh-J"]


def handshakes(server: OpenSSHServer) -> int:
    """Connections the sshd has accepted on the bastion's address so far."""
    log = server.log_path.read_text(errors="replace")
    return len(re.findall(rf"Connection from \S+ port \d+ on {re.escape(BASTION)} port ", log))


def argv(peer: str, server: OpenSSHServer, work: Path, n: int, command: str) -> list[str]:
    hosts, known = work / f"hosts-{n}.txt", work / "known_hosts"
    jump = f"{server.user}@{BASTION}:{server.port}"
    if peer == "fleetexec-cli":
        return [FLEETEXEC, "run", "-i", str(work / f"inventory-{n}.yaml"), "-J", jump,
                "--known-hosts", str(known), "-k", str(server.client_key_path),
                "--no-system-known-hosts", "--no-ssh-config", "-o", "json", "-t", "120",
                "--connect-timeout", "60", "--", command]
    if peer == "asyncssh-tunnel":
        return [sys.executable, str(PEERS_DIR / "peer_asyncssh_tunnel.py"), "--hosts",
                str(hosts), "--port", str(server.port), "--user", server.user,
                "--key", str(server.client_key_path), "--known-hosts", str(known),
                "--bastion", BASTION, "--concurrency", str(CONCURRENCY), "--command", command]
    # ssh -J starts a second ssh for the bastion, which reads only -F of our options.
    config = work / "ssh_config"
    config.write_text(
        f"Host *\n  Port {server.port}\n  User {server.user}\n"
        f"  IdentityFile {server.client_key_path}\n  IdentitiesOnly yes\n  BatchMode yes\n"
        f"  StrictHostKeyChecking yes\n  UserKnownHostsFile {known}\n"
        "  GlobalKnownHostsFile /dev/null\n  KexAlgorithms curve25519-sha256\n"
        "  ConnectTimeout 60\n")
    return ["xargs", "-P", str(CONCURRENCY), "-a", str(hosts), "-I", "{}", "sh", "-c",
            SSH_WRAPPER, "sh", "{}", command, "-F", str(config), "-J", jump]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[500])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--command", default="true")
    parser.add_argument("--peers", nargs="+", default=PEERS, choices=PEERS)
    args = parser.parse_args()
    PEERS[:] = args.peers
    usable, why = is_available()
    if not usable:
        sys.exit(f"bench: cannot start a real sshd: {why}")
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="fleetexec-bastion-") as tmp, OpenSSHServer(
            extra_config=["LogLevel VERBOSE"]) as server:
        work = Path(tmp)
        assert server.pid is not None
        SKIP_PIDS.add(server.pid)
        for n in args.n:
            (work / f"hosts-{n}.txt").write_text("\n".join(addresses(n)) + "\n")
            server.write_inventory(work / f"inventory-{n}.yaml", addresses(n),
                                   known_hosts=work / "known_hosts")
        server.write_known_hosts(work / "known_hosts", [BASTION, *addresses(max(args.n))])
        for _ in range(args.repeats):
            for n in args.n:
                for peer in PEERS:
                    run_dir = work / f"{peer}-{n}"
                    run_dir.mkdir(exist_ok=True)
                    before, busy = handshakes(server), machine_busy()
                    record = measure(argv(peer, server, work, n, args.command), server.pid,
                                     run_dir)
                    ok, errors = parse_outcome(
                        "fleetexec-cli" if peer.startswith("fleetexec") else
                        "xargs-ssh" if peer.startswith("xargs") else "python", run_dir, n)
                    record.update(ok=ok, errors=dict(errors.most_common(3)),
                                  handshakes=handshakes(server) - before,
                                  busy=round(machine_busy() - busy, 2))
                    rows.setdefault((peer, n), []).append(record)
                    print(f"{peer} N={n}: {record['wall']:.2f}s wall, {record['cpu']:.2f}s CPU,"
                          f" {ok}/{n} ok, {record['handshakes']} bastion handshakes",
                          file=sys.stderr)
    print(table(rows, args))


def table(rows: dict[tuple[str, int], list[dict[str, Any]]], args: argparse.Namespace) -> str:
    lines = [f"`{args.command}` through one bastion, medians of {args.repeats} runs; ratio = "
             "fleetexec ÷ peer (below 1.00: fleetexec is faster / cheaper)", "",
             "| N | client | wall s | client CPU s | sshd CPU s | bastion handshakes | ok | "
             "wall ratio | CPU ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for n in args.n:
        ours = rows[("fleetexec-cli", n)]
        for peer in PEERS:
            runs = rows[(peer, n)]

            def median(key: str, of: list[dict[str, Any]] = runs) -> float:
                return float(statistics.median(r[key] for r in of))

            ratio = "" if peer == "fleetexec-cli" else (
                f"{median('wall', ours) / median('wall'):.2f} | "
                f"{median('cpu', ours) / median('cpu'):.2f}")
            lines.append(
                f"| {n} | {peer} | {median('wall'):.2f} | {median('cpu'):.2f} | "
                f"{median('sshd_cpu'):.2f} | {int(median('handshakes'))} | "
                f"{min(r['ok'] for r in runs)}/{n} | {ratio or '- | -'} |")
        errors = {peer: [r["errors"] for r in rows[(peer, n)] if r["errors"]] for peer in PEERS
                  if any(r["errors"] for r in rows[(peer, n)])}
        if errors:
            lines.append(f"\nFailures at N={n}: {errors}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
