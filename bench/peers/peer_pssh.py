"""parallel-ssh (``pssh.clients.native``, libssh2 via ssh2-python), pool_size = N.

parallel-ssh 2.16 has no host key verification at all (no known_hosts
option). So that it does the same work as the other peers, `_StrictClient`
checks the server's key after the handshake and before authentication
against known_hosts, parsed once into a dict, and fails the host on a
mismatch or a missing entry. num_retries=1 means one attempt (no retry).
"""

from __future__ import annotations

import base64
from collections import Counter
from pathlib import Path

import pssh.clients.native.parallel as pssh_parallel
from peer_common import known_hosts_name, one_line, parse_args, read_hosts, report
from pssh.clients.native.single import SSHClient

_KNOWN: dict[str, set[bytes]] = {}


class HostKeyMismatch(Exception):
    """The server's host key is not the one known_hosts has for it."""


class _StrictClient(SSHClient):  # type: ignore[misc]
    def _init_session(self, retries: int = 1) -> None:
        super()._init_session(retries)
        key, _key_type = self.session.hostkey()
        name = known_hosts_name(self.host, self.port)
        if key not in _KNOWN.get(name, ()):
            raise HostKeyMismatch(f"host key of {name} is not in known_hosts")


def _load_known_hosts(path: str) -> None:
    for line in Path(path).read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3 and not line.startswith("#"):
            for name in fields[0].split(","):
                _KNOWN.setdefault(name, set()).add(base64.b64decode(fields[2]))


def main() -> None:
    """Run the command on every host with one ParallelSSHClient."""
    args = parse_args(__doc__ or "")
    hosts = read_hosts(args.hosts)
    _load_known_hosts(args.known_hosts)
    pssh_parallel.SSHClient = _StrictClient  # what ParallelSSHClient instantiates per host
    client = pssh_parallel.ParallelSSHClient(
        hosts, user=args.user, port=args.port, pkey=args.key, pool_size=len(hosts),
        num_retries=1, timeout=120, allow_agent=False, identity_auth=False,
    )
    output = client.run_command(args.command, stop_on_errors=False)
    nbytes, errors = 0, Counter[str]()
    for host_output in output:
        if host_output.exception is None:
            nbytes += sum(len(line) + 1 for line in host_output.stdout)
            for _line in host_output.stderr:
                pass
    client.join(output, timeout=120)
    ok = 0
    for host_output in output:
        if host_output.exception is not None:
            errors[one_line(host_output.exception)] += 1
        elif host_output.exit_code == 0:
            ok += 1
        else:
            errors[f"exit code {host_output.exit_code}"] += 1
    report(ok, len(hosts), errors, nbytes)


if __name__ == "__main__":
    main()
