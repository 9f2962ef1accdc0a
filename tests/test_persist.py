"""`fleetexec run --persist`: a per-user agent keeps connections open between CLI calls."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def runtime_dir(tmp_path, monkeypatch):
    directory = tmp_path / "runtime"
    directory.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(directory))
    yield directory
    subprocess.run([sys.executable, "-m", "fleetexec", "agent", "stop"], capture_output=True,
                   timeout=30)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "fleetexec", *args], capture_output=True,
                          text=True, timeout=60)


def test_second_persistent_run_reuses_the_connections(sshd, tmp_path, runtime_dir):
    inventory = sshd.write_inventory(tmp_path / "inv.yaml", ["127.0.6.1", "127.0.6.2"])
    runs = []
    for _ in range(2):
        done = cli("run", "-i", str(inventory), "--no-system-known-hosts", "--persist",
                   "-o", "json", "--", "echo $SSH_CONNECTION")
        assert done.returncode == 0, done.stderr
        runs.append({h["host"]: h["stdout"].split()[1] for h in json.loads(done.stdout)["hosts"]})
    assert runs[0] == runs[1]  # same client ports: the same TCP connections
    socket_file = runtime_dir / "fleetexec" / "agent.sock"
    assert stat.S_IMODE(os.stat(socket_file.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(socket_file).st_mode) == 0o600
    stopped = cli("agent", "stop")
    assert "stopped" in stopped.stdout
    assert not socket_file.exists()


def test_persistent_results_and_statuses_match_a_fresh_run(sshd, tmp_path, runtime_dir):
    inventory = sshd.write_inventory(tmp_path / "inv.yaml", ["127.0.6.11"])
    fresh = cli("run", "-i", str(inventory), "--no-system-known-hosts", "-o", "json", "--",
                "echo out; echo err >&2; exit 4")
    kept = cli("run", "-i", str(inventory), "--no-system-known-hosts", "-o", "json", "--persist",
               "--", "echo out; echo err >&2; exit 4")
    assert fresh.returncode == kept.returncode == 1

    def essentials(done):
        host = json.loads(done.stdout)["hosts"][0]
        return {k: host[k] for k in ("host", "status", "exit_code", "stdout", "stderr")}

    assert essentials(fresh) == essentials(kept)


def test_directories_another_user_could_control_are_skipped_for_a_private_one(
        sshd, tmp_path, runtime_dir, monkeypatch):
    # Another local user pre-creates the usual places: --persist still works, elsewhere.
    (runtime_dir / "fleetexec").mkdir()
    os.chmod(runtime_dir / "fleetexec", 0o770)  # noqa: S103 - the unsafe mode under test
    shared_tmp = tmp_path / "tmp"
    shared_tmp.mkdir()
    (shared_tmp / f"fleetexec-{os.getuid()}").mkdir()
    os.chown(shared_tmp / f"fleetexec-{os.getuid()}", 65534, 65534)  # owned by nobody
    monkeypatch.setenv("TMPDIR", str(shared_tmp))
    inventory = sshd.write_inventory(tmp_path / "inv.yaml", ["127.0.6.21"])
    done = cli("run", "-i", str(inventory), "--no-system-known-hosts", "--persist", "--", "true")
    assert done.returncode == 0, done.stderr
    fallback = Path(os.environ["HOME"]) / ".fleetexec" / "run"
    assert f"the agent uses {fallback}" in done.stderr and "Traceback" not in done.stderr
    assert (fallback / "agent.sock").exists()
    assert stat.S_IMODE(os.stat(fallback).st_mode) == 0o700
    assert not list((runtime_dir / "fleetexec").iterdir())


def test_sigterm_to_one_client_interrupts_only_its_own_run(sshd, tmp_path, runtime_dir):
    import signal
    import time

    inventory = sshd.write_inventory(tmp_path / "inv.yaml", ["127.0.6.31", "127.0.6.32"])
    base = [sys.executable, "-m", "fleetexec", "run", "-i", str(inventory),
            "--no-system-known-hosts", "--persist", "-o", "json", "--"]
    first = cli(*base[3:], "echo $SSH_CONNECTION")
    assert first.returncode == 0, first.stderr
    ports = {h["host"]: h["stdout"].split()[1] for h in json.loads(first.stdout)["hosts"]}
    started = tmp_path / "a-started"  # the sshd runs commands on this machine
    long_run = subprocess.Popen([*base, f"touch {started}; sleep 3; echo A"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not started.exists():  # A is running in the agent
        assert time.monotonic() < deadline and long_run.poll() is None
        time.sleep(0.05)
    waiting = subprocess.Popen([*base, "echo B"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    while not _catches_sigterm(waiting.pid):  # a SIGTERM before that would just kill it
        assert time.monotonic() < deadline and waiting.poll() is None
        time.sleep(0.05)
    time.sleep(0.5)  # B waits for A's engine
    waiting.send_signal(signal.SIGTERM)
    waiting.communicate(timeout=20)
    assert waiting.returncode == 130
    out, err = long_run.communicate(timeout=30)
    assert long_run.returncode == 0, err  # A never noticed
    assert [h["stdout"] for h in json.loads(out)["hosts"]] == ["A\n", "A\n"]
    again = cli(*base[3:], "echo $SSH_CONNECTION")
    assert {h["host"]: h["stdout"].split()[1] for h in json.loads(again.stdout)["hosts"]} == ports


def _catches_sigterm(pid: int) -> bool:
    """Whether process `pid` has a handler for SIGTERM (the CLI installs one to exit 130)."""
    import signal

    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False
