"""The `fleetexec` command end to end: real sshd, real pool, real output and exit codes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleetexec.testing.faults import closed_port

pytestmark = pytest.mark.timeout(90)


def fleetexec_cli(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleetexec", *args], capture_output=True,
                          text=True, timeout=60, **kwargs)


def mixed_inventory(sshd, tmp_path: Path) -> Path:
    """Two good hosts, one whose command fails, one closed port."""
    inventory = sshd.write_inventory(tmp_path / "inv.yaml",
                                     ["127.0.4.1", "127.0.4.2", "127.0.4.3"],
                                     names=["good1", "good2", "bad"])
    closed = f'  "closed": {{ address: "127.0.0.1", port: {closed_port()} }}\n'
    inventory.write_text(inventory.read_text() + closed)
    return inventory


FAIL_ON_BAD = 'case "$SSH_CONNECTION" in *" 127.0.4.3 "*) echo boom >&2; exit 5;; esac; echo fine'


def test_mixed_fleet_table_lists_every_host_with_its_status(sshd, tmp_path):
    done = fleetexec_cli("run", "-i", str(mixed_inventory(sshd, tmp_path)),
                         "--no-system-known-hosts", "--", FAIL_ON_BAD)
    assert done.returncode == 3, done.stderr  # unreachable outranks failed
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()
            if line.split() and line.split()[0] in ("good1", "good2", "bad", "closed")}
    assert rows["good1"][1] == "ok" and rows["good2"][1] == "ok"
    assert rows["bad"][1:3] == ["failed", "5"]
    assert rows["closed"][1] == "unreachable"
    assert "4 hosts: 2 ok, 1 failed, 1 unreachable" in done.stdout
    assert "Traceback" not in done.stderr


def test_mixed_fleet_json_is_valid_and_complete(sshd, tmp_path):
    done = fleetexec_cli("run", "-i", str(mixed_inventory(sshd, tmp_path)),
                         "--no-system-known-hosts", "-o", "json", "--", FAIL_ON_BAD)
    assert done.returncode == 3
    document = json.loads(done.stdout)
    by_host = {h["host"]: h for h in document["hosts"]}
    assert [h["host"] for h in document["hosts"]] == ["good1", "good2", "bad", "closed"]
    assert by_host["good1"]["stdout"] == "fine\n" and by_host["good1"]["exit_code"] == 0
    assert by_host["bad"]["status"] == "failed" and by_host["bad"]["stderr"] == "boom\n"
    assert by_host["closed"]["status"] == "unreachable" and by_host["closed"]["exit_code"] is None
    assert document["summary"]["exit_code"] == 3


def test_jsonl_streams_one_line_per_host(sshd, tmp_path):
    inventory = sshd.write_inventory(tmp_path / "inv.yaml", ["127.0.4.1", "127.0.4.2"])
    done = fleetexec_cli("run", "-i", str(inventory), "--no-system-known-hosts", "-o", "jsonl",
                         "--", "echo hi")
    assert done.returncode == 0
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(line["host"] for line in lines) == ["h1", "h2"]
    assert all(line["stdout"] == "hi\n" for line in lines)


def test_gathered_folds_identical_output(sshd, tmp_path):
    addresses = [f"127.0.4.{i}" for i in range(1, 6)]
    names = [f"web{i:02d}" for i in range(1, 6)]
    inventory = sshd.write_inventory(tmp_path / "inv.yaml", addresses, names=names)
    done = fleetexec_cli("run", "-i", str(inventory), "--no-system-known-hosts", "-o", "gathered",
                         "--", "echo same")
    assert done.returncode == 0
    assert "web[01-05] (5)" in done.stdout
    assert done.stdout.count("same") == 1


def test_selection_group_and_exclusion(sshd, tmp_path):
    inventory = sshd.write_inventory(tmp_path / "inv.yaml", ["127.0.4.1", "127.0.4.2"],
                                     names=["web1", "web2"])
    done = fleetexec_cli("run", "-i", str(inventory), "--no-system-known-hosts", "web*", "!web2",
                         "--", "true")
    assert done.returncode == 0, done.stderr
    assert "web1" in done.stdout and "web2" not in done.stdout


def test_inventory_error_is_one_line_with_file_and_line(tmp_path):
    inventory = tmp_path / "broken.yaml"
    inventory.write_text("hosts:\n  web1:\n    port: 0022\n")
    done = fleetexec_cli("run", "-i", str(inventory), "--", "true")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("fleetexec: error: ") and "broken.yaml:3" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_command_and_bad_flag_are_usage_errors(tmp_path):
    assert fleetexec_cli("run", "-H", "web1").returncode == 2
    bad = fleetexec_cli("run", "-H", "web1", "--parallel", "zero", "--", "true")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_hostile_host_name_is_refused(tmp_path):
    done = fleetexec_cli("run", "-H", "-oProxyCommand=id", "--", "true")
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_help_documents_exit_codes():
    done = fleetexec_cli("run", "--help")
    assert done.returncode == 0
    for text in ("130", "interrupted", "timed out", "exited non-zero"):
        assert text in done.stdout


def test_hosts_lists_the_selection_without_secrets(sshd, tmp_path):
    inventory = sshd.write_inventory(tmp_path / "inv.yaml", ["127.0.4.1", "127.0.4.2"])
    done = fleetexec_cli("hosts", "-i", str(inventory), "h2")
    assert done.returncode == 0, done.stderr
    assert "h2" in done.stdout and "127.0.4.2" in done.stdout and "h1 " not in done.stdout
    assert "1 host" in done.stdout


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_prints_partial_results_exits_130_and_leaves_no_process(sshd, tmp_path, signum):
    inventory = sshd.write_inventory(tmp_path / "inv.yaml", ["127.0.4.1", "127.0.4.2"])
    process = subprocess.Popen(
        [sys.executable, "-m", "fleetexec", "run", "-i", str(inventory), "--no-system-known-hosts",
         "--progress", "--", 'case "$SSH_CONNECTION" in *" 127.0.4.1 "*) echo quick;; '
         '*) sleep 30;; esac'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 20
    progress = ""
    while "h1" not in progress and time.monotonic() < deadline:  # wait until h1 is done
        progress += process.stderr.readline()
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 130, stderr
    assert "h1" in stdout and "ok" in stdout
    assert "interrupted" in stdout
    assert live_processes_in_group(process.pid, wait=10) == []


def live_processes_in_group(pgid: int, wait: float) -> list[str]:
    """Processes of group `pgid` still running (zombies awaiting init's reaping are gone)."""
    deadline = time.monotonic() + wait
    while True:
        live = []
        for entry in Path("/proc").iterdir():
            try:
                stat = (entry / "stat").read_text()
            except (OSError, ValueError):
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                live.append(stat)
        if not live or time.monotonic() > deadline:
            return live
        time.sleep(0.1)
