"""asyncssh: one event loop, every host gathered, at most --concurrency (128) in flight.

known_hosts and the client key are parsed once and shared through one
`SSHClientConnectionOptions`, as a careful asyncssh user would do; passing the
path instead would re-read the file for every connection.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncssh
from peer_common import one_line, parse_args, read_hosts, report

_CHUNK = 65536


async def _drain(stream: asyncssh.SSHReader[bytes]) -> int:
    total = 0
    while chunk := await stream.read(_CHUNK):
        total += len(chunk)
    return total


async def _one(
    host: str, port: int, command: str, options: asyncssh.SSHClientConnectionOptions,
    limit: asyncio.Semaphore,
) -> tuple[bool, str, int]:
    async with limit:
        try:
            async with asyncssh.connect(host, port, options=options) as conn:
                async with conn.create_process(command, encoding=None) as proc:
                    out, _err = await asyncio.gather(_drain(proc.stdout), _drain(proc.stderr))
                    done = await proc.wait()
            if done.exit_status == 0:
                return True, "", out
            return False, f"exit status {done.exit_status} signal {done.exit_signal}", out
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as error:
            return False, one_line(error), 0


async def _main() -> None:
    args = parse_args(__doc__ or "")
    hosts = read_hosts(args.hosts)
    options = asyncssh.SSHClientConnectionOptions(
        username=args.user,
        known_hosts=asyncssh.read_known_hosts(args.known_hosts),
        client_keys=[asyncssh.read_private_key(args.key)],
        agent_path=None, config=[], connect_timeout=60, login_timeout=60,
        **({"encryption_algs": [args.cipher]} if args.cipher else {}),
    )
    limit = asyncio.Semaphore(args.concurrency)
    results = await asyncio.gather(
        *(_one(h, args.port, args.command, options, limit) for h in hosts)
    )
    errors = Counter(text for ok, text, _ in results if not ok)
    report(sum(ok for ok, _, _ in results), len(hosts), errors, sum(n for _, _, n in results))


if __name__ == "__main__":
    asyncio.run(_main())
