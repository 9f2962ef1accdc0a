"""One connection per SSH implementation to the first host: which KEX and cipher it negotiates.

Prints one JSON object {implementation: "kex / cipher"}; a probe that fails
says why instead. Run once by the driver before the benchmark (not measured).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
from collections.abc import Callable

from peer_common import parse_args, read_hosts

ARGS = parse_args(__doc__ or "")
HOST = read_hosts(ARGS.hosts)[0]


def _paramiko(transport_class: type) -> str:
    """Negotiated algorithms, from the transport's kex engine and cipher (fleetexec's
    transport does not log)."""
    with socket.create_connection((HOST, ARGS.port), timeout=30) as sock:
        transport = transport_class(sock)
        transport.start_client(timeout=30)
        names = {cls: name for name, cls in transport._kex_info.items()}
        kex = names.get(type(transport.kex_engine), "?")
        cipher = transport.local_cipher
        transport.close()
    return f"{kex} / {cipher}"


def _fleetexec() -> str:
    from fleetexec.ssh.transport import FleetTransport as _FleetTransport  # what it uses

    return _paramiko(_FleetTransport)


def _fabric() -> str:
    import paramiko

    return _paramiko(paramiko.Transport)


def _asyncssh() -> str:
    import asyncssh

    chosen: dict[str, bytes] = {}
    choose = asyncssh.connection.SSHConnection._choose_alg

    def record(self: object, alg_type: str, *args: object) -> bytes:
        chosen[alg_type] = choose(self, alg_type, *args)  # type: ignore[arg-type]
        return chosen[alg_type]

    asyncssh.connection.SSHConnection._choose_alg = record  # type: ignore[method-assign,assignment]

    async def probe() -> str:
        async with asyncssh.connect(
            HOST, ARGS.port, username=ARGS.user, client_keys=[ARGS.key],
            known_hosts=ARGS.known_hosts, agent_path=None, config=[],
        ) as conn:
            kex = chosen.get("key exchange", b"?").decode()
            return f"{kex} / {conn.get_extra_info('send_cipher')}"

    return asyncio.run(probe())


def _libssh2() -> str:
    from ssh2.session import LIBSSH2_METHOD_CRYPT_CS, LIBSSH2_METHOD_KEX, Session

    with socket.create_connection((HOST, ARGS.port), timeout=30) as sock:
        session = Session()
        session.handshake(sock)
        kex, cipher = (session.methods(m) for m in (LIBSSH2_METHOD_KEX, LIBSSH2_METHOD_CRYPT_CS))
        session.disconnect()
    return f"{kex} / {cipher}"


def _openssh() -> str:
    done = subprocess.run(
        ["ssh", "-v", "-F", "/dev/null", "-o", "KexAlgorithms=curve25519-sha256",
         "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={ARGS.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
         "-i", ARGS.key, "-p", str(ARGS.port), "-l", ARGS.user, HOST, "true"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    kex = re.search(r"kex: algorithm: (\S+)", done.stderr)
    cipher = re.search(r"kex: client->server cipher: (\S+)", done.stderr)
    return f"{kex[1] if kex else '?'} / {cipher[1] if cipher else '?'}"


PROBES: dict[str, Callable[[], str]] = {
    "fleetexec (paramiko)": _fleetexec, "asyncssh": _asyncssh, "parallel-ssh (libssh2)": _libssh2,
    "OpenSSH ssh (as run by xargs)": _openssh, "Fabric (paramiko defaults)": _fabric,
}

if __name__ == "__main__":
    found: dict[str, str] = {}
    for name, probe in PROBES.items():
        try:
            found[name] = probe()
        except Exception as error:  # a failed probe is a finding, not a reason to stop
            found[name] = f"probe failed: {type(error).__name__}: {error}"
    print(json.dumps(found))
