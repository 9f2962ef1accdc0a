"""Soak: 1000 loopback hosts of a real sshd, 10% of them faulty, three runs in a row.

Every host must end with its expected status on every run, and the parent
process must not grow run after run. The faulty hosts are chosen by index:
a closed port (unreachable), a wrong key in known_hosts (hostkey_changed), a
command that fails (failed, exit 7) and one that hangs (timeout); the command
tells them apart by the address in `$SSH_CONNECTION`. A dedicated sshd on
127.1.x.y keeps this away from the session sshd's hosts.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import fleetexec
from fleetexec import Host, Status
from fleetexec.testing.faults import closed_port
from fleetexec.testing.sshd import OpenSSHServer, addresses, is_available

pytestmark = pytest.mark.timeout(300)

HOSTS = 1000
COMMAND_TIMEOUT = 3.0
GRACE = 3.0
MIB = 1024 * 1024
EXPECTED = {0: Status.UNREACHABLE, 10: Status.HOSTKEY_CHANGED, 20: Status.FAILED,
            30: Status.TIMEOUT}  # index % 40 -> status; every other host is ok


def rss() -> int:
    """This process's resident set size now, in bytes (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def expected_status(index: int) -> Status:
    return EXPECTED.get(index % 40, Status.OK)


def test_soak_1000_hosts_10_percent_faulty_three_runs_in_a_row(tmp_path: Path) -> None:
    available, reason = is_available()
    if not available:
        pytest.skip(reason)
    chosen = addresses(HOSTS, base="127.1.0.1")
    expected = {f"h{i:04d}": expected_status(i) for i in range(HOSTS)}
    by_status = {status: [chosen[i] for i in range(HOSTS) if expected_status(i) is status]
                 for status in Status}
    assert {s: len(a) for s, a in by_status.items() if s is not Status.OK and a} == {
        Status.UNREACHABLE: 25, Status.HOSTKEY_CHANGED: 25, Status.FAILED: 25,
        Status.TIMEOUT: 25}

    def pattern(status: Status) -> str:
        return "|".join(f'*" {a} "*' for a in by_status[status])

    command = (f'case "$SSH_CONNECTION" in {pattern(Status.FAILED)}) echo failing >&2; exit 7;; '
               f"{pattern(Status.TIMEOUT)}) echo started; exec sleep 60;; esac; echo fine")
    dead_port = closed_port()
    with OpenSSHServer() as server:
        known = tmp_path / "known_hosts"
        impostor = Ed25519PrivateKey.generate().public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        known.write_text("".join(
            f"[{a}]:{server.port} "
            f"{impostor if a in by_status[Status.HOSTKEY_CHANGED] else server.host_public_key}\n"
            for a in chosen))
        # The hung hosts get a short command deadline of their own; the others a long one,
        # because 1000 loopback "hosts" all run their shell on this one machine at once.
        hosts = [Host(f"h{i:04d}", address=a,
                      port=dead_port if a in by_status[Status.UNREACHABLE] else server.port,
                      user=server.user, key_files=(str(server.client_key_path),),
                      command_timeout=COMMAND_TIMEOUT if a in by_status[Status.TIMEOUT] else 120)
                 for i, a in enumerate(chosen)]
        sizes: list[int] = []
        for run in range(3):
            began = time.monotonic()
            result = fleetexec.run(hosts, command, known_hosts=[str(known)],
                                   system_known_hosts=False, connect_timeout=60)
            wall = time.monotonic() - began
            assert len(result) == HOSTS
            wrong = Counter((str(expected[name]), str(r.status), r.error)
                            for name, r in result.items() if r.status is not expected[name])
            assert not wrong, f"run {run + 1}: (expected, got, error) x hosts: {wrong}"
            for r in result.values():
                if r.status is Status.OK:
                    assert r.stdout == b"fine\n"
                elif r.status is Status.FAILED:
                    assert (r.exit_code, r.stderr) == (7, b"failing\n")
                elif r.status is Status.TIMEOUT:
                    assert r.stdout == b"started\n"
                    assert r.duration < COMMAND_TIMEOUT + 60 + GRACE
            assert wall < 240, wall
            del result
            gc.collect()
            sizes.append(rss())
    growth = sizes[2] - sizes[1]
    assert growth < 50 * MIB, f"parent RSS after each run (MiB): {[s // MIB for s in sizes]}"
