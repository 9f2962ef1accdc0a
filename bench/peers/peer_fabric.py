"""Fabric 3 ``ThreadingGroup`` (a thread per host, no concurrency limit; paramiko).

Host keys: Fabric installs paramiko's AutoAddPolicy; this runner replaces it
with RejectPolicy and gives each connection its own host's key from
known_hosts, parsed once (loading the whole file into every SSHClient costs
~120 ms of CPU per host, see shared/research/perf.md). Timeouts (connect,
banner, auth) are 60 s like fleetexec's --connect-timeout 60; paramiko's
15 s banner default lost hosts in the research runs.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import paramiko
from fabric import Config, ThreadingGroup
from fabric.exceptions import GroupException
from peer_common import known_hosts_name, one_line, parse_args, read_hosts, report


def main() -> None:
    """Run the command on every host with one ThreadingGroup."""
    args = parse_args(__doc__ or "")
    hosts = read_hosts(args.hosts)
    known = paramiko.HostKeys(args.known_hosts)  # parsed once, in this process
    group = ThreadingGroup(
        *hosts, user=args.user, port=args.port,
        config=Config(overrides={"load_ssh_configs": False}),
        connect_kwargs={
            "key_filename": args.key, "look_for_keys": False, "allow_agent": False,
            "timeout": 60, "banner_timeout": 60, "auth_timeout": 60,
        },
    )
    for connection in group:
        name = known_hosts_name(connection.host, args.port)
        client = connection.client
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        for key_type, key in (known.lookup(name) or {}).items():
            client.get_host_keys().add(name, key_type, key)
    results: dict[Any, Any]
    try:
        # hide=True: nothing printed, but invoke still keeps every byte in Result.stdout.
        results = dict(group.run(args.command, hide=True, warn=True))
    except GroupException as failure:
        results = dict(failure.result)
    ok, nbytes, errors = 0, 0, Counter[str]()
    for value in results.values():
        if isinstance(value, BaseException):
            errors[one_line(value)] += 1
            continue
        nbytes += len(value.stdout)
        if value.exited == 0:
            ok += 1
        else:
            errors[f"exit code {value.exited}"] += 1
    group.close()
    report(ok, len(hosts), errors, nbytes)


if __name__ == "__main__":
    main()
