"""Bastions: `-J`, ssh-config `ProxyJump`/`ProxyCommand` and the inventory's `proxy_jump`.

Resolution is checked without a network. The real arrangement is a network
namespace: one OpenSSH sshd inside it serves the bastion on the namespace's end
of a veth pair (the only address this side can reach) and the targets on the
namespace's own loopback, so a target answers only through the bastion. Its
VERBOSE log ("Connection from A port N on B port P") counts the handshakes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import fleetexec
from fleetexec import ConfigError, Host, Options, Status
from fleetexec.resolve import explain, resolve
from fleetexec.testing.faults import FaultServer
from fleetexec.testing.sshd import OpenSSHServer, addresses, require_sshd

# ---- resolution: which bastions a host goes through, and why (no network) --------------------


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "ssh_config"
    path.write_text(text)
    return str(path)


def test_jump_flag_beats_the_inventory_which_beats_the_ssh_config(tmp_path: Path) -> None:
    config = _config(tmp_path, "Host web*\n  ProxyJump cfg-bastion\nHost cfg-bastion\n"
                               "  HostName 10.1.1.1\n  User ops\n  Port 2200\n")
    options = Options(ssh_config=config)
    via = {r.host.name: ([j.name for j in r.host.via], r.sources.get("via"))
           for r in explain(["web1", Host("web2", proxy_jump="inv-bastion"), "db1"], options)}
    assert via == {"web1": (["cfg-bastion"], "ssh-config"),
                   "web2": (["inv-bastion"], "inventory"), "db1": ([], None)}
    flagged = resolve(["web1", Host("web2", proxy_jump="inv-bastion")],
                      options.replace(jump="alice@flag-bastion:2022"))
    assert {(j.name, j.user, j.port) for h in flagged for j in h.via} == {
        ("flag-bastion", "alice", 2022)}
    # the bastion is resolved by its own name in the ssh config, as ssh -J resolves it
    bastion = resolve(["web1"], options)[0].via[0]
    assert (bastion.address, bastion.user, bastion.port) == ("10.1.1.1", "ops", 2200)


def test_none_goes_direct_whatever_the_ssh_config_says(tmp_path: Path) -> None:
    config = _config(tmp_path, "Host cfg-bastion\n  ProxyJump none\nHost *\n"
                               "  ProxyJump cfg-bastion\n")
    assert resolve(["a"], Options(ssh_config=config, jump="none"))[0].via == ()
    assert resolve([Host("b", proxy_jump="none")], Options(ssh_config=config))[0].via == ()
    assert resolve(["c"], Options(ssh_config=config))[0].via[0].name == "cfg-bastion"


def test_flags_for_the_targets_do_not_apply_to_the_bastion(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("")
    [host] = resolve(["web1"], Options(use_ssh_config=False, jump="bastion", user="deploy",
                                       port=2222, key_files=(str(key),)))
    assert (host.user, host.port) == ("deploy", 2222)
    bastion = host.via[0]
    assert bastion.user != "deploy" and bastion.port == 22  # as with ssh -l/-p and -J
    assert bastion.key_files == (str(key),)  # credentials and trust settings do apply


def test_a_jump_list_is_a_chain_and_a_single_bastion_follows_its_own_proxy_jump(
        tmp_path: Path) -> None:
    config = _config(tmp_path, "Host inner\n  ProxyJump outer\nHost outer\n  Port 2201\n")
    options = Options(ssh_config=config)
    assert [(j.name, j.port) for j in resolve(["t"], options.replace(jump="inner"))[0].via] == [
        ("outer", 2201), ("inner", 22)]
    # in a list, the hops before a bastion replace its own ProxyJump (ssh -J a,b)
    assert [j.name for j in resolve(["t"], options.replace(jump="first,inner"))[0].via] == [
        "first", "inner"]


def test_a_proxy_jump_loop_is_one_error_naming_the_host(tmp_path: Path) -> None:
    config = _config(tmp_path, "Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n")
    with pytest.raises(ConfigError) as caught:
        resolve(["t"], Options(ssh_config=config, jump="a"))
    assert str(caught.value) == ("t: jump host b: more than 8 jump hosts in a row "
                                 "(a ProxyJump loop?)")  # b: where the count ran out


def test_a_bastion_that_would_jump_through_itself_is_refused_as_ssh_does(
        tmp_path: Path) -> None:
    config = _config(tmp_path, "Host *\n  ProxyJump bastion\n")
    with pytest.raises(ConfigError) as caught:
        resolve(["web1"], Options(ssh_config=config))
    assert str(caught.value) == ("web1: jump host bastion: jump host loop via bastion (as ssh "
                                 "says; give it ProxyJump none in the ssh config)")


def test_proxy_command_tokens_are_the_final_host_port_and_user(tmp_path: Path) -> None:
    config = _config(tmp_path, "Host web1\n  HostName 10.2.2.2\n  ProxyCommand "
                               "connect-to %h %p as %r for %n 100%%\n")
    [host] = resolve(["alice@web1:2222"], Options(ssh_config=config))
    assert host.proxy_command == "connect-to 10.2.2.2 2222 as alice for web1 100%"
    with pytest.raises(ConfigError, match=r"ssh_config line 2: ProxyCommand: unknown token %u"):
        resolve(["web2"], Options(ssh_config=_config(tmp_path, "Host *\n  ProxyCommand x %u\n")))


@pytest.mark.parametrize("spec", ["-oProxyCommand=id", "a,,b", "bastion:0", "a b", "x;id"])
def test_a_bad_jump_list_is_refused_before_anything_runs(spec: str) -> None:
    with pytest.raises(ConfigError, match="jump"):
        Options(jump=spec)
    with pytest.raises(ValueError):
        Host("web1", proxy_jump=spec)


def test_hosts_json_shows_the_chain_and_where_it_came_from(tmp_path: Path) -> None:
    inventory = tmp_path / "inv.yaml"
    inventory.write_text("defaults:\n  proxy_jump: ops@bastion:2222\nhosts:\n  web1: {}\n"
                         "  db1: {proxy_jump: none}\n")
    done = subprocess.run([sys.executable, "-m", "fleetexec", "hosts", "-i", str(inventory),
                           "--no-ssh-config", "-o", "json"], capture_output=True, text=True,
                          timeout=60, check=True)
    hosts = {h["name"]: h for h in json.loads(done.stdout)["hosts"]}
    assert hosts["web1"]["sources"]["via"] == "inventory"
    assert [(j["name"], j["user"], j["port"], j["known_hosts_name"])
            for j in hosts["web1"]["jump_chain"]] == [("bastion", "ops", 2222, "[bastion]:2222")]
    assert hosts["db1"]["jump_chain"] == [] and hosts["db1"]["proxy_jump"] == "none"


# ---- real sshd on loopback: ProxyCommand, a dead bastion ---------------------------------------


def _options(server: OpenSSHServer, known_hosts: str, **more: object) -> Options:
    settings: dict[str, object] = {
        "known_hosts": (known_hosts,), "system_known_hosts": False, "use_ssh_config": False,
        "key_files": (str(server.client_key_path),), "user": server.user, "port": server.port,
        "connect_timeout": 5.0, "command_timeout": 20.0, **more}
    return Options(**settings)  # type: ignore[arg-type]


def test_proxy_command_runs_through_the_shell_and_carries_the_session(
        sshd: OpenSSHServer, tmp_path: Path) -> None:
    if shutil.which("ssh") is None:
        pytest.skip("needs the OpenSSH client for its ProxyCommand")
    known = str(sshd.write_known_hosts(tmp_path / "kh", ["127.0.1.1", "127.0.2.1"]))
    relay = (f"ssh -F /dev/null -o BatchMode=yes -o UserKnownHostsFile={known} "
             f"-i {sshd.client_key_path} -p {sshd.port} -W %h:%p {sshd.user}@127.0.2.1")
    result = fleetexec.run_one(Host("127.0.1.1", proxy_command=relay), "echo $SSH_CONNECTION",
                               _options(sshd, known))
    assert result.status is Status.OK, result.error
    assert result.stdout.decode().split()[2] == "127.0.1.1"


def test_a_proxy_command_that_fails_says_why(sshd: OpenSSHServer, tmp_path: Path) -> None:
    known = str(sshd.write_known_hosts(tmp_path / "kh", ["127.0.1.1"]))
    result = fleetexec.run_one(
        Host("127.0.1.1", proxy_command="sh -c 'echo no route to web1 >&2; exit 3'"), "true",
        _options(sshd, known))
    assert result.status is Status.CONNECTION_LOST
    assert result.error == "ProxyCommand exited with status 3: no route to web1"


def test_a_proxy_command_that_hangs_is_killed_at_the_connect_deadline(
        sshd: OpenSSHServer, tmp_path: Path) -> None:
    known = str(sshd.write_known_hosts(tmp_path / "kh", ["127.0.1.1"]))
    pid_file = tmp_path / "pid"
    command = f"sh -c 'echo $$ > {pid_file}; exec sleep 60'"
    result = fleetexec.run_one(Host("127.0.1.1", proxy_command=command), "true",
                               _options(sshd, known, connect_timeout=0.5))
    assert result.status is Status.TIMEOUT
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # ended and reaped by the worker, not left behind
        os.kill(pid, 0)


def test_a_dead_bastion_is_tried_once_per_worker_and_named_by_every_host_behind_it(
        sshd: OpenSSHServer, tmp_path: Path) -> None:
    targets = addresses(30, base="127.0.1.1")
    known = str(sshd.write_known_hosts(tmp_path / "kh", targets))
    with FaultServer("tarpit", "127.0.31.9") as dead:
        report = fleetexec.run(targets, "true", _options(
            sshd, known, jump=f"{dead.address}:{dead.port}", connect_timeout=0.5, processes=2))
        accepted = dead.accepted
    errors = {(r.status, r.error) for r in report.results.values()}
    assert len(errors) <= 2  # one failure per worker process, shared by its hosts
    for status, error in errors:
        assert status is Status.TIMEOUT
        assert str(error).startswith(f"jump host {dead.address}:{dead.port}: ")  # names it
    assert 1 <= accepted <= 2  # one attempt per worker process, not one per target


# ---- a bastion in front of hosts that only it can reach (a network namespace) ----------------


class Dmz:
    """A network namespace: a bastion on the veth, targets on its own loopback, one sshd."""

    def __init__(self, tmp: Path) -> None:
        tag = os.getpid() % 200 + 20
        self.ns, self.link = f"fleetexec-dmz-{os.getpid()}", f"fxdmz{os.getpid() % 100000}"
        self.outside = f"10.213.{tag}.1"  # this side of the veth
        self.bastion = f"10.213.{tag}.2"  # the only address reachable from here
        self.refusing = f"10.213.{tag}.3"  # a bastion that forbids forwarding
        self.inner_bastion = "127.0.0.2"  # a second hop, reachable only from the bastion
        self.targets = addresses(40, base="127.0.1.1")  # the namespace's own loopback
        self.tmp = tmp
        self.server: OpenSSHServer | None = None

    def __enter__(self) -> Dmz:
        ip = ["ip"]
        try:
            for args in (["netns", "add", self.ns],
                         ["-n", self.ns, "link", "set", "lo", "up"],
                         ["link", "add", self.link, "type", "veth", "peer", "name", "inside",
                          "netns", self.ns],
                         ["addr", "add", f"{self.outside}/24", "dev", self.link],
                         ["link", "set", self.link, "up"],
                         ["-n", self.ns, "addr", "add", f"{self.bastion}/24", "dev", "inside"],
                         ["-n", self.ns, "addr", "add", f"{self.refusing}/24", "dev", "inside"],
                         ["-n", self.ns, "link", "set", "inside", "up"]):
                subprocess.run([*ip, *args], check=True, capture_output=True, timeout=30)
            self.server = OpenSSHServer(
                netns=self.ns, probe_address=self.bastion,
                clients=("127.0.0.0/8", f"{self.outside}/32"),
                extra_config=["LogLevel VERBOSE", f"Match LocalAddress {self.refusing}",
                              "  AllowTcpForwarding no"])
            self.server.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        if self.server is not None:
            self.server.stop()
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30,
                       check=False)  # takes the veth pair with it

    @property
    def port(self) -> int:
        assert self.server is not None  # noqa: S101
        return self.server.port

    def known_hosts(self, name: str = "kh") -> str:
        assert self.server is not None  # noqa: S101
        path = self.server.write_known_hosts(self.tmp / name,
                                             [self.inner_bastion, *self.targets])
        with path.open("a") as known:  # the namespace's addresses: not loopback ones
            for address in (self.bastion, self.refusing):
                known.write(f"[{address}]:{self.port} {self.server.host_public_key}\n")
        return str(path)

    def connections(self, on: str) -> int:
        """Connections the sshd accepted on address `on` so far."""
        assert self.server is not None  # noqa: S101
        log = self.server.log_path.read_text(errors="replace")
        return len(re.findall(rf"Connection from \S+ port \d+ on {re.escape(on)} port ", log))

    def run(self, *args: str) -> tuple[int, list[dict[str, object]]]:
        assert self.server is not None  # noqa: S101
        done = subprocess.run(
            [sys.executable, "-m", "fleetexec", "run", "-o", "json", "-q",
             "--known-hosts", self.known_hosts(), "--no-system-known-hosts",
             "-k", str(self.server.client_key_path), "-u", self.server.user,
             "-p", str(self.port), "--connect-timeout", "5", "-t", "20",
             "--processes", "2", *args, "--", "echo $SSH_CONNECTION"],
            capture_output=True, text=True, timeout=120)
        assert not done.stderr.strip() or done.returncode, done.stderr
        return done.returncode, json.loads(done.stdout)["hosts"]


@pytest.fixture(scope="module")
def dmz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dmz]:
    require_sshd("" if shutil.which("ip") else "the bastion tests need iproute2's `ip`")
    with Dmz(tmp_path_factory.mktemp("dmz")) as made:
        yield made


def _failed(results: list[dict[str, object]]) -> list[tuple[object, object, object]]:
    return [(r["host"], r["status"], r["error"]) for r in results if r["status"] != "ok"][:3]


def _hosts(dmz: Dmz) -> str:
    return ",".join(dmz.targets)


def test_targets_answer_only_through_the_bastion_sharing_one_connection_per_worker(
        dmz: Dmz) -> None:
    code, direct = dmz.run("-H", dmz.targets[0], "--connect-timeout", "1")
    assert code != 0 and direct[0]["status"] in ("unreachable", "timeout")  # no way around it
    before = dmz.connections(dmz.bastion)
    code, results = dmz.run("-H", _hosts(dmz), "-J", f"{dmz.bastion}:{dmz.port}")
    assert code == 0 and {r["status"] for r in results} == {"ok"}, _failed(results)
    # each target saw the session come from the bastion's side of the namespace
    assert all(str(r["stdout"]).split()[0] == "127.0.0.1" for r in results)
    handshakes = dmz.connections(dmz.bastion) - before
    assert 1 <= handshakes <= 2, handshakes  # 40 targets, 2 worker processes


def test_ssh_config_proxy_jump_reaches_them_too(dmz: Dmz, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(f"Host 127.0.1.*\n  ProxyJump {dmz.bastion}:{dmz.port}\n")
    code, results = dmz.run("-H", _hosts(dmz), "-F", str(config))
    assert code == 0 and {r["status"] for r in results} == {"ok"}, _failed(results)


def test_a_chain_of_two_bastions(dmz: Dmz) -> None:
    before = dmz.connections(dmz.inner_bastion), dmz.connections(dmz.bastion)
    code, results = dmz.run("-H", _hosts(dmz), "-J",
                            f"{dmz.bastion}:{dmz.port},{dmz.inner_bastion}:{dmz.port}")
    assert code == 0 and {r["status"] for r in results} == {"ok"}, _failed(results)
    assert 1 <= dmz.connections(dmz.inner_bastion) - before[0] <= 2
    assert 1 <= dmz.connections(dmz.bastion) - before[1] <= 2


def test_a_bastion_with_a_wrong_host_key_is_refused_before_any_target(dmz: Dmz) -> None:
    assert dmz.server is not None
    known = Path(dmz.known_hosts())
    forged = OpenSSHServer().host_public_key  # another server's key, under the bastion's name
    lines = [f"[{dmz.bastion}]:{dmz.port} {forged}" if line.startswith(f"[{dmz.bastion}]")
             else line for line in known.read_text().splitlines()]
    kh = dmz.tmp / "forged_kh"
    kh.write_text("\n".join(lines) + "\n")
    before = sum(dmz.connections(t) for t in dmz.targets)
    done = subprocess.run(
        [sys.executable, "-m", "fleetexec", "run", "-o", "json", "-q", "--known-hosts", str(kh),
         "--no-system-known-hosts", "-k", str(dmz.server.client_key_path), "-u", dmz.server.user,
         "-p", str(dmz.port), "-H", _hosts(dmz), "-J", f"{dmz.bastion}:{dmz.port}",
         "--", "true"], capture_output=True, text=True, timeout=120)
    results = json.loads(done.stdout)["hosts"]
    assert {r["status"] for r in results} == {"hostkey_changed"}
    assert all(str(r["error"]).startswith(f"jump host {dmz.bastion}:{dmz.port}: HOST KEY "
                                          "CHANGED") for r in results)
    assert sum(dmz.connections(t) for t in dmz.targets) == before  # no target was contacted


def test_a_bastion_that_refuses_to_forward_names_itself_and_the_target(dmz: Dmz) -> None:
    code, results = dmz.run("-H", ",".join(dmz.targets[:3]), "-J",
                            f"{dmz.refusing}:{dmz.port}")
    assert code != 0 and {r["status"] for r in results} == {"unreachable"}, _failed(results)
    first = next(r for r in results if r["host"] == dmz.targets[0])
    assert str(first["error"]).startswith(
        f"jump host {dmz.refusing}:{dmz.port} cannot reach {dmz.targets[0]}:{dmz.port}: ")


def test_a_bastion_that_refuses_the_login_is_auth_failed_naming_it(dmz: Dmz) -> None:
    code, results = dmz.run("-H", ",".join(dmz.targets[:3]), "-J",
                            f"nobody@{dmz.bastion}:{dmz.port}")
    assert code != 0 and {r["status"] for r in results} == {"auth_failed"}
    assert all(str(r["error"]).startswith(f"jump host {dmz.bastion}:{dmz.port}: "
                                          "authentication failed for user 'nobody'")
               for r in results)


def test_kept_connections_through_a_bastion_serve_a_second_command(dmz: Dmz) -> None:
    assert dmz.server is not None
    options = Options(known_hosts=(dmz.known_hosts(),), system_known_hosts=False,
                      key_files=(str(dmz.server.client_key_path),), user=dmz.server.user,
                      port=dmz.port, jump=f"{dmz.bastion}:{dmz.port}", use_ssh_config=False,
                      processes=1)
    before = dmz.connections(dmz.bastion)
    with fleetexec.FleetSession(dmz.targets[:5], options) as session:
        first = session.run("echo one")
        time.sleep(0.1)
        second = session.run("echo two")
    assert {r.status for r in (*first.results.values(), *second.results.values())} == {
        Status.OK}
    assert dmz.connections(dmz.bastion) - before == 1


def test_persist_keeps_the_bastion_connection_between_runs(
        dmz: Dmz, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    before = dmz.connections(dmz.bastion)
    try:
        for _ in range(2):
            code, results = dmz.run("-H", ",".join(dmz.targets[:5]), "-J",
                                    f"{dmz.bastion}:{dmz.port}", "--persist")
            assert code == 0 and {r["status"] for r in results} == {"ok"}, _failed(results)
    finally:
        subprocess.run([sys.executable, "-m", "fleetexec", "agent", "stop"],
                       capture_output=True, timeout=30, check=False)
    assert 1 <= dmz.connections(dmz.bastion) - before <= 2  # the agent's workers kept it


def test_files_go_through_the_bastion_too(dmz: Dmz, tmp_path: Path) -> None:
    assert dmz.server is not None
    local = tmp_path / "app.conf"
    local.write_bytes(b"through the bastion\n")
    remote = f"/tmp/fleetexec-bastion-{os.getpid()}.conf"  # the namespace shares our files
    targets = dmz.targets[:3]
    done = subprocess.run(
        [sys.executable, "-m", "fleetexec", "put", "-o", "json", "-q",
         "--known-hosts", dmz.known_hosts(), "--no-system-known-hosts",
         "-k", str(dmz.server.client_key_path), "-u", dmz.server.user, "-p", str(dmz.port),
         "-H", ",".join(targets), "-J", f"{dmz.bastion}:{dmz.port}", str(local), remote],
        capture_output=True, text=True, timeout=120)
    try:
        results = json.loads(done.stdout)["hosts"]
        assert done.returncode == 0 and {r["status"] for r in results} == {"ok"}, done.stderr
        assert Path(remote).read_bytes() == b"through the bastion\n"
    finally:
        Path(remote).unlink(missing_ok=True)
