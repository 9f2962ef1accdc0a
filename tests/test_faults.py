"""Rows 9-43 of the fault catalogue (research/faults.md §2) as behaviours of fleetexec.

Every test goes through `fleetexec.run` (or the CLI) and asserts the status,
that the host's duration stays within its deadline plus `GRACE`, that partial
output is kept where the row says so, and that a healthy host in the same run
is intact. Protocol faults come from `FaultServer`, command faults from
`MockFleet`, the rest from real OpenSSH sshd instances. Loopback only:
FaultServers on 127.5.0.x, the healthy real host on 127.0.5.1.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fleetexec
from fleetexec import Host, Status
from fleetexec.render import render_table
from fleetexec.testing import BINARY_PAYLOAD, Fault, MockFleet, MockHost, Reply
from fleetexec.testing.faults import MAXSTARTUPS, FaultKind, FaultServer, closed_port
from fleetexec.testing.sshd import OpenSSHServer, addresses

pytestmark = pytest.mark.timeout(60)

GRACE = 3.0  # seconds a failure may take beyond its deadline (slow CI, pool start-up)
HEALTHY_ADDRESS = "127.0.5.1"
CONNECT = 1.5  # the connect deadline under test
COMMAND = 1.5  # the command deadline under test
MIB = 1024 * 1024
PATTERN = bytes(range(256)) * 256  # what Fault.flood repeats (64 KiB)


# ---- helpers ---------------------------------------------------------------------------------


class Healthy:
    """A healthy real host (the session sshd on 127.0.5.1) to run beside every fault."""

    def __init__(self, sshd: OpenSSHServer, directory: Path) -> None:
        self.sshd = sshd
        self.known_hosts = str(sshd.write_known_hosts(directory / "known_hosts",
                                                      [HEALTHY_ADDRESS]))
        # Generous deadlines of its own: a loaded CI box must not fail the healthy host.
        self.host = Host("healthy", address=HEALTHY_ADDRESS, port=sshd.port, user=sshd.user,
                         key_files=(str(sshd.client_key_path),), connect_timeout=20,
                         command_timeout=20)

    def run(self, *hosts: Host, command: str = "echo alive", **options: object):
        options = {"known_hosts": [self.known_hosts], "system_known_hosts": False,
                   "connect_timeout": CONNECT, "command_timeout": COMMAND, **options}
        result = fleetexec.run([*hosts, self.host], command, **options)
        assert list(result) == [*(h.name for h in hosts), "healthy"]
        r = result["healthy"]
        if command == "echo alive":
            assert (r.status, r.stdout, r.stderr, r.exit_code) == (Status.OK, b"alive\n", b"", 0)
        else:
            assert r.status is Status.OK, r.error
        return result


@pytest.fixture
def healthy(sshd: OpenSSHServer, tmp_path: Path) -> Healthy:
    return Healthy(sshd, tmp_path)


def fault_host(server: FaultServer, name: str = "faulty", connect_timeout: float = CONNECT
               ) -> Host:
    return Host(name, address=server.address, port=server.port, user="nobody",
                connect_timeout=connect_timeout)


def within(r, deadline: float) -> None:
    """The host took at least about its deadline (it waited) and at most deadline + GRACE."""
    assert deadline - 0.1 <= r.duration < deadline + GRACE, r.duration


def quick(r, deadline: float) -> None:
    """The host failed well before its deadline: it did not wait for it."""
    assert r.duration < deadline / 2, r.duration


def mock_run(specs: list[MockHost], command: str = "echo alive", connect_timeout: float = 20,
             **options: object):
    """Run over a MockFleet of `specs` plus a healthy mock host; check the healthy one."""
    with MockFleet([*specs, MockHost("healthy")], connect_timeout=connect_timeout) as fleet:
        result = fleet.run(command, **{"command_timeout": COMMAND, **options})
    assert list(result) == [*(s.name for s in specs), "healthy"]
    assert (result["healthy"].status, result["healthy"].stdout) == (Status.OK, b"alive\n")
    return result


# ---- Network / connect (rows 9-14) -----------------------------------------------------------


def test_nothing_listening_is_unreachable_at_once(healthy: Healthy) -> None:
    address = "127.5.0.9"
    dead = Host("dead", address=address, port=closed_port(address), connect_timeout=10)
    r = healthy.run(dead)["dead"]
    assert r.status is Status.UNREACHABLE
    assert "refused" in (r.error or "")
    assert r.duration < 1.0


# Rows 10 and 14 need name resolution without DNS (the resolver here is not on
# loopback). The CLI runs in a subprocess whose processes (CLI, forkserver,
# workers) all load this sitecustomize: every name that is not an IP address is
# resolved from a table in the environment (or fails) and logged; none reaches DNS.
RESOLVER_STUB = '''
import ipaddress, json, os, socket
_real = socket.getaddrinfo
_table = json.loads(os.environ["FLEETEXEC_TEST_RESOLVE"])
_log = os.environ["FLEETEXEC_TEST_RESOLVE_LOG"]
def getaddrinfo(host, port, *args, **kwargs):
    try:
        ipaddress.ip_address(host)
    except (TypeError, ValueError):
        with open(_log, "a") as log:
            log.write(f"{host}\\n")
        entries = _table.get(host)
        if not entries:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, p)) for ip, p in entries]
    return _real(host, port, *args, **kwargs)
socket.getaddrinfo = getaddrinfo
'''


def cli_with_resolver(tmp_path: Path, inventory: Path, table: dict[str, list[tuple[str, int]]],
                      *args: str) -> tuple[dict[str, dict], list[str]]:
    """`fleetexec run -o json` with the stub resolver; (hosts by name, names looked up)."""
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "sitecustomize.py").write_text(RESOLVER_STUB)
    log = tmp_path / "lookups.log"
    log.touch()
    env = {**os.environ, "FLEETEXEC_TEST_RESOLVE": json.dumps(table),
           "FLEETEXEC_TEST_RESOLVE_LOG": str(log),
           "PYTHONPATH": os.pathsep.join(p for p in (str(stub), os.environ.get("PYTHONPATH"))
                                         if p)}
    done = subprocess.run(
        [sys.executable, "-m", "fleetexec", "run", "-i", str(inventory), "--no-system-known-hosts",
         "-o", "json", *args, "--", "echo alive"],
        capture_output=True, text=True, timeout=60, env=env)
    assert "Traceback" not in done.stderr, done.stderr
    hosts = {h["host"]: h for h in json.loads(done.stdout)["hosts"]}
    assert (hosts["healthy"]["status"], hosts["healthy"]["stdout"]) == ("ok", "alive\n")
    return hosts, log.read_text().splitlines()


def healthy_inventory(sshd: OpenSSHServer, tmp_path: Path, extra: dict[str, str]) -> Path:
    """The healthy real host plus `extra` hosts (name -> address) in one inventory."""
    inventory = sshd.write_inventory(tmp_path / "inv.yaml", [HEALTHY_ADDRESS], names=["healthy"])
    lines = [f'  "{name}": {{ address: "{address}", connect_timeout: {CONNECT} }}\n'
             for name, address in extra.items()]
    inventory.write_text(inventory.read_text() + "".join(lines))
    return inventory


def test_name_that_does_not_resolve_is_unreachable_after_one_lookup(
    sshd: OpenSSHServer, tmp_path: Path
) -> None:
    inventory = healthy_inventory(sshd, tmp_path, {"ghost": "no-such-host.test"})
    hosts, lookups = cli_with_resolver(tmp_path, inventory, {})
    r = hosts["ghost"]
    assert r["status"] == "unreachable"
    assert r["error"].startswith("cannot resolve no-such-host.test")
    assert r["duration"] < 1.0
    assert lookups == ["no-such-host.test"]  # one lookup: no retry storm


def test_black_hole_times_out_at_the_connect_deadline(healthy: Healthy) -> None:
    with FaultServer("blackhole", "127.5.0.11") as server:
        r = healthy.run(fault_host(server))["faulty"]
    assert r.status is Status.TIMEOUT
    assert r.error == f"TCP connect did not complete within {CONNECT:g}s"
    within(r, CONNECT)


def test_server_that_never_speaks_times_out_at_the_connect_deadline(healthy: Healthy) -> None:
    with FaultServer("tarpit", "127.5.0.12") as server:
        r = healthy.run(fault_host(server))["faulty"]
    assert r.status is Status.TIMEOUT
    assert r.error == f"no SSH banner within {CONNECT:g}s"
    within(r, CONNECT)


def test_server_closing_before_its_banner_is_retried_then_connection_lost(
    healthy: Healthy,
) -> None:
    # A few retries with backoff; the deadline (5 s) or their count ends them.
    with FaultServer("accept-close", "127.5.0.13") as server:
        r = healthy.run(fault_host(server, connect_timeout=5))["faulty"]
        attempts = server.accepted
    assert r.status is Status.CONNECTION_LOST, r.error
    assert "before its SSH banner" in (r.error or "") and "MaxStartups" in (r.error or "")
    assert 2 <= attempts <= 10  # retried, but a few times only: no storm
    assert r.duration < 5 + GRACE


def test_exceeded_maxstartups_line_is_retried_then_connection_lost_with_hint(
    healthy: Healthy,
) -> None:
    with FaultServer("maxstartups", "127.5.0.13") as server:
        r = healthy.run(fault_host(server, connect_timeout=5))["faulty"]
        attempts = server.accepted
    assert r.status is Status.CONNECTION_LOST, r.error
    assert "MaxStartups" in (r.error or "")
    assert 2 <= attempts <= 10
    assert r.duration < 5 + GRACE


def test_real_sshd_over_maxstartups_ends_ok_through_the_bounded_retry(tmp_path: Path) -> None:
    with OpenSSHServer(max_startups="2:100:2") as server:
        hosts_addresses = addresses(20, base="127.5.1.1")
        known = server.write_known_hosts(tmp_path / "known_hosts", hosts_addresses)
        hosts = [Host(f"h{i + 1}", address=a, port=server.port, user=server.user,
                      key_files=(str(server.client_key_path),))
                 for i, a in enumerate(hosts_addresses)]
        result = fleetexec.run(hosts, "echo alive", known_hosts=[str(known)],
                               system_known_hosts=False, parallel=20, connect_timeout=10,
                               command_timeout=10)
    assert len(result) == 20
    for r in result.values():
        # Either the bounded retry got through, or the hint says why it did not.
        assert r.ok or (r.status is Status.CONNECTION_LOST and "MaxStartups" in (r.error or "")
                        ), (r.host, r.status, r.error)
        assert r.duration < 10 + GRACE
    assert len(result.succeeded) >= 15  # the retry makes "ok" the common case


def test_several_addresses_are_tried_in_order_the_first_refusing(
    sshd: OpenSSHServer, tmp_path: Path
) -> None:
    refused = ("127.5.0.14", closed_port("127.5.0.14"))
    inventory = healthy_inventory(sshd, tmp_path, {"multi": "multi.test"})
    kh = Path(tmp_path / "known_hosts")
    kh.write_text(kh.read_text() + f"[multi.test]:{sshd.port} {sshd.host_public_key}\n")
    table = {"multi.test": [refused, (HEALTHY_ADDRESS, sshd.port)]}
    hosts, lookups = cli_with_resolver(tmp_path, inventory, table)
    assert hosts["multi"]["status"] == "ok" and hosts["multi"]["stdout"] == "alive\n"
    assert lookups == ["multi.test"]


def test_one_deadline_covers_every_address_a_black_hole_first_uses_it_up(
    sshd: OpenSSHServer, tmp_path: Path
) -> None:
    with FaultServer("blackhole", "127.5.0.14") as hole:
        inventory = healthy_inventory(sshd, tmp_path, {"multi": "multi.test"})
        kh = Path(tmp_path / "known_hosts")
        kh.write_text(kh.read_text() + f"[multi.test]:{sshd.port} {sshd.host_public_key}\n")
        table = {"multi.test": [(hole.address, hole.port), (HEALTHY_ADDRESS, sshd.port)]}
        hosts, _ = cli_with_resolver(tmp_path, inventory, table)
    r = hosts["multi"]
    assert r["status"] == "timeout", r
    assert CONNECT - 0.1 <= r["duration"] < CONNECT + GRACE


# ---- Protocol / handshake (rows 15-23) -------------------------------------------------------

IMMEDIATE: list[tuple[str, FaultKind, str]] = [
    ("15-http", "http", "SSH handshake failed: Error reading SSH protocol banner"),
    ("15-binary", "binary", "SSH handshake failed: Error reading SSH protocol banner"),
    ("16-lines", "lines", "SSH handshake failed: Indecipherable protocol version"),
    ("17-ssh1", "ssh1", "SSH handshake failed: Incompatible version (1.5 instead of 2.0)"),
    ("18-bad-packet", "bad-packet", "SSH handshake failed: Invalid packet blocking"),
    ("20-no-newline", "no-newline", "not an SSH server: a first line over 8192 bytes"),
]


@pytest.mark.parametrize(("kind", "error"), [(k, e) for _, k, e in IMMEDIATE],
                         ids=[row for row, _, _ in IMMEDIATE])
def test_not_ssh_is_a_protocol_error_at_once(
    healthy: Healthy, kind: FaultKind, error: str
) -> None:
    # A 10 MiB endless first line for no-newline: the 8 KiB cap must stop it early.
    with FaultServer(kind, "127.5.0.15", cap=10 * MIB) as server:
        r = healthy.run(fault_host(server, connect_timeout=10))["faulty"]
    assert r.status is Status.PROTOCOL_ERROR
    assert (r.error or "").startswith(error), r.error
    assert "\n" not in (r.error or "") and "\r" not in (r.error or "")  # one line
    quick(r, 10)


SILENT: list[tuple[str, FaultKind, dict[str, object]]] = [
    ("19-banner-then-silence", "banner-silence", {}),
    ("21-slow-banner", "slow-drip", {"interval": 0.2}),  # 21 bytes: 4.2 s, past the deadline
    ("22-endless-drip", "slow-drip", {"interval": 0.1, "endless": True}),
]


@pytest.mark.parametrize(("kind", "options"), [(k, o) for _, k, o in SILENT],
                         ids=[row for row, _, _ in SILENT])
def test_stalled_handshake_times_out_at_the_overall_deadline(
    healthy: Healthy, kind: FaultKind, options: dict
) -> None:
    with FaultServer(kind, "127.5.0.19", **options) as server:
        r = healthy.run(fault_host(server))["faulty"]
    assert r.status is Status.TIMEOUT
    assert r.error and f"within {CONNECT:g}s" in r.error  # readable, never empty
    within(r, CONNECT)  # bytes that keep arriving do not extend it


def test_old_but_acceptable_algorithms_connect(healthy: Healthy, tmp_path: Path) -> None:
    old = ["KexAlgorithms diffie-hellman-group14-sha256", "Ciphers aes128-ctr",
           "MACs hmac-sha2-256"]
    with OpenSSHServer(extra_config=old) as server:
        known = server.write_known_hosts(tmp_path / "old_known_hosts", ["127.5.0.23"])
        host = Host("old", address="127.5.0.23", port=server.port, user=server.user,
                    key_files=(str(server.client_key_path),), connect_timeout=20)
        r = healthy.run(host, known_hosts=[healthy.known_hosts, str(known)])["old"]
    assert (r.status, r.stdout) == (Status.OK, b"alive\n")


def test_peer_offering_only_cbc_ciphers_is_refused_clearly(
    healthy: Healthy, tmp_path: Path
) -> None:
    with OpenSSHServer(extra_config=["Ciphers aes128-cbc"]) as server:
        known = server.write_known_hosts(tmp_path / "cbc_known_hosts", ["127.5.0.23"])
        host = Host("cbc", address="127.5.0.23", port=server.port, user=server.user,
                    key_files=(str(server.client_key_path),), connect_timeout=20)
        r = healthy.run(host, known_hosts=[healthy.known_hosts, str(known)])["cbc"]
    assert r.status is Status.PROTOCOL_ERROR
    assert "cipher" in (r.error or "").lower(), r.error
    quick(r, 20)


def test_peer_without_strict_kex_connects_by_default_and_is_refused_when_required() -> None:
    hosts = [MockHost("old", strict_kex=False), MockHost("new")]
    with MockFleet(hosts) as fleet:
        default = fleet.run("echo hi", command_timeout=5)
        strict = fleet.run("echo hi", command_timeout=5, require_strict_kex=True)
    assert default["old"].stdout == b"hi\n" and default["new"].ok  # allowed: policy
    assert strict["old"].status is Status.PROTOCOL_ERROR
    assert "strict key exchange" in (strict["old"].error or "")
    assert strict["old"].stdout == b""  # refused before any credential or command
    assert strict["new"].ok


# ---- Command / channel (rows 32-43) ----------------------------------------------------------


def test_non_zero_exit_codes_are_recorded_exactly() -> None:
    result = mock_run([MockHost("exit3", default=Reply("out\n", "err\n", exit_code=3)),
                       MockHost("exit300", default=Reply(exit_code=300)),
                       MockHost("exit4e9", default=Reply(exit_code=4_000_000_000))])
    for name, code in (("exit3", 3), ("exit300", 300), ("exit4e9", 4_000_000_000)):
        r = result[name]
        assert (r.status, r.exit_code, r.signal) == (Status.FAILED, code, None)
        assert r.error == f"exit code {code}"
    assert (result["exit3"].stdout, result["exit3"].stderr) == (b"out\n", b"err\n")
    assert result.exit_code == 1  # failed commands, yet every host was reached


def test_no_exit_status_keeps_output_and_is_not_an_exit_code() -> None:
    r = mock_run([MockHost("noexit", fault=Fault.no_exit_status(b"out so far\n"))])["noexit"]
    assert (r.status, r.exit_code, r.signal) == (Status.NO_EXIT_STATUS, None, None)
    assert r.stdout == b"out so far\n"
    assert r.duration < COMMAND + GRACE


def test_killed_by_signal_names_the_signal_and_keeps_output() -> None:
    r = mock_run([MockHost("killed", fault=Fault.signal("TERM", b"before\n"))])["killed"]
    assert (r.status, r.exit_code, r.signal) == (Status.KILLED, None, "TERM")
    assert r.stdout == b"before\n"


def test_hung_command_times_out_keeps_output_and_frees_its_slot() -> None:
    # parallel=1: the healthy host can only run once the hung host's slot is free again.
    started = time.monotonic()
    result = mock_run([MockHost("hang", fault=Fault.hang(b"started\n"))], parallel=1)
    r = result["hang"]
    assert r.status is Status.TIMEOUT
    assert r.error == f"command did not finish within {COMMAND:g}s (output so far kept)"
    assert r.stdout == b"started\n"
    within(r, COMMAND)
    assert time.monotonic() - started < COMMAND + 2 * GRACE


def test_endless_output_does_not_extend_the_command_deadline() -> None:
    r = mock_run([MockHost("trickle", fault=Fault.trickle(None, interval=0.1))])["trickle"]
    assert r.status is Status.TIMEOUT
    lines = r.stdout.splitlines()
    assert len(lines) >= 5 and lines[0] == b"trickle: trickle line 1"  # output so far kept
    within(r, COMMAND)


def test_huge_stdout_is_cut_at_the_cap_without_deadlock() -> None:
    r = mock_run([MockHost("flood", fault=Fault.flood(64))], max_output=MIB,
                 command_timeout=30)["flood"]
    assert r.status is Status.OK and r.exit_code == 0
    assert r.stdout == PATTERN * 16 and r.stdout_truncated  # the first MiB, exactly
    assert r.stderr == b"" and not r.stderr_truncated


def test_stderr_flood_with_idle_stdout_completes() -> None:
    r = mock_run([MockHost("errflood", fault=Fault.flood(16, "stderr"))], max_output=MIB,
                 command_timeout=30)["errflood"]
    assert r.status is Status.OK
    assert r.stderr == PATTERN * 16 and r.stderr_truncated
    assert r.stdout == b"" and not r.stdout_truncated


def test_both_streams_flooding_on_many_real_hosts_complete_intact(sshd_fleet) -> None:
    # 1.5 MB on each stream: together more than the 2 MiB channel window, so the server
    # blocks unless both are drained. A lost wake-up between the two streams used to leave
    # about one host in ten stuck until the command deadline; 30 hosts x 2 runs catch it.
    fleet = sshd_fleet(30, first="127.0.5.10")
    size = 1_500_000
    command = (f"head -c {size} /dev/zero | tr '\\0' o & "
               f"head -c {size} /dev/zero | tr '\\0' e >&2; wait")
    for _ in range(2):
        result = fleetexec.run(fleet.hosts, command, max_output=2 * MIB,
                               **{**fleet.run_options(), "command_timeout": 20})
        assert result.counts() == {Status.OK: 30}, {(str(r.status), r.error)
                                                    for r in result.values()}
        for r in result.values():
            assert r.stdout == b"o" * size and r.stderr == b"e" * size


def test_both_streams_flooding_complete_intact() -> None:
    r = mock_run([MockHost("both", fault=Fault.flood(8, "both"))], max_output=8 * MIB,
                 command_timeout=30)["both"]
    assert r.status is Status.OK
    assert r.stdout == PATTERN * 128 and r.stderr == PATTERN * 128
    assert not r.truncated


def test_one_enormous_line_is_capped_and_renders_as_a_short_cell() -> None:
    result = mock_run([MockHost("bigline", default=Reply(b"x" * (16 * MIB)))], max_output=MIB,
                      command_timeout=30)
    r = result["bigline"]
    assert r.status is Status.OK
    assert r.stdout == b"x" * MIB and r.stdout_truncated
    row = next(line for line in render_table(result).splitlines() if line.startswith("bigline"))
    assert len(row) < 120 and row.endswith("[truncated]")


def test_binary_output_is_kept_byte_for_byte() -> None:
    r = mock_run([MockHost("binary", fault=Fault.binary())])["binary"]
    assert r.status is Status.OK
    assert r.stdout == BINARY_PAYLOAD and r.stderr == BINARY_PAYLOAD
    assert "\ufffd" in r.stdout_text  # decoded with replacement for text use


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
def test_connection_cut_mid_output_is_connection_lost_with_partial_output(rst: bool) -> None:
    r = mock_run([MockHost("cut", fault=Fault.drop(b"partial output\n", rst=rst))])["cut"]
    assert r.status is Status.CONNECTION_LOST and not r.ok
    assert r.error == "connection lost before the command finished (output is incomplete)"
    assert r.stdout == b"partial output\n"
    assert r.exit_code is None
    assert r.duration < COMMAND + GRACE


def test_server_refusing_the_command_is_a_clear_per_host_error() -> None:
    # exec is sent without waiting for the answer: the refusal is found once the channel closes
    r = mock_run([MockHost("noexec", fault=Fault.refuse_exec())])["noexec"]
    assert r.status is Status.PROTOCOL_ERROR
    assert r.error == "server refused the command channel: it refused to run the command"
    assert r.stdout == b"" and r.exit_code is None


def test_server_refusing_sessions_is_a_clear_per_host_error(
    healthy: Healthy, tmp_path: Path
) -> None:
    with OpenSSHServer(max_sessions=0) as server:
        known = server.write_known_hosts(tmp_path / "nosession_known_hosts", ["127.5.0.43"])
        host = Host("nosession", address="127.5.0.43", port=server.port, user=server.user,
                    key_files=(str(server.client_key_path),), connect_timeout=20)
        r = healthy.run(host, known_hosts=[healthy.known_hosts, str(known)])["nosession"]
    assert r.status is Status.PROTOCOL_ERROR
    assert (r.error or "").startswith("server refused the command channel"), r.error
    assert r.stdout == b"" and r.exit_code is None


# ---- the FaultServer kinds this file added (accept-close, maxstartups) -----------------------


@pytest.mark.parametrize(("kind", "expected"), [("accept-close", b""),
                                                ("maxstartups", MAXSTARTUPS)])
def test_close_at_once_kinds_send_their_bytes_then_close(kind: FaultKind, expected: bytes) -> None:
    with FaultServer(kind, "127.5.0.99") as server:
        for _ in range(3):  # every connection, not only the first
            with socket.create_connection((server.address, server.port), timeout=5) as sock:
                received = b""
                while chunk := sock.recv(4096):
                    received += chunk
                assert received == expected
        assert server.accepted == 3
    assert server.alive_threads == 0
