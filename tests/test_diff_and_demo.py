"""`-o diff` on the command line, and a demo whose first screen means something."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetexec.testing import MockHost, Reply
from fleetexec.testing._mockscript import builtin

pytestmark = pytest.mark.timeout(90)

HEADER = "Filesystem                Size  Used Avail Use% Mounted on\n"


def cli(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_STATE_HOME": str(state)}
    return subprocess.run([sys.executable, "-m", "fleetexec", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_mock_df_answers_for_the_paths_it_is_given() -> None:
    everything = builtin("df -h", "web1", "u").stdout.decode()
    root = builtin("df -h /", "web1", "u").stdout.decode()
    assert everything.startswith(HEADER) and everything.count("\n") == 3
    assert root.startswith(HEADER) and root.count("\n") == 2
    assert root.splitlines()[1].startswith("/dev/mapper/web1-root") and root.endswith("% /\n")
    assert builtin("df /var/log", "web1", "u").stdout == root.encode()
    assert builtin("df -h /dev/shm", "web1", "u").stdout.decode().splitlines()[1].startswith(
        "tmpfs")
    assert builtin("df -h /", "web1", "u") == builtin("df -h /", "web1", "u")  # deterministic


def test_the_demo_table_shows_each_hosts_root_file_system(tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = cli("demo", "-n", "3", state=state)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("host")]
    assert len(rows) == 4  # the header row and three hosts
    for n in (1, 2, 3):
        row = next(r for r in rows if r.startswith(f"host{n} "))
        assert f"/dev/mapper/host{n}-root" in row and row.rstrip().endswith("% /")
    assert "tmpfs" not in done.stdout
    assert not state.exists()  # the demo's hosts are gone afterwards: it saves no run


def test_the_demo_shows_differences(tmp_path: Path) -> None:
    done = cli("demo", "-n", "2", "-o", "diff", state=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "\n--- host1 (1)\n+++ host2 (1)\n" in done.stdout
    assert "-  /dev/mapper/host1-root" in done.stdout
    assert "\n2 hosts: 2 ok in " in done.stdout


def test_run_diff_with_the_mock_fleet(mock_fleet_factory, tmp_path: Path) -> None:
    same = MockHost(replies={"cat /etc/app.conf": Reply("port=80\nworkers=4\n")})
    fleet = mock_fleet_factory([
        same, same, MockHost(replies={"cat /etc/app.conf": Reply("port=80\nworkers=8\n")}), same,
    ])
    done = cli("run", "-i", str(fleet.inventory_path), "--no-system-known-hosts", "-o", "diff",
               "--", "cat /etc/app.conf", state=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "\n".join([
        "--- host[1-2,4] (3)", "+++ host3 (1)", "@@ -1,2 +1,2 @@", "   port=80",
        "-  workers=4", "+  workers=8", "4 hosts: 4 ok in ",
    ]) in done.stdout
    assert "---------------- host[1-2,4] (3) ----------------" in done.stdout  # gathered first


def test_run_diff_against_real_sshd(sshd, tmp_path: Path) -> None:
    inventory = sshd.write_inventory(tmp_path / "inv.yaml",
                                     ["127.0.9.1", "127.0.9.2", "127.0.9.3"],
                                     names=["web1", "web2", "web3"])
    command = ('echo release=1; case "$SSH_CONNECTION" in *" 127.0.9.3 "*) echo extra=yes;; '
               "esac; echo end")
    done = cli("run", "-i", str(inventory), "--no-system-known-hosts", "-o", "diff", "--",
               command, state=tmp_path / "state")
    assert done.returncode == 0, done.stderr
    assert "\n".join(["--- web[1-2] (2)", "+++ web3 (1)", "@@ -1,2 +1,3 @@", "   release=1",
                      "+  extra=yes", "   end"]) in done.stdout


def test_the_demo_command_means_the_same_on_a_real_host(sshd, tmp_path: Path) -> None:
    # What the demo imitates: `df -h /` answers with the root file system only, so the
    # table's last-line column is each host's root use, as on the mock hosts.
    inventory = sshd.write_inventory(tmp_path / "inv.yaml", ["127.0.9.4"], names=["real1"])
    done = cli("run", "-i", str(inventory), "--no-system-known-hosts", "-o", "json", "--",
               "df -h /", state=tmp_path / "state")
    assert done.returncode == 0, done.stderr
    lines = json.loads(done.stdout)["hosts"][0]["stdout"].splitlines()
    mock = builtin("df -h /", "real1", "u").stdout.decode().splitlines()
    assert len(lines) == len(mock) == 2 and lines[0].split()[:2] == mock[0].split()[:2]
    assert lines[1].split()[-1] == mock[1].split()[-1] == "/"
    assert lines[1].split()[-2].endswith("%") and mock[1].split()[-2].endswith("%")
