"""parallel-ssh (native, libssh2) file copy over SFTP: `copy_file` / `copy_remote_file`.

Started by ``bench/transfer.py``. Host keys are checked as in ``peer_pssh.py``
(parallel-ssh 2.16 checks none itself). `get` writes ``LOCAL_<host>`` (its
``suffix_separator`` naming). Prints the driver's one JSON result line.
"""

from __future__ import annotations

import argparse
from collections import Counter

import pssh.clients.native.parallel as pssh_parallel
from gevent import joinall
from peer_common import one_line, read_hosts, report
from peer_pssh import _load_known_hosts, _StrictClient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("--hosts", "--user", "--key", "--known-hosts", "--local", "--remote"):
        parser.add_argument(name, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--direction", choices=["put", "get"], required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    hosts = read_hosts(args.hosts)
    _load_known_hosts(args.known_hosts)
    pssh_parallel.SSHClient = _StrictClient
    client = pssh_parallel.ParallelSSHClient(
        hosts, user=args.user, port=args.port, pkey=args.key, pool_size=args.concurrency,
        num_retries=1, timeout=600, allow_agent=False, identity_auth=False)
    if args.direction == "put":
        greenlets = client.copy_file(args.local, args.remote)
    else:
        greenlets = client.copy_remote_file(args.remote, args.local)
    joinall(greenlets, raise_error=False)
    errors: Counter[str] = Counter()
    ok = 0
    for greenlet in greenlets:
        if greenlet.exception is None:
            ok += 1
        else:
            errors[one_line(greenlet.exception)] += 1
    report(ok, len(hosts), errors)


if __name__ == "__main__":
    main()
