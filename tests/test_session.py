"""FleetSession: connections kept open across commands, replaced when they die."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import fleetexec
from fleetexec import Status

pytestmark = pytest.mark.timeout(120)


def client_ports(result):
    return {name: r.stdout.split()[1] for name, r in result.items()}  # $SSH_CONNECTION field 2


def test_second_command_reuses_each_hosts_connection(sshd_fleet):
    fleet = sshd_fleet(6, first="127.0.5.1")
    with fleetexec.FleetSession(fleet.hosts, **fleet.run_options()) as session:
        first = session.run("echo $SSH_CONNECTION")
        second = session.run("echo $SSH_CONNECTION")
    assert first.ok and second.ok
    assert client_ports(first) == client_ports(second)  # same TCP connection, no new handshake


def test_a_dead_connection_is_replaced_transparently(sshd_fleet):
    fleet = sshd_fleet(3, first="127.0.5.21")
    with fleetexec.FleetSession(fleet.hosts, **fleet.run_options()) as session:
        before = session.run("echo $SSH_CONNECTION")
        # Kill each connection's sshd process from inside: the connection drops.
        cut = session.run("kill -9 $PPID; sleep 5")
        assert all(r.status is not Status.OK for r in cut.values())
        after = session.run("echo $SSH_CONNECTION")
    assert after.ok
    assert set(client_ports(after).values()).isdisjoint(client_ports(before).values())


def test_session_results_keep_statuses_and_host_key_checks(sshd_fleet, tmp_path):
    fleet = sshd_fleet(2, first="127.0.5.31")
    empty = tmp_path / "empty"
    empty.write_text("")
    options = {**fleet.run_options(), "known_hosts": [str(empty)]}
    with fleetexec.FleetSession(fleet.hosts, **options) as session:
        for _ in range(2):  # refused every time: nothing is kept from a refused host
            result = session.run("true")
            assert {r.status for r in result.values()} == {Status.HOSTKEY_UNKNOWN}


def test_session_reports_failures_like_run(sshd_fleet):
    fleet = sshd_fleet(2, first="127.0.5.41")
    with fleetexec.FleetSession(fleet.hosts, **fleet.run_options()) as session:
        assert session.run("exit 7")["h1"].exit_code == 7
        assert session.run("echo again")["h2"].stdout == b"again\n"


def test_a_command_started_on_a_kept_connection_outlives_the_garbage_collector(sshd_fleet):
    # Nothing waits on it until it ends, and paramiko holds channels only weakly: once the
    # runner let go of it, a collection closed its channel mid-command (~15% of hosts).
    import gc
    import threading

    from fleetexec.backends.inprocess import InProcessBackend

    fleet = sshd_fleet(4, first="127.0.5.51")
    stop = threading.Event()

    def collect() -> None:
        while not stop.is_set():
            gc.collect()

    with fleetexec.FleetSession(fleet.hosts, backend=InProcessBackend(),
                                **fleet.run_options()) as session:
        assert session.run("true").ok
        collector = threading.Thread(target=collect)
        collector.start()
        try:
            result = session.run("sleep 0.5; echo done")
        finally:
            stop.set()
            collector.join()
    assert [(r.status, r.stdout) for r in result.values()] == [(Status.OK, b"done\n")] * 4


def test_kept_connections_carry_large_output_deadlines_and_idle_deaths(sshd_fleet):
    from fleetexec.backends.inprocess import InProcessBackend

    fleet = sshd_fleet(2, first="127.0.5.61")
    options = {**fleet.run_options(), "command_timeout": 2.0}
    with fleetexec.FleetSession(fleet.hosts, backend=InProcessBackend(), **options) as session:
        big = session.run("head -c 300000 /dev/zero")  # past the window: a thread drains it
        assert [(r.status, len(r.stdout)) for r in big.values()] == [(Status.OK, 300000)] * 2
        slow = session.run("sleep 10")
        assert {r.status for r in slow.values()} == {Status.TIMEOUT}
        before = session.run("echo $SSH_CONNECTION $PPID")  # new connections now
        assert before.ok, {n: r.error for n, r in before.items()}
        for result in before.values():  # each connection's own sshd process, while idle
            pid = int(result.stdout.split()[-1])
            assert _parent(pid) == fleet.server.pid  # one of the test sshd's, nobody else's
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
        after = session.run("echo $SSH_CONNECTION")
    assert after.ok, {n: r.error for n, r in after.items()}
    assert set(client_ports(after).values()).isdisjoint(client_ports(before).values())


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
