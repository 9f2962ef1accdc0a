"""`--stdin` (input to every command) and `--retries` (refused connections only)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest

import fleetexec
from fleetexec import Host, Status
from fleetexec.testing.faults import closed_port

pytestmark = pytest.mark.timeout(120)


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "fleetexec", *args], input=stdin,
                          capture_output=True, timeout=60)


def test_stdin_reaches_every_command_once_read(sshd, tmp_path):
    inventory = sshd.write_inventory(tmp_path / "inv.yaml",
                                     [f"127.0.15.{i}" for i in range(1, 5)])
    script = b"echo one\necho two\n"
    done = cli("run", "-i", str(inventory), "--no-system-known-hosts", "--stdin", "-o", "json",
               "--", "sh", stdin=script)
    assert done.returncode == 0, done.stderr
    assert {h["stdout"] for h in json.loads(done.stdout)["hosts"]} == {"one\ntwo\n"}


def test_a_large_stdin_echoed_back_does_not_deadlock(sshd_fleet):
    fleet = sshd_fleet(2, first="127.0.15.11")
    data = bytes(range(256)) * 16384  # 4 MiB: more than both SSH windows
    with fleetexec.FleetSession(fleet.hosts, **fleet.run_options()) as session:
        result = session.run("cat", stdin=data)
    assert all(r.ok and r.stdout == data[:1024 * 1024] and r.stdout_truncated
               for r in result.values())


def test_without_stdin_a_command_reading_input_gets_end_of_file_at_once(sshd_fleet):
    fleet = sshd_fleet(1, first="127.0.15.21")
    result = fleetexec.run(fleet.hosts, "cat; echo done", **{**fleet.run_options(),
                                                              "command_timeout": 20})
    assert result["h1"].stdout == b"done\n" and result["h1"].duration < 20


def test_stdin_from_a_terminal_is_refused():
    done = subprocess.run([sys.executable, "-c", "import pty, sys; sys.exit(pty.spawn(["
                           f"{sys.executable!r}, '-m', 'fleetexec', 'run', '-H', 'web1', "
                           "'--stdin', '--', 'sh']) >> 8)"], capture_output=True, timeout=60)
    assert done.returncode == 2 and b"--stdin needs input" in done.stdout


def _forward_later(port: int, target: int, delay: float) -> threading.Thread:
    """After `delay`, listen on `port` and forward one connection to `target`."""
    def serve() -> None:
        time.sleep(delay)
        with socket.create_server(("127.0.0.1", port)) as listener:
            client, _ = listener.accept()
            upstream = socket.create_connection(("127.0.0.1", target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        sink.close()


def test_retries_reconnect_after_a_refusal_inside_the_deadline(sshd, tmp_path):
    port = closed_port()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {sshd.host_public_key}\n")
    host = Host("late", address="127.0.0.1", port=port, user=sshd.user,
                key_files=(str(sshd.client_key_path),))
    _forward_later(port, sshd.port, delay=0.5)
    result = fleetexec.run([host], "echo up", known_hosts=[str(known)],
                           system_known_hosts=False, retries=5, connect_timeout=8)
    assert result["late"].ok, result["late"].error
    refused = fleetexec.run([host.__class__("gone", address="127.0.0.1", port=closed_port())],
                            "true", retries=2, connect_timeout=5, system_known_hosts=False)
    assert refused["gone"].status is Status.UNREACHABLE
    assert "(3 attempts)" in refused["gone"].error


def test_no_retries_by_default_and_a_timeout_is_never_retried():
    result = fleetexec.run([Host("gone", address="127.0.0.1", port=closed_port())], "true",
                           connect_timeout=5, system_known_hosts=False)
    assert "attempts" not in result["gone"].error


def test_stdin_on_the_mock_fleet(tmp_path):
    from fleetexec.testing import MockFleet, MockHost

    with MockFleet([MockHost(passthrough=True), MockHost(passthrough=True)]) as fleet:
        with fleetexec.FleetSession(fleetexec.load_inventory(fleet.inventory_path).select(),
                                    system_known_hosts=False, use_ssh_config=False) as session:
            result = session.run("tr a-z A-Z", stdin=b"shout\n")
    assert [r.stdout for r in result.values()] == [b"SHOUT\n", b"SHOUT\n"]
