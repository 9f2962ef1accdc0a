"""asyncssh through one bastion: one connection to it, every target a tunnel over it.

As a careful asyncssh user would write it: `asyncssh.connect(..., tunnel=bastion)`
reuses the bastion connection for every target (direct-tcpip channels), at most
--concurrency (128) targets in flight; known_hosts and the key parsed once.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter

import asyncssh
from peer_common import one_line, read_hosts, report


async def _one(host: str, port: int, command: str, bastion: asyncssh.SSHClientConnection,
               options: asyncssh.SSHClientConnectionOptions,
               limit: asyncio.Semaphore) -> tuple[bool, str]:
    async with limit:
        try:
            async with asyncssh.connect(host, port, tunnel=bastion, options=options) as conn:
                done = await conn.run(command, encoding=None)
            if done.exit_status == 0:
                return True, ""
            return False, f"exit status {done.exit_status}"
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as error:
            return False, one_line(error)


async def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("--hosts", "--user", "--key", "--known-hosts", "--command", "--bastion"):
        parser.add_argument(name, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=128)
    args = parser.parse_args()
    options = asyncssh.SSHClientConnectionOptions(
        username=args.user, known_hosts=asyncssh.read_known_hosts(args.known_hosts),
        client_keys=[asyncssh.read_private_key(args.key)], agent_path=None, config=[],
        connect_timeout=60, login_timeout=60)
    hosts = read_hosts(args.hosts)
    async with asyncssh.connect(args.bastion, args.port, options=options) as bastion:
        limit = asyncio.Semaphore(args.concurrency)
        results = await asyncio.gather(
            *(_one(h, args.port, args.command, bastion, options, limit) for h in hosts))
    report(sum(ok for ok, _ in results), len(hosts), Counter(t for ok, t in results if not ok))


if __name__ == "__main__":
    asyncio.run(_main())
