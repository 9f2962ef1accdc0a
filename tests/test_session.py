"""FleetSession: connections kept open across commands, replaced when they die."""

from __future__ import annotations

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
