"""Shared fixtures: an isolated HOME, and one real OpenSSH sshd for the session.

Tests never read the developer's own ~/.ssh (config, agent, keys) or write their
saved runs (XDG_STATE_HOME is removed): HOME points
at a temp dir and SSH_AUTH_SOCK is removed for every test. CI sets
FLEETEXEC_REQUIRE_SSHD=1, which turns "sshd missing" from a skip into a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetexec import Host
from fleetexec.testing.sshd import OpenSSHServer, addresses, require_sshd


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for name in ("SSH_AUTH_SOCK", "FLEETEXEC_INVENTORY", "FLEETEXEC_PASSWORD",
                 "FLEETEXEC_PASSPHRASE", "FLEETEXEC_SCHEDULER", "FLEETEXEC_SUDO_PASSWORD",
                 "XDG_STATE_HOME"):  # saved runs go under HOME
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture(scope="session")
def sshd() -> Iterator[OpenSSHServer]:
    """A real OpenSSH sshd on an ephemeral port, serving every 127.x.y.z address."""
    require_sshd()
    with OpenSSHServer() as server:
        yield server


class SshdFleet:
    """Hosts of the session sshd, with a known_hosts file written for them."""

    def __init__(self, server: OpenSSHServer, directory: Path, count: int, first: str) -> None:
        self.server = server
        self.addresses = addresses(count, base=first)
        self.known_hosts = str(directory / "known_hosts")
        server.write_known_hosts(self.known_hosts, self.addresses)
        self.hosts = [
            Host(f"h{i + 1}", address=address, port=server.port, user=server.user,
                 key_files=(str(server.client_key_path),))
            for i, address in enumerate(self.addresses)
        ]

    def run_options(self) -> dict[str, object]:
        return {"known_hosts": [self.known_hosts], "system_known_hosts": False,
                "connect_timeout": 10.0, "command_timeout": 30.0}


@pytest.fixture
def sshd_fleet(sshd: OpenSSHServer, tmp_path: Path) -> type[SshdFleet] | object:
    def make(count: int = 3, first: str = "127.0.1.1") -> SshdFleet:
        return SshdFleet(sshd, tmp_path, count, first)

    return make
