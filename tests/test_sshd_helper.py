"""The real-OpenSSH test helper: starts, serves several loopback "hosts", stops.

Skipped with the reason from `is_available()` when sshd cannot run here; the
project's conftest turns that skip into a failure under FLEETEXEC_REQUIRE_SSHD=1.
"""

from __future__ import annotations

import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
import yaml

from fleetexec.testing.sshd import OpenSSHServer, SSHDError, addresses, is_available

AVAILABLE, WHY = is_available()
needs_sshd = pytest.mark.skipif(not AVAILABLE, reason=WHY)


@pytest.fixture(scope="module")
def sshd() -> Iterator[OpenSSHServer]:
    if not AVAILABLE:
        pytest.skip(WHY)
    with OpenSSHServer() as server:
        yield server


def client_for(sshd: OpenSSHServer, known_hosts: Path, address: str) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))  # only ours: never the developer's ~/.ssh
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        address, sshd.port, username=sshd.user, key_filename=str(sshd.client_key_path),
        look_for_keys=False, allow_agent=False, timeout=2, banner_timeout=2, auth_timeout=2,
    )
    return client


def test_addresses_skip_network_and_broadcast_octets() -> None:
    assert addresses(3) == ["127.0.1.1", "127.0.1.2", "127.0.1.3"]
    assert addresses(3, base="127.0.1.254") == ["127.0.1.254", "127.0.2.1", "127.0.2.2"]
    assert addresses(1, base="127.0.5.0") == ["127.0.5.1"]
    many = addresses(600)
    assert len(set(many)) == 600 and not any(a.endswith((".0", ".255")) for a in many)
    assert OpenSSHServer.addresses(2) == addresses(2)
    with pytest.raises(ValueError, match="loopback"):
        addresses(3, base="127.255.255.254")


def test_is_available_explains_itself() -> None:
    ok, why = is_available()
    assert ok is (why == "")
    ok, why = is_available("/nonexistent/sshd")
    assert not ok and "/nonexistent/sshd" in why


@needs_sshd
def test_runs_a_command_on_two_loopback_hosts(sshd: OpenSSHServer, tmp_path: Path) -> None:
    hosts = ["127.0.1.1", "127.0.1.2"]
    known_hosts = sshd.write_known_hosts(tmp_path / "known_hosts", hosts)
    for address in hosts:
        client = client_for(sshd, known_hosts, address)
        try:
            _, stdout, stderr = client.exec_command("echo hi; echo err >&2; exit 3", timeout=2)
            # Both streams are tiny, so sequential reads cannot deadlock here.
            assert stdout.read() == b"hi\n"
            assert stderr.read() == b"err\n"
            assert stdout.channel.recv_exit_status() == 3
        finally:
            client.close()


@needs_sshd
def test_bashrc_is_not_sourced(sshd: OpenSSHServer, tmp_path: Path) -> None:
    known_hosts = sshd.write_known_hosts(tmp_path / "known_hosts", ["127.0.1.3"])
    client = client_for(sshd, known_hosts, "127.0.1.3")
    try:
        _, stdout, _ = client.exec_command("echo $SHLVL", timeout=2)
        assert stdout.read() == b"2\n"  # SetEnv SHLVL=1, +1 in bash: no ~/.bashrc
    finally:
        client.close()


@needs_sshd
def test_unknown_host_is_rejected(sshd: OpenSSHServer, tmp_path: Path) -> None:
    known_hosts = sshd.write_known_hosts(tmp_path / "known_hosts", ["127.0.1.1"])
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        client_for(sshd, known_hosts, "127.0.1.9").close()


@needs_sshd
def test_generated_files(sshd: OpenSSHServer, tmp_path: Path) -> None:
    assert sshd.host_public_key.startswith("ssh-ed25519 AAAA")
    for key in (sshd.client_key_path, sshd.host_key_path):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    paramiko.Ed25519Key.from_private_key_file(str(sshd.client_key_path))

    inv = sshd.write_inventory(tmp_path / "inv.yaml", addresses(2), names=["web1", "db1"])
    data = yaml.safe_load(inv.read_text())
    known_hosts = tmp_path / "known_hosts"
    assert data == {
        "defaults": {
            "user": sshd.user, "port": sshd.port,
            "key_files": [str(sshd.client_key_path)], "known_hosts_file": str(known_hosts),
        },
        "hosts": {"web1": {"address": "127.0.1.1"}, "db1": {"address": "127.0.1.2"}},
    }
    assert known_hosts.read_text().splitlines() == [
        f"[127.0.1.1]:{sshd.port} {sshd.host_public_key}",
        f"[127.0.1.2]:{sshd.port} {sshd.host_public_key}",
    ]
    with pytest.raises(ValueError, match="loopback"):
        sshd.write_known_hosts(tmp_path / "kh", ["192.0.2.1"])
    with pytest.raises(ValueError):
        sshd.write_inventory(tmp_path / "bad.yaml", addresses(2), names=["only-one"])


@needs_sshd
def test_invalid_config_reports_sshd_stderr() -> None:
    server = OpenSSHServer(extra_config=["NoSuchOption yes"])
    with pytest.raises(SSHDError, match="Bad configuration option"):
        server.start()
    assert not server.dir.exists()  # cleaned up on failure


@needs_sshd
def test_max_startups_reaches_sshd_and_stop_frees_the_port() -> None:
    with OpenSSHServer(max_startups="2:100:2") as server:
        held: list[socket.socket] = []
        try:
            dropped = False
            # Unauthenticated connections pile up; past 2 sshd drops them
            # before its banner. (<= 2: the readiness probe may still count.)
            for _ in range(4):
                sock = socket.create_connection(("127.0.1.1", server.port), timeout=2)
                held.append(sock)
                try:
                    banner = sock.recv(64)
                except ConnectionResetError:
                    banner = b""
                if not banner.startswith(b"SSH-"):
                    dropped = True
                    break
            assert dropped and len(held) <= 3
        finally:
            for sock in held:
                sock.close()
        port, pid = server.port, server.pid
    assert pid is not None and server.pid is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
