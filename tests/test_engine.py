"""The engine: Options, the precedence rule, FleetSession over backends. No root, no sshd."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import fleetexec
from fleetexec import ConfigError, FleetSession, Host, Options, Status
from fleetexec.backends import Backend
from fleetexec.backends.inprocess import InProcessBackend
from fleetexec.backends.process import ProcessBackend
from fleetexec.backends.worker import Channel
from fleetexec.cli import main
from fleetexec.inventory import parse_inventory
from fleetexec.resolve import resolve
from fleetexec.testing import Fault, MockFleet, MockHost, Reply, ScriptedBackend
from fleetexec.testing.faults import closed_port

SRC = Path(fleetexec.__file__).parent


# ---- Options --------------------------------------------------------------------------------


def test_every_option_has_exactly_one_cli_flag_and_the_same_name():
    fields = {f.name for f in dataclasses.fields(Options)}
    run_params = {p.name for p in main.commands["run"].params}
    secrets = {"password": "ask_password", "passphrase": "ask_passphrase",
               "sudo_password": "ask_sudo_password"}
    for name in fields:
        assert (secrets.get(name) or name) in run_params, f"no flag for Options.{name}"
    per_host = {"user", "port", "key_files", "connect_timeout", "command_timeout"}
    assert per_host <= {p.name for p in main.commands["hosts"].params}


def test_a_setting_is_named_in_at_most_five_places_in_src():
    text = "".join(p.read_text() for p in SRC.rglob("*.py"))
    assert text.count("require_strict_kex") <= 5


def test_options_validate_replace_and_round_trip_through_json_without_secrets():
    options = Options(user="deploy", key_files=["a"], password="hunter2", command_timeout=0)
    assert options.key_files == ("a",) and options.password is not None
    assert options.replace(port=2222).port == 2222 and options.port is None
    data = options.to_json()
    assert "password" not in data and "hunter2" not in repr(data)
    again = Options.from_json(data, options.secrets())
    assert again == options
    assert Options.from_json(data).password is None
    for bad in ({"connect_timeout": 0}, {"command_timeout": -1}, {"parallel": 0},
                {"host_key_policy": "no"}, {"key_files": "~/.ssh/id"}, {"max_output": 1.5}):
        with pytest.raises(ConfigError):
            Options(**bad)
    with pytest.raises(ConfigError, match="unknown option 'colour'"):
        options.replace(colour=True)


def test_the_old_timeout_keyword_still_works_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="command_timeout"):
        result = fleetexec.run(["web1"], "true", timeout=3,
                               backend=ScriptedBackend({}, default=MockHost()))
    assert result["web1"].ok


# ---- the precedence rule ----------------------------------------------------------------------

INVENTORY = """
defaults: {user: fromdefaults, command_timeout: 7}
groups:
  web: {hosts: [web1, web2], vars: {port: 2200}}
hosts:
  web1: {user: fromhost}
"""


def test_flags_beat_the_inventory_which_beats_the_builtin_defaults():
    hosts = parse_inventory(INVENTORY).select("web")
    plain = {h.name: h for h in resolve(hosts, Options())}
    assert (plain["web1"].user, plain["web2"].user) == ("fromhost", "fromdefaults")
    assert plain["web1"].port == 2200 and plain["web1"].command_timeout == 7
    assert plain["web1"].connect_timeout == 10.0  # the built-in default
    flagged = {h.name: h for h in resolve(hosts, Options(user="cli", port=22, command_timeout=1))}
    assert {h.user for h in flagged.values()} == {"cli"}
    assert {(h.port, h.command_timeout) for h in flagged.values()} == {(22, 1)}


@pytest.mark.parametrize(("target", "flags", "words"), [
    ("web1:2222", {"port": 2200}, ["port 2222", "2200"]),
    ("alice@web1", {"user": "bob"}, ["user 'alice'", "'bob'"]),
])
def test_a_flag_contradicting_the_target_itself_is_an_error_naming_both(target, flags, words):
    with pytest.raises(ConfigError) as caught:
        resolve([target], Options(**flags))
    assert all(word in str(caught.value) for word in words)
    option = "-p" if "port" in flags else "-u"
    done = CliRunner().invoke(main, ["hosts", "-H", target, option, str(next(iter(
        flags.values())))])
    assert done.exit_code == 2 and all(word in done.output for word in words)


def test_cli_and_api_resolve_the_same_hosts(tmp_path):
    inventory = tmp_path / "inv.yaml"
    inventory.write_text(INVENTORY)
    done = CliRunner().invoke(main, ["hosts", "-i", str(inventory), "-u", "cli", "-t", "3"])
    assert done.exit_code == 0, done.output
    api = resolve(parse_inventory(INVENTORY).select(), Options(user="cli", command_timeout=3))
    for host in api:
        row = next(line.split() for line in done.output.splitlines()
                   if line.startswith(host.name + " "))
        assert [row[2], row[3]] == [str(host.port), host.user]
    assert resolve(["web1"], Options(port=2200))[0].port == 2200  # a target without a port


def test_the_same_host_twice_is_refused():
    with pytest.raises(ConfigError, match="twice"):
        resolve(["web1", "web1"], Options())


# ---- FleetSession over the scripted backend (no sockets) ---------------------------------------


def scripted() -> ScriptedBackend:
    return ScriptedBackend({
        "fast": MockHost(replies={"deploy": Reply("done\n")}),
        "slow": MockHost(replies={"deploy": Reply("done\n", delay=2)}),
        "broken": MockHost(replies={"deploy": Reply(stderr="no space\n", exit_code=28)}),
        "hung": MockHost(fault=Fault.hang(b"starting\n")),
        "locked": MockHost(fault=Fault.reject_auth()),
    })


def test_the_scripted_backend_answers_like_a_fleet_in_milliseconds():
    names = ["fast", "slow", "broken", "hung", "locked"]
    result = fleetexec.run(names, "deploy", backend=scripted(), command_timeout=5)
    assert list(result) == names  # inventory order, whatever the finishing order
    assert result["fast"].stdout == b"done\n" and result["slow"].duration == 2
    assert (result["broken"].status, result["broken"].exit_code) == (Status.FAILED, 28)
    assert result["hung"].status is Status.TIMEOUT and result["hung"].stdout == b"starting\n"
    assert result["locked"].status is Status.AUTH_FAILED
    assert result.exit_code == 3


def test_stream_yields_each_host_as_it_finishes_and_run_one_reads_naturally():
    with FleetSession(["slow", "fast", "broken"], backend=scripted()) as fleet:
        order = [r.host for r in fleet.stream("deploy")]
    assert order == ["fast", "broken", "slow"]
    backend = scripted()
    result = fleetexec.run_one("fast", "deploy", backend=backend)
    assert result.host == "fast" and result.stdout_text == "done\n"
    assert backend.commands == [("fast", "deploy")]
    with pytest.raises(ConfigError, match="one host"):
        fleetexec.run_one("web[1-2]", "true", backend=backend)


def test_a_backend_that_forgets_a_host_is_reported_not_hidden():
    class Forgetful(ScriptedBackend):
        def start(self, hosts, job):
            return iter(list(super().start(hosts, job))[:1])

    result = fleetexec.run(["fast", "slow"], "deploy", backend=Forgetful(scripted().hosts))
    assert result["slow"].status is Status.ERROR and "without a result" in result["slow"].error


def test_every_backend_satisfies_the_protocol():
    from fleetexec.agent import AgentBackend

    for backend in (ProcessBackend(), InProcessBackend(), AgentBackend(), scripted()):
        assert isinstance(backend, Backend)


# ---- the real backends against a mock fleet ----------------------------------------------------


@pytest.fixture
def fleet():
    specs = [MockHost(replies={"deploy": Reply("done\n")}),
             MockHost(replies={"deploy": Reply("done\n", delay=1.0)}),
             MockHost(replies={"deploy": Reply("oops\n", exit_code=3)})]
    with MockFleet(specs) as started:
        yield started


def hosts_of(fleet: MockFleet) -> list[Host]:
    from fleetexec import load_inventory

    return load_inventory(fleet.inventory_path).select()


@pytest.mark.parametrize("make", [ProcessBackend, InProcessBackend], ids=["process", "in-process"])
def test_process_and_in_process_backends_give_the_same_results(fleet, make):
    with FleetSession(hosts_of(fleet), backend=make(), system_known_hosts=False) as session:
        first = session.run("deploy")
        streamed = list(session.stream("deploy"))
    assert [r.status for r in first.values()] == [Status.OK, Status.OK, Status.FAILED]
    assert streamed[-1].host == "host2"  # the slow one comes last
    assert {r.host: r.stdout for r in streamed} == {n: r.stdout for n, r in first.items()}


def test_in_process_runs_leave_no_thread_behind(fleet):
    def ours() -> int:
        return sum(t.name.startswith("fleetexec-") for t in threading.enumerate())

    before = ours()
    for _ in range(3):
        fleetexec.run(hosts_of(fleet), "deploy", backend=InProcessBackend(),
                      system_known_hosts=False)
    deadline = time.monotonic() + 10  # the connections' threads end with their connections
    while ours() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ours() == before, [t.name for t in threading.enumerate()]


def test_leaving_a_stream_early_cancels_and_the_session_still_works(fleet):
    with FleetSession(hosts_of(fleet), system_known_hosts=False) as session:
        for _ in session.stream("deploy"):
            break
        again = session.run("deploy")
    assert again["host1"].ok and again["host3"].status is Status.FAILED


def test_closing_a_worker_channel_while_its_pump_reads_ends_the_read_cleanly():
    """CI caught a worker's pump thread dying with a ValueError: its buffered reader was
    closed from another thread in the middle of a read. One race in a few hundred."""
    failures: list[BaseException] = []
    for messages in range(300):
        ours, theirs = socket.socketpair()
        channel, worker_end = Channel(ours), Channel(theirs)

        def pump(channel: Channel = channel) -> None:
            try:
                while channel.receive() is not None:
                    pass
            except BaseException as error:  # noqa: BLE001 - collected for the assert
                failures.append(error)

        reader = threading.Thread(target=pump)
        reader.start()
        for _ in range(messages % 5):
            worker_end.send("x" * 100)
        worker_end.close()
        channel.close()
        reader.join(5)
        assert not reader.is_alive()
    assert failures == []


def test_a_message_cut_off_by_a_dying_worker_ends_the_channel_not_the_reader():
    ours, theirs = socket.socketpair()
    channel = Channel(ours)
    theirs.sendall((1000).to_bytes(4, "big") + b"\x80\x05partial")  # a frame cut short
    theirs.close()
    assert channel.receive() is None
    channel.close()


# ---- nothing in the working directory runs --------------------------------------------------


def test_shadowing_packages_in_the_working_directory_never_run(tmp_path):
    marker = tmp_path / "ran"
    for package in ("multiprocessing", "fleetexec", "paramiko"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(
            f"open({str(marker)!r}, 'a').write({package!r} + '\\n')\n")
    cli = Path(sys.executable).with_name("fleetexec")
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "rt")}
    os.mkdir(tmp_path / "rt", 0o700)
    target = f"127.0.0.1:{closed_port()}"
    try:
        for extra in ([], ["--persist"]):
            done = subprocess.run([str(cli), "run", "-H", target, *extra, "--", "true"],
                                  cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=60)
            assert done.returncode == 3, done.stderr  # unreachable, and nothing else
    finally:
        subprocess.run([str(cli), "agent", "stop"], cwd=tmp_path, env=env, capture_output=True,
                       timeout=30)
    assert not marker.exists(), marker.read_text()


def test_the_agent_and_its_workers_never_hold_a_secret_in_their_environment(tmp_path):
    cli = Path(sys.executable).with_name("fleetexec")
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path), "FLEETEXEC_PASSWORD": "hunter2"}
    target = f"127.0.0.1:{closed_port()}"
    try:
        done = subprocess.run([str(cli), "run", "-H", target, "--persist", "--", "true"],
                              env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 3, done.stderr
        agents = [pid for pid in _pids() if str(tmp_path).encode() in _cmdline(pid)]
        assert len(agents) == 1
        family = [agents[0], *(p for p in _pids() if _parent(p) == agents[0])]
        assert len(family) > 1  # the agent and at least one worker
        for pid in family:
            assert b"hunter2" not in Path(f"/proc/{pid}/environ").read_bytes()
    finally:
        subprocess.run([str(cli), "agent", "stop"], env=env, capture_output=True, timeout=30)


@pytest.mark.parametrize("preset", [None, "4"])
def test_workers_keep_few_malloc_arenas_unless_told_otherwise(fleet, monkeypatch, preset):
    if preset is None:
        monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    else:
        monkeypatch.setenv("MALLOC_ARENA_MAX", preset)
    with FleetSession(hosts_of(fleet), backend=ProcessBackend(),
                      system_known_hosts=False) as session:
        assert session.run("deploy")["host1"].ok
        first = [pid for pid in _pids() if _parent(pid) == os.getpid()
                 and b"fleetexec.backends" in _cmdline(pid)]
        workers = [*first, *(pid for pid in _pids() if _parent(pid) in first)]
        assert workers
        for pid in workers:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert f"MALLOC_ARENA_MAX={preset or 2}".encode() in environ


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


# ---- the agent stays up whatever a client sends -----------------------------------------------


@pytest.mark.parametrize("request_line", [
    b"[]\n", b'{"type": "run"}\n', b'{"type": "run", "command": 1, "hosts": []}\n',
    b'{"type": "run", "command": "true", "hosts": [{"nope": 1}]}\n',
    b'{"type": "run", "command": "true", "hosts": [], "options": {"colour": 1}}\n',
    b"[" * 100_000 + b"\n", b"not json\n",
], ids=["list", "no-fields", "bad-command", "bad-host", "bad-option", "deep", "garbage"])
def test_a_malformed_agent_request_gets_an_error_reply(tmp_path, request_line):
    import json
    import socket

    path = tmp_path / "a" / "agent.sock"
    os.mkdir(path.parent, 0o700)
    agent = subprocess.Popen([sys.executable, "-m", "fleetexec.agent", "--socket", str(path),
                              "--idle", "30"], cwd="/")
    try:
        for _ in range(200):
            if path.exists():
                break
            subprocess.run(["sleep", "0.05"], check=True)
        for _ in range(2):  # and it still answers the next client
            with socket.socket(socket.AF_UNIX) as conn:
                conn.settimeout(10)
                conn.connect(str(path))
                conn.sendall(request_line)
                reply = json.loads(conn.makefile("rb").readline())
            assert reply["type"] == "error" and "bad request" in reply["message"]
    finally:
        agent.terminate()
        agent.wait(10)


def test_the_in_process_backend_starts_no_process():
    script = textwrap.dedent("""
        import os, pathlib, fleetexec
        from fleetexec.backends.inprocess import InProcessBackend
        status = fleetexec.run(["127.0.0.1:{port}"], "true", backend=InProcessBackend(),
                               connect_timeout=2)["127.0.0.1"].status
        def parent(p):
            try:  # a process may end while /proc is listed
                return (p / "stat").read_text().rsplit(")", 1)[1].split()[1]
            except OSError:
                return None
        children = [p for p in pathlib.Path("/proc").iterdir()
                    if p.name.isdigit() and parent(p) == str(os.getpid())]
        print(status, len(children))
    """)
    done = subprocess.run([sys.executable, "-c", script.format(port=closed_port())],
                          capture_output=True, text=True, timeout=30)
    assert done.stdout.split() == ["unreachable", "0"], done.stderr


def test_an_exclusion_that_matches_no_target_is_an_error():
    done = CliRunner().invoke(main, ["hosts", "-H", "web[1-12]", "-x", "web[01-03]"])
    assert done.exit_code == 2 and "web[01-03]" in done.output
    done = CliRunner().invoke(main, ["hosts", "-H", "web[1-12]", "-x", "web[1-3]"])
    assert done.exit_code == 0 and "9 hosts" in done.output


@pytest.mark.parametrize(("args", "words"), [
    (["run", "-H", "web1"], "no command"),
    (["run", "-H", "web1", "--max-output", "1X", "--", "true"], "--max-output"),
    (["run", "-H", "web1", "--batch", "zero", "--", "true"], "--batch"),
    (["run", "-H", "web1:2222", "-p", "2200", "--", "true"], "port 2222"),
    (["run", "-H", "-oProxyCommand=x", "--", "true"], "bad host target"),
    (["run", "--", "true"], "no hosts"),
    (["run", "-H", "web1", "--host-key-policy", "no", "--", "true"], "host-key-policy"),
])
def test_cli_usage_errors_exit_2_with_one_line_and_no_traceback(args, words):
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 2, done.output
    assert words in done.output and "Traceback" not in done.output


def test_cli_run_parses_into_the_options_it_hands_the_session(monkeypatch):
    seen = {}

    def fake_execute(hosts, command, options, backend, output_format, progress, *extra, **more):
        seen.update(hosts=hosts, command=command, options=options, format=output_format)
        raise SystemExit(0)

    monkeypatch.setattr("fleetexec.cli.run._execute", fake_execute)
    done = CliRunner().invoke(main, [
        "run", "-H", "alice@web[1-2]", "-t", "5", "--connect-timeout", "2", "-P", "7",
        "--batch", "50%", "--max-fail", "1", "--known-hosts", "kh", "-o", "stream",
        "--", "uptime", "-p"])
    assert done.exit_code == 0, done.output
    options = seen["options"]
    assert (options.command_timeout, options.connect_timeout, options.parallel) == (5, 2, 7)
    assert (options.batch, options.max_fail, options.known_hosts) == ("50%", 1, ("kh",))
    assert seen["command"] == "uptime -p" and seen["format"] == "stream"
    assert [(h.name, h.user, h.command_timeout) for h in seen["hosts"]] == [
        ("web1", "alice", 5), ("web2", "alice", 5)]
