"""The mock fleet, checked with a plain, strict paramiko client (no fleetexec code)."""

from __future__ import annotations

import re
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import paramiko
import pytest
import yaml
from paramiko.common import MSG_CHANNEL_REQUEST

from fleetexec.testing import BINARY_PAYLOAD, Fault, MockFleet, MockHost, Reply

TIMEOUT = 2.0


def connect(fleet: MockFleet, name: str) -> paramiko.SSHClient:
    """What a careful client does: known_hosts only, RejectPolicy, only our key."""
    host = fleet[name]
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.load_host_keys(str(fleet.known_hosts_path))
    # Without TCP_NODELAY each command on a reused connection waits ~40 ms for a delayed ACK.
    sock = socket.create_connection((host.address, host.port), TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        client.connect(
            host.address, host.port, username=fleet.user, key_filename=str(fleet.key_path),
            look_for_keys=False, allow_agent=False, sock=sock,
            timeout=TIMEOUT, banner_timeout=TIMEOUT, auth_timeout=TIMEOUT,
        )
    except BaseException:
        client.close()
        sock.close()
        raise
    return client


def run(client: paramiko.SSHClient, command: str) -> tuple[bytes, bytes, paramiko.Channel]:
    """Drain stdout and stderr together until the channel closes (or fail at TIMEOUT)."""
    transport = client.get_transport()
    assert transport is not None
    chan = transport.open_session(timeout=TIMEOUT)
    chan.exec_command(command)
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + TIMEOUT
    while True:
        busy = False
        if chan.recv_ready():
            out += chan.recv(1 << 16)
            busy = True
        if chan.recv_stderr_ready():
            err += chan.recv_stderr(1 << 16)
            busy = True
        if not busy:
            if chan.closed or not transport.is_active():
                return bytes(out), bytes(err), chan
            assert time.monotonic() < deadline, f"{command!r} still running"
            time.sleep(0.001)


Factory = Callable[..., MockFleet]


@pytest.fixture
def fleets(mock_fleet_factory: Factory) -> Factory:
    """The plugin's factory, under a short name."""
    return mock_fleet_factory


def one(fleets: Factory, **host: Any) -> tuple[MockFleet, paramiko.SSHClient]:
    fleet = fleets([MockHost(**host)])
    return fleet, connect(fleet, "host1")


# --- the fleet, its files and its keys -------------------------------------------------


def test_start_stop_writes_inventory_known_hosts_and_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.perf_counter()
    fleet = MockFleet(5).start()
    with capsys.disabled():
        print(f"\n5-host MockFleet started in {time.perf_counter() - started:.3f} s")
    try:
        inventory = yaml.safe_load(fleet.inventory_path.read_text())
        assert inventory["defaults"] == {
            "user": fleet.user,
            "key_files": [str(fleet.key_path)],
            "known_hosts_file": str(fleet.known_hosts_path),
            "connect_timeout": 5,
        }
        assert list(inventory["hosts"]) == [f"host{i}" for i in range(1, 6)]
        for i, (name, entry) in enumerate(inventory["hosts"].items(), 1):
            host = fleet[name]
            assert entry == {"address": f"127.77.0.{i}", "port": host.port}
            assert (host.name, host.address) == (name, f"127.77.0.{i}")
        assert Path(fleet.key_path).is_absolute()
        assert stat.S_IMODE(fleet.key_path.stat().st_mode) == 0o600
        public = fleet.key_path.with_suffix(".pub").read_text().split()
        assert public[0] == "ssh-ed25519"
        assert paramiko.Ed25519Key(filename=str(fleet.key_path)).get_base64() == public[1]
        lines = fleet.known_hosts_path.read_text().splitlines()
        assert lines == [
            f"[127.77.0.{i}]:{h.port} ssh-ed25519 {h.host_key.get_base64()}"
            for i, h in enumerate(fleet, 1)
        ]
        assert len({h.host_key.get_base64() for h in fleet}) == 5  # a fresh key per host
        workdir = fleet.workdir
    finally:
        fleet.stop()
    assert workdir is not None and not workdir.exists()
    assert all(t.daemon for t in threading.enumerate() if t is not threading.main_thread())


def test_every_host_answers_as_itself(fleets: Factory) -> None:
    fleet = fleets(3)
    for host in fleet:
        with connect(fleet, host.name) as client:
            assert run(client, "hostname")[0] == f"{host.name}\n".encode()


def test_given_workdir_is_kept_and_addresses_roll_over(fleets: Factory, tmp_path: Path) -> None:
    fleet = fleets(255, workdir=tmp_path / "fleet", user="deploy", connect_timeout=1.5)
    assert fleet["host254"].address == "127.77.0.254"
    assert fleet["host255"].address == "127.77.1.1"
    inventory = yaml.safe_load(fleet.inventory_path.read_text())
    assert inventory["defaults"]["user"] == "deploy"
    assert inventory["defaults"]["connect_timeout"] == 1.5
    fleet.stop()
    assert (tmp_path / "fleet" / "inventory.yaml").exists()


def test_inventory_keeps_awkward_names_as_strings(fleets: Factory) -> None:
    fleet = fleets([MockHost("no"), MockHost("web-01.example.com"), MockHost("12")], user="on")
    inventory = yaml.safe_load(fleet.inventory_path.read_text())
    assert list(inventory["hosts"]) == ["no", "web-01.example.com", "12"]
    assert inventory["defaults"]["user"] == "on"


def test_an_empty_fleet_has_an_empty_inventory() -> None:
    with MockFleet(0) as fleet:
        assert yaml.safe_load(fleet.inventory_path.read_text())["hosts"] == {}
        assert fleet.known_hosts_path.read_text() == ""


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        MockFleet([MockHost("a"), MockHost("a")])
    with pytest.raises(ValueError, match="host fault"):
        MockHost(replies={"x": Fault.reject_auth()})
    with pytest.raises(ValueError, match="host_key_type"):
        MockHost(host_key_type="dsa")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stream"):
        Fault.flood(1, stream="stdin")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a Reply"):
        MockHost(replies={"x": lambda cmd: None}).respond("x")  # type: ignore[dict-item,return-value]
    with pytest.raises(TypeError, match="must be a Reply"):
        MockHost(default=lambda cmd: Fault.reject_auth()).respond("x")
    with pytest.raises(ValueError, match="unknown fault"):
        Fault("explode")
    with pytest.raises(RuntimeError, match="not started"):
        _ = MockFleet(1).inventory_path


@pytest.mark.parametrize("key_type", ["ecdsa", "rsa"])
def test_other_host_key_types(fleets: Factory, key_type: str) -> None:
    fleet, client = one(fleets, host_key_type=key_type)
    with client:
        expected = {"ecdsa": "ecdsa-sha2-nistp256", "rsa": "ssh-rsa"}[key_type]
        assert fleet["host1"].host_key.get_name() == expected
        assert run(client, "true")[2].recv_exit_status() == 0


# --- scripted replies and the built-in defaults ----------------------------------------


def test_replies_match_by_glob_regex_and_callable_first_match_wins(fleets: Factory) -> None:
    host = MockHost(
        replies={
            "uptime": Reply("up 3 days\n"),
            "systemctl restart *": Reply(stderr="restarting\n", exit_code=3),
            re.compile(r"^cat /etc/(\w+)$"): lambda cmd: Reply(cmd.split("/")[-1].upper()),
            "*": Reply("catch-all\n"),
            "never": Reply("shadowed\n"),
        },
    )
    fleet = fleets([host])
    with connect(fleet, "host1") as client:
        assert run(client, "uptime")[:2] == (b"up 3 days\n", b"")
        out, err, chan = run(client, "systemctl restart nginx")
        assert (out, err, chan.recv_exit_status()) == (b"", b"restarting\n", 3)
        assert run(client, "cat /etc/hosts")[0] == b"HOSTS"
        assert run(client, "never")[0] == b"catch-all\n"


def test_host_default_then_fleet_default_then_builtins(fleets: Factory) -> None:
    fleet = fleets(
        [MockHost(default=Reply("host default\n")), MockHost(), MockHost("plain")],
        default=lambda cmd: Reply(f"fleet default: {cmd}\n") if cmd != "hostname" else Reply("h\n"),
    )
    with connect(fleet, "host1") as a, connect(fleet, "host2") as b:
        assert run(a, "anything")[0] == b"host default\n"
        assert run(b, "anything")[0] == b"fleet default: anything\n"
    bare = fleets([MockHost("plain")])
    with connect(bare, "plain") as c:
        assert run(c, "hostname")[0] == b"plain\n"


@pytest.mark.parametrize(
    ("command", "stdout", "stderr", "status"),
    [
        ("hostname", b"host1\n", b"", 0),
        ("whoami", b"fleet\n", b"", 0),
        ("true", b"", b"", 0),
        ("false", b"", b"", 1),
        ("echo hello  'big world'", b"hello big world\n", b"", 0),
        ("sleep 0.05", b"", b"", 0),
        ("exit 300", b"", b"", 300),
        ("rm -rf /", b"", b"mockfleet: command not scripted: rm -rf /\n", 127),
        ("printf hi", b"", b"mockfleet: command not scripted: printf hi\n", 127),
    ],
)
def test_builtin_commands(
    fleets: Factory, command: str, stdout: bytes, stderr: bytes, status: int
) -> None:
    _, client = one(fleets)
    with client:
        out, err, chan = run(client, command)
        assert (out, err, chan.recv_exit_status()) == (stdout, stderr, status)


def test_df_is_a_plausible_table_naming_the_host(fleets: Factory) -> None:
    fleet = fleets(2)
    with connect(fleet, "host1") as a, connect(fleet, "host2") as b:
        one_df, two_df = run(a, "df -h")[0].decode(), run(b, "df -h")[0].decode()
    assert one_df.startswith("Filesystem") and "/dev/mapper/host1-root" in one_df
    assert one_df == run_again(fleet, "host1", "df -h")  # deterministic
    assert one_df != two_df


def run_again(fleet: MockFleet, name: str, command: str) -> str:
    with connect(fleet, name) as client:
        return run(client, command)[0].decode()


def test_exit_codes_are_32_bit_and_stderr_is_separate(fleets: Factory) -> None:
    _, client = one(fleets, replies={"x": Reply("o", "e", exit_code=300)})
    with client:
        out, err, chan = run(client, "x")
        assert (out, err, chan.recv_exit_status()) == (b"o", b"e", 300)


def test_fast_commands_never_lose_the_exec_reply(fleets: Factory) -> None:
    # The command is released only after the exec request was answered; otherwise an
    # instant reply can close the channel first and exec_command raises "Channel closed".
    # Measured without that ordering: ~1 failure in 2000 at this switch interval.
    _, client = one(fleets)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with client:
            for _ in range(200):
                assert run(client, "true")[2].recv_exit_status() == 0
    finally:
        sys.setswitchinterval(interval)


def test_passthrough_runs_locally_only_when_asked(fleets: Factory) -> None:
    fleet = fleets([MockHost(passthrough=True), MockHost()])
    with connect(fleet, "host1") as real, connect(fleet, "host2") as fake:
        out, err, chan = run(real, "printf out; printf err >&2; exit 4")
        assert (out, err, chan.recv_exit_status()) == (b"out", b"err", 4)
        assert run(fake, "printf out")[2].recv_exit_status() == 127


# --- command faults ---------------------------------------------------------------------


def test_flood_both_streams_8_mib(fleets: Factory) -> None:
    _, client = one(fleets, fault=Fault.flood(8, stream="both"))
    with client:
        out, err, chan = run(client, "anything")
        expected = bytes(range(256)) * 256 * 128
        assert len(out) == len(err) == 8 << 20
        assert out == expected and err == expected
        assert chan.recv_exit_status() == 0


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_flood_one_stream(fleets: Factory, stream: Literal["stdout", "stderr"]) -> None:
    _, client = one(fleets, replies={"cat big": Fault.flood(3, stream=stream)})
    with client:
        out, err, _ = run(client, "cat big")
        assert (len(out), len(err)) == ((3 << 20, 0) if stream == "stdout" else (0, 3 << 20))


def test_binary_bytes_arrive_exactly(fleets: Factory) -> None:
    _, client = one(fleets, fault=Fault.binary())
    with client:
        out, err, chan = run(client, "x")
        assert out == err == BINARY_PAYLOAD
        assert chan.recv_exit_status() == 0
    for needle in (b"\xff", b"\x00", b"\x1b]0;", b"\x07", b"\x1b[2J", b"\x1b]52;", b"\x1b]8;;",
                   b"\x1b[6n", b"\x9b", b"\xe2\x80\xae", b"\x08", b"\r"):
        assert needle in BINARY_PAYLOAD
    with pytest.raises(UnicodeDecodeError):
        BINARY_PAYLOAD.decode()


@pytest.mark.parametrize("rst", [False, True])
def test_drop_kills_the_transport_before_eof(fleets: Factory, rst: bool) -> None:
    _, client = one(fleets, fault=Fault.drop(b"partial\n", rst=rst))
    with client:
        out, _, chan = run(client, "x")
        transport = client.get_transport()
        assert transport is not None and not transport.is_active()
        assert not chan.eof_received
        assert chan.recv_exit_status() == -1
        if not rst:  # a FIN delivers what was sent before it; an RST may discard it
            assert out == b"partial\n"


def test_no_exit_status_sends_eof_and_close_only(fleets: Factory) -> None:
    _, client = one(fleets, fault=Fault.no_exit_status(b"done\n"))
    with client:
        out, _, chan = run(client, "x")
        assert out == b"done\n"
        assert chan.eof_received and chan.closed
        assert chan.recv_exit_status() == -1
        transport = client.get_transport()
        assert transport is not None and transport.is_active()


def test_signal_sends_an_exit_signal_request(fleets: Factory) -> None:
    _, client = one(fleets, fault=Fault.signal("SIGKILL", b"dying\n"))
    with client:
        transport = client.get_transport()
        assert transport is not None
        seen: list[tuple[object, ...]] = []
        original = paramiko.Transport._channel_handler_table[MSG_CHANNEL_REQUEST]  # type: ignore[attr-defined]

        def spy(chan: paramiko.Channel, m: paramiko.Message) -> None:
            start = m.packet.tell()
            kind = m.get_text()
            if kind == "exit-signal":
                seen.append((kind, m.get_boolean(), m.get_text(), m.get_boolean(),
                             m.get_text(), m.get_text(), m.get_remainder()))
            m.packet.seek(start)
            original(chan, m)

        # paramiko ignores exit-signal; watch the request arrive on this transport only
        table = dict(transport._channel_handler_table)  # type: ignore[attr-defined]
        table[MSG_CHANNEL_REQUEST] = spy
        transport._channel_handler_table = table  # type: ignore[attr-defined]
        out, _, chan = run(client, "x")
        assert out == b"dying\n"
        assert seen == [("exit-signal", False, "KILL", False, "", "", b"")]
        assert chan.eof_received and chan.recv_exit_status() == -1


def test_hang_keeps_the_channel_open_until_the_client_closes_it(fleets: Factory) -> None:
    fleet, client = one(fleets, replies={"deploy": Fault.hang(b"starting\n")})
    with client:
        transport = client.get_transport()
        assert transport is not None
        chan = transport.open_session(timeout=TIMEOUT)
        chan.settimeout(TIMEOUT)
        chan.exec_command("deploy")
        assert chan.recv(100) == b"starting\n"
        assert not chan.status_event.wait(0.2)  # nothing more comes: no EOF, no status
        chan.close()
        assert run(client, "true")[2].recv_exit_status() == 0  # the connection still works


def test_stop_ends_hung_commands_and_connections(fleets: Factory) -> None:
    fleet, client = one(fleets, fault=Fault.hang())
    with client:
        transport = client.get_transport()
        assert transport is not None
        chan = transport.open_session(timeout=TIMEOUT)
        chan.exec_command("x")
        fleet.stop()
        assert chan.status_event.wait(TIMEOUT)
        assert chan.recv_exit_status() == -1
    deadline = time.monotonic() + TIMEOUT  # every server-side thread ends by itself
    while any(t.name.startswith("mockfleet-") for t in threading.enumerate()):
        assert time.monotonic() < deadline, [t.name for t in threading.enumerate()]
        time.sleep(0.01)


def test_trickle_prints_lines_at_an_interval(fleets: Factory) -> None:
    _, client = one(fleets, replies={"tail": Fault.trickle(3, 0.01)})
    with client:
        out, _, chan = run(client, "tail")
        assert out == b"".join(b"host1: trickle line %d\n" % i for i in (1, 2, 3))
        assert chan.recv_exit_status() == 0


def test_endless_trickle_keeps_printing(fleets: Factory) -> None:
    _, client = one(fleets, fault=Fault.trickle(interval=0.01))
    with client:
        transport = client.get_transport()
        assert transport is not None
        chan = transport.open_session(timeout=TIMEOUT)
        chan.settimeout(TIMEOUT)
        chan.exec_command("x")
        received = b""
        while received.count(b"\n") < 10:
            received += chan.recv(1000)
        assert not chan.exit_status_ready()


# --- connection faults -------------------------------------------------------------------


def test_reject_auth(fleets: Factory) -> None:
    fleet = fleets([MockHost(fault=Fault.reject_auth())])
    with pytest.raises(paramiko.AuthenticationException):
        connect(fleet, "host1")


def test_slow_auth_delays_the_answer(fleets: Factory) -> None:
    fleet = fleets([MockHost(fault=Fault.slow_auth(0.3))])
    started = time.monotonic()
    with connect(fleet, "host1") as client:
        assert time.monotonic() - started >= 0.3
        assert run(client, "true")[2].recv_exit_status() == 0


def test_slow_auth_beyond_the_auth_timeout_fails(fleets: Factory) -> None:
    fleet = fleets([MockHost(fault=Fault.slow_auth(5))])
    host = fleet["host1"]
    client = paramiko.SSHClient()
    client.load_host_keys(str(fleet.known_hosts_path))
    with client, pytest.raises(paramiko.AuthenticationException, match="timeout"):
        client.connect(host.address, host.port, username=fleet.user,
                       key_filename=str(fleet.key_path), look_for_keys=False,
                       allow_agent=False, timeout=TIMEOUT, auth_timeout=0.2)


def test_fresh_host_key_is_a_bad_host_key(fleets: Factory) -> None:
    fleet = fleets([MockHost(fault=Fault.fresh_host_key()), MockHost()])
    host = fleet["host1"]
    assert host.host_key.get_name() == host.known_key.get_name() == "ssh-ed25519"
    assert host.host_key != host.known_key
    with pytest.raises(paramiko.BadHostKeyException):
        connect(fleet, "host1")
    connect(fleet, "host2").close()  # the neighbour is unaffected


def test_changed_key_type_is_a_bad_host_key(fleets: Factory) -> None:
    fleet = fleets([MockHost(fault=Fault.changed_key_type())])
    host = fleet["host1"]
    assert host.known_key.get_name() == "ssh-ed25519"
    assert host.host_key.get_name() == "ecdsa-sha2-nistp256"
    assert host.known_hosts_line.split()[1] == "ssh-ed25519"
    with pytest.raises(paramiko.BadHostKeyException):
        connect(fleet, "host1")


# --- the pytest plugin -------------------------------------------------------------------


def test_mock_fleet_fixture(mock_fleet: MockFleet) -> None:
    assert [h.name for h in mock_fleet] == ["host1", "host2", "host3"]
    with mock_fleet.client("host3") as client:
        assert run(client, "hostname")[0] == b"host3\n"


@pytest.fixture
def made() -> Iterator[list[MockFleet]]:
    """Requested before mock_fleet_factory, so it is torn down after it."""
    fleets: list[MockFleet] = []
    yield fleets
    for fleet in fleets:
        assert all(h.stopping.is_set() for h in fleet)
        assert fleet.workdir is not None and not fleet.workdir.exists()


def test_mock_fleet_factory_starts_and_stops_fleets(
    made: list[MockFleet], mock_fleet_factory: Factory
) -> None:
    made.append(mock_fleet_factory(1))
    made.append(mock_fleet_factory([MockHost("db")], default=Reply("ok\n")))
    with made[1].client("db") as client:
        assert run(client, "anything")[0] == b"ok\n"
    assert made[0].inventory_path.exists()
