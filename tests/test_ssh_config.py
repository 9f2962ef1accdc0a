"""The OpenSSH client config (sshconfig/) against `ssh -G`, and its place in resolve().

Ground truth is the installed OpenSSH client: each config here is written to a temp
dir and looked up both ways, `ssh -G -F FILE HOST` and `SshConfig.lookup`, for every
keyword fleetexec honours. `ssh` expands `~` and `%d` with the passwd entry's home
while fleetexec (and `Include`'s glob, in ssh too) uses $HOME, which the tests point at
a temp dir: paths are compared with that one prefix swapped. IdentityFile is printed
unexpanded by `ssh -G`, so the files ssh really opens are read from `ssh -v` against
a loopback server that answers with an SSH-1 banner (ssh lists them, then gives up).
Real sshd hosts here are 127.0.31.x.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import fleetexec
from fleetexec import ConfigError, Options, Status
from fleetexec.inventory import parse_inventory
from fleetexec.resolve import accept_new_file, explain, known_hosts_files, resolve
from fleetexec.sshconfig import (
    DEFAULT_IDENTITY_FILES,
    HostConfig,
    SshConfig,
    default_config_files,
    identity_file_problem,
)
from fleetexec.testing.faults import FaultServer
from fleetexec.testing.sshd import OpenSSHServer

SSH = shutil.which("ssh")
ACCOUNT = pwd.getpwuid(os.getuid())
pytestmark = [pytest.mark.skipif(SSH is None, reason="needs the OpenSSH client (ssh -G)"),
              pytest.mark.timeout(120)]
# Every keyword fleetexec honours, as `ssh -G` names it.
HONOURED = ["hostname", "user", "port", "identitiesonly", "identityagent", "connecttimeout",
            "userknownhostsfile", "globalknownhostsfile", "stricthostkeychecking",
            "hostkeyalias", "serveraliveinterval", "serveralivecountmax", "addressfamily",
            "checkhostip", "proxyjump", "proxycommand"]


# ---- ground truth ----------------------------------------------------------------------------


def ssh_g(config: Path, host: str, *args: str) -> dict[str, str]:
    """`ssh -G -F config [args] host`, as {keyword: value}; $HOME's prefix put back."""
    done = subprocess.run([SSH or "ssh", "-G", "-F", str(config), *args, host],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    out = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key != "identityfile":  # printed unexpanded: see ssh_identity_files
            out[key] = _home(value)
    return out


def _home(text: str) -> str:
    """ssh's passwd home → $HOME (what fleetexec uses)."""
    if ACCOUNT.pw_dir in ("", "/"):
        return text
    return text.replace(ACCOUNT.pw_dir + "/", os.path.expanduser("~") + "/")


def ssh_identity_files(config: Path, host: str, address: str, *args: str) -> list[str]:
    """The identity files ssh opens for `host` (HostName `address`, which must be a
    loopback address with nothing on it: a server sending an SSH-1 banner is put there)."""
    with FaultServer("ssh1", address) as server:
        done = subprocess.run(
            [SSH or "ssh", "-v", "-F", str(config), "-o", "BatchMode=yes", "-p",
             str(server.port), *args, host, "true"], capture_output=True, text=True, timeout=30)
    found = [line.split("identity file ", 1)[1].rsplit(" type ", 1)[0]
             for line in done.stderr.splitlines() if "debug1: identity file " in line]
    return [_home(path) for path in found if not path.endswith("-cert")]


def as_ssh_g(config: HostConfig, *, user: str | None = None, port: int | None = None
             ) -> dict[str, str]:
    """Our lookup in `ssh -G`'s words, with OpenSSH's defaults for what is not set."""
    home = os.path.expanduser("~")

    def files(value: tuple[str, ...] | None, default: str) -> str:
        return default if value is None else " ".join(value) or "none"

    def flag(value: bool | None) -> str:
        return "yes" if value else "no"

    out = {
        "hostname": config.hostname,
        "user": config.user or user or ACCOUNT.pw_name,
        "port": str(config.port or port or 22),
        "identitiesonly": flag(config.identities_only),
        "connecttimeout": str(config.connect_timeout) if config.connect_timeout is not None
        else "none",
        "userknownhostsfile": files(config.user_known_hosts_files,
                                    f"{home}/.ssh/known_hosts {home}/.ssh/known_hosts2"),
        "globalknownhostsfile": files(config.global_known_hosts_files,
                                      "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2"),
        "stricthostkeychecking": {"yes": "true", "no": "false", None: "ask"}.get(
            config.strict_host_key_checking, config.strict_host_key_checking or ""),
        "serveraliveinterval": str(config.server_alive_interval or 0),
        "serveralivecountmax": str(3 if config.server_alive_count_max is None
                                   else config.server_alive_count_max),
        "addressfamily": config.address_family or "any",
        "checkhostip": flag(config.check_host_ip),
    }
    for key, value in (("identityagent", config.identity_agent),
                       ("hostkeyalias", config.host_key_alias),
                       ("proxyjump", config.proxy_jump),
                       ("proxycommand", config.proxy_command)):
        if value is not None:
            out[key] = value
    return out


def agree(config: Path, host: str, *args: str, **presets: object) -> HostConfig:
    """Look `host` up both ways and assert every honoured keyword agrees."""
    ours = SshConfig([(str(config), True, False)]).lookup(
        host, default_user=ACCOUNT.pw_name, **presets)  # type: ignore[arg-type]
    theirs = ssh_g(config, host, *args)
    mine = as_ssh_g(ours, user=presets.get("user"), port=presets.get("port"))  # type: ignore
    assert {k: mine.get(k) for k in HONOURED} == {k: theirs.get(k) for k in HONOURED}, host
    return ours


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    path.chmod(mode)
    return path


# ---- the rich config: Include, Match, negation, tokens ----------------------------------------

RICH = """\
    # a comment, then keywords in any case, key=value and quotes
    Host *.internal !bastion.internal
        USER ops
        Port=2201
        IdentityFile ~/.ssh/id_%h_%r
        IdentitiesOnly yes
    Host web?? db?
        HostName %h.example.com
        ConnectTimeout 1m5s
        ServerAliveInterval 30
        ServerAliveCountMax 5
    Host alias
        HostName Real.Example.COM
        HostKeyAlias Legacy-Alias
    Match originalhost alias user deploy
        Port 2299
    Match host real.example.com,*.example.net
        AddressFamily inet6
        UserKnownHostsFile ~/.ssh/kh_%h_%p "%d/kh %n" ${FLEETEXEC_TEST_DIR}/kh_%C
        GlobalKnownHostsFile /etc/ssh/global_one /etc/ssh/global_two
    Match exec "test %n = execme" !user nobody
        User fromexec
        IdentityAgent ~/agent-%u.sock
    Match final host *.example.com
        StrictHostKeyChecking accept-new
        CheckHostIP yes
    Host *
        Include conf.d/*.conf
        IdentityAgent SSH_AUTH_SOCK
        IdentityFile "~/.ssh/common key"
        StrictHostKeyChecking yes
"""
INCLUDED = """\
    Host db* WEB01
        User dbuser
        IdentityAgent none
    Match all
        ConnectTimeout 20
        ServerAliveCountMax 0
"""
RICH_HOSTS = ["web01", "WEB01", "db1", "db1.internal", "bastion.internal", "alias", "execme",
              "plain", "x.example.net"]


@pytest.fixture
def rich(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLEETEXEC_TEST_DIR", str(tmp_path))
    home = Path(os.path.expanduser("~"))
    write(home / ".ssh" / "conf.d" / "10-db.conf", INCLUDED)
    write(home / ".ssh" / "conf.d" / "ignored.txt", "Host *\n  User never\n")
    return write(tmp_path / "config", RICH)


@pytest.mark.parametrize("host", RICH_HOSTS)
def test_every_honoured_keyword_agrees_with_ssh_g(rich: Path, host: str) -> None:
    agree(rich, host)


@pytest.mark.parametrize(("host", "flags", "presets"), [
    ("alias", ["-l", "deploy"], {"user": "deploy"}),  # Match user sees a -l user
    ("alias", ["-l", "deploy", "-p", "2022"], {"user": "deploy", "port": 2022}),
    ("web01", ["-o", "HostName=real.example.com"], {"hostname": "real.example.com"}),
    ("db1.internal", ["-l", "root", "-p", "22"], {"user": "root", "port": 22}),
])
def test_stronger_values_act_like_ssh_command_line_options(
        rich: Path, host: str, flags: list[str], presets: dict[str, object]) -> None:
    # What the target, a flag or the inventory sets is preset: the files cannot change it,
    # and Match and the tokens see it (an inventory address is `-o HostName=`).
    agree(rich, host, *flags, **presets)


@pytest.mark.parametrize(("host", "address"), [
    ("db1.internal", "127.0.31.201"), ("web01", "127.0.31.202"), ("plain", "127.0.31.203"),
    ("alias", "127.0.31.204"),
])
def test_identity_files_are_those_ssh_opens(rich: Path, host: str, address: str) -> None:
    # The address is preset (`-o HostName=`, an inventory address): %h is that address.
    theirs = ssh_identity_files(rich, host, address, "-o", f"HostName={address}")
    found = SshConfig([(str(rich), True, False)]).lookup(host, hostname=address,
                                                         default_user=ACCOUNT.pw_name)
    assert list(found.identity_files) == theirs and theirs


def test_default_identity_files_in_openssh_order(tmp_path: Path) -> None:
    empty = write(tmp_path / "empty", "")
    done = subprocess.run([SSH or "ssh", "-G", "-F", str(empty), "h"], capture_output=True,
                          text=True, timeout=30)
    listed = [line.split(" ", 1)[1] for line in done.stdout.splitlines()
              if line.startswith("identityfile ")]
    # paramiko reads neither XMSS nor DSA keys: those two are left out, the order kept.
    assert [p for p in listed if not p.endswith(("_xmss", "_dsa"))] == list(
        DEFAULT_IDENTITY_FILES)


def test_first_value_wins_but_identity_files_accumulate(tmp_path: Path) -> None:
    config = write(tmp_path / "c", """\
        Host h
            User first
            IdentityFile ~/.ssh/a
        Host *
            User second
            IdentityFile ~/.ssh/b
            IdentityFile ~/.ssh/a
            ProxyJump none
            ConnectTimeout none
            ConnectTimeout 7
        """)
    found = agree(config, "h")
    assert found.user == "first" and found.connect_timeout == 7 and found.proxy_jump is None
    home = os.path.expanduser("~")
    assert found.identity_files == (f"{home}/.ssh/a", f"{home}/.ssh/b")


@pytest.mark.parametrize("text", [
    "Host h\n  ProxyJump j1\n  ProxyCommand nc %h %p\n",   # the first of the two wins
    "Host h\n  ProxyCommand ssh -W %h:%p b\n  ProxyJump j1\n",
    "Host h\n  ProxyJump none\n  ProxyCommand nc %h %p\n",  # none does not block it
    "Host h\n  ProxyJump none\n  ProxyJump j2\n",  # but does block a later ProxyJump
    "Host h\n  StrictHostKeyChecking off\n  AddressFamily inet\n  HostKeyAlias A\n",
    "Host h\n  StrictHostKeyChecking ask\n  UserKnownHostsFile none\n",
    "Host h\n  Port ssh\n  ServerAliveInterval 2h\n  IdentitiesOnly true\n",
    "Host h\n  \"User\" quoted\n  Port =  2201\n  HostName %%literal%h\n",
])
def test_more_keyword_forms_agree_with_ssh_g(tmp_path: Path, text: str) -> None:
    agree(write(tmp_path / "c", text), "h")


def test_host_patterns_are_case_sensitive_and_match_the_final_name_in_a_final_pass(
        tmp_path: Path) -> None:
    config = write(tmp_path / "c", """\
        Host alias2
            HostName real2.example
        Host real2.example
            User realuser
        Match final host real2.example
            Port 2300
        Match canonical
            IdentitiesOnly yes
        Host a,b
            User comma
        """)
    found = agree(config, "alias2")
    assert (found.user, found.port, found.identities_only) == ("realuser", 2300, True)
    assert agree(config, "ALIAS2").address is None  # Host is case-sensitive
    assert agree(config, "a").user is None  # a comma is part of a Host pattern


# ---- what ssh refuses, and what fleetexec refuses --------------------------------------------


@pytest.mark.parametrize(("text", "message"), [
    ("Host h\n  Port 0\n", "line 2: badly formatted port number '0'"),
    ("Host h\n  User\n", "line 2: no argument after keyword 'user'"),
    ("Host h\n  User \"unterminated\n", "line 2: invalid quotes"),
    ("Host h\n  User a b\n", "line 2: keyword user extra arguments at end of line"),
    ("Host h\n  IdentitiesOnly maybe\n", "unsupported value 'maybe'"),
    ("Host h\n  ConnectTimeout 5x\n", "invalid time value '5x'"),
    ("Host h\n  UserKnownHostsFile ~/%z\n", "unknown token %z"),
    ("Match tagged x\n  User u\n", "Match tagged is not supported"),
    ("Match all host h\n  User u\n", "'all' cannot be combined"),
    ("Match\n  User u\n", "no argument after keyword 'match'"),
])
def test_a_bad_config_is_a_located_config_error(tmp_path: Path, text: str,
                                                message: str) -> None:
    config = write(tmp_path / "c", text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        SshConfig([(str(config), True, False)]).lookup("h")
    assert subprocess.run([SSH or "ssh", "-G", "-F", str(config), "h"], capture_output=True,
                          timeout=30).returncode != 0  # ssh refuses it too


def test_a_user_config_others_can_write_is_refused_as_ssh_refuses_it() -> None:
    home = Path(os.path.expanduser("~"))
    config = write(home / ".ssh" / "config", "Host *\n  User u\n", mode=0o666)
    with pytest.raises(ConfigError, match="bad owner or permissions"):
        resolve(["h"], Options())
    config.chmod(0o644)
    assert resolve(["h"], Options())[0].user == "u"


def test_files_read_by_default_by_f_and_by_no_ssh_config(tmp_path: Path) -> None:
    home = Path(os.path.expanduser("~"))
    write(home / ".ssh" / "config", "Host h\n  Port 2201\n")
    other = write(tmp_path / "other", "Host h\n  Port 2202\n")
    assert default_config_files()[0][0] == str(home / ".ssh" / "config")
    assert default_config_files()[1][0] == "/etc/ssh/ssh_config"
    assert resolve(["h"], Options())[0].port == 2201
    assert resolve(["h"], Options(ssh_config=str(other)))[0].port == 2202  # as ssh -F
    assert resolve(["h"], Options(ssh_config="none"))[0].port == 22
    assert resolve(["h"], Options(use_ssh_config=False))[0].port == 22
    with pytest.raises(ConfigError, match="cannot read ssh config"):
        resolve(["h"], Options(ssh_config=str(tmp_path / "missing")))
    with pytest.raises(ConfigError, match="contradict"):
        Options(ssh_config=str(other), use_ssh_config=False)


def test_include_missing_files_are_fine_and_depth_is_bounded(tmp_path: Path) -> None:
    assert SshConfig([(str(write(tmp_path / "c", "Include nothing/*.conf /nope\n")), True,
                       False)]).lookup("h").user is None
    loop = write(tmp_path / "loop", f"Include {tmp_path / 'loop'}\n")
    with pytest.raises(ConfigError, match="nested more than 16 deep"):
        SshConfig([(str(loop), True, False)]).lookup("h")


# ---- Match exec -----------------------------------------------------------------------------


def test_match_exec_runs_once_per_distinct_command_and_only_when_needed(
        tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    config = write(tmp_path / "c", f"""\
        Match host nomatch exec "echo skipped >> {runs}"
            User never
        Match exec "echo %h >> {runs}; test %h = web2"
            User two
        Match exec "echo shared >> {runs}"
            Port 2222
        """)
    lookups = SshConfig([(str(config), True, False)])
    found = [lookups.lookup(h) for h in ("web1", "web2", "web3")]
    assert [(f.user, f.port) for f in found] == [(None, 2222), ("two", 2222), (None, 2222)]
    assert sorted(runs.read_text().split()) == ["shared", "web1", "web2", "web3"]


def test_a_match_exec_that_hangs_is_killed_and_does_not_match(tmp_path: Path) -> None:
    config = write(tmp_path / "c", 'Match exec "sleep 30"\n  User never\n')
    begin = time.monotonic()
    found = SshConfig([(str(config), True, False)], exec_timeout=0.5).lookup("h")
    assert found.user is None and time.monotonic() - begin < 5
    assert "did not finish within 0.5s" in found.notes[0]


# ---- resolve(): precedence, refusals, notes ----------------------------------------------------

INVENTORY = """
defaults: {connect_timeout: 3}
groups:
  web: {hosts: [web1, web2], vars: {user: fromgroup}}
hosts:
  web1: {port: 2200}
  web2: {address: 127.0.31.9}
  db1: {}
"""
CONFIG = """\
    Match host 127.0.31.9
        Port 2299
    Host web* db*
        HostName %h.example.com
        User fromconfig
        Port 2222
        ConnectTimeout 7
        IdentityFile ~/.ssh/from_config
        IdentitiesOnly yes
        IdentityAgent ~/agent.sock
        UserKnownHostsFile ~/.ssh/kh_%h
        StrictHostKeyChecking accept-new
        HostKeyAlias %h-alias
        AddressFamily inet
        ServerAliveInterval 15
"""


@pytest.fixture
def configured(tmp_path: Path) -> Path:
    home = Path(os.path.expanduser("~"))
    write(home / ".ssh" / "from_config", "not a key, but it exists")
    return write(home / ".ssh" / "config", CONFIG)


def test_inventory_beats_ssh_config_which_beats_the_builtin_defaults(configured: Path) -> None:
    hosts = {h.name: h for h in resolve(parse_inventory(INVENTORY).select(), Options())}
    home = os.path.expanduser("~")
    web1, web2, db1 = hosts["web1"], hosts["web2"], hosts["db1"]
    # inventory user/port beat User/Port; HostName applies where no address is given
    assert (web1.address, web1.user, web1.port) == ("web1.example.com", "fromgroup", 2200)
    # an inventory address beats HostName, and Match host sees it (like -o HostName=)
    assert (web2.address, web2.user, web2.port) == ("127.0.31.9", "fromgroup", 2299)
    assert (db1.address, db1.user, db1.port) == ("db1.example.com", "fromconfig", 2222)
    assert {h.connect_timeout for h in hosts.values()} == {3.0}  # inventory defaults
    assert db1.key_files == (f"{home}/.ssh/from_config",) and db1.default_keys is False
    assert (db1.identities_only, db1.identity_agent) == (True, f"{home}/agent.sock")
    assert db1.user_known_hosts == (f"{home}/.ssh/kh_db1.example.com",)
    assert (db1.host_key_policy, db1.host_key_alias) == ("accept-new", "%h-alias")
    assert db1.known_hosts_name == "%h-alias"  # HostKeyAlias takes no tokens (ssh -G agrees)
    assert (db1.address_family, db1.server_alive_interval, db1.server_alive_count_max) == (
        "inet", 15, 3)
    # each as ssh -G says with the same presets
    for host, flags in ((web1, ["-l", "fromgroup", "-p", "2200"]),
                        (web2, ["-l", "fromgroup", "-o", "HostName=127.0.31.9"]),
                        (db1, [])):
        g = ssh_g(configured, host.name, *flags)
        assert (host.address, host.user, str(host.port)) == (g["hostname"], g["user"],
                                                             g["port"])
        assert host.user_known_hosts == tuple(g["userknownhostsfile"].split())


def test_flags_beat_the_inventory_and_the_ssh_config(configured: Path, tmp_path: Path) -> None:
    key = write(tmp_path / "flag_key", "x")
    options = Options(user="cli", port=2022, connect_timeout=9, key_files=[str(key)],
                      host_key_policy="strict", use_agent=False, identities_only=True)
    host = resolve(parse_inventory(INVENTORY).select("web1"), options)[0]
    assert (host.user, host.port, host.connect_timeout) == ("cli", 2022, 9.0)
    assert host.key_files == (str(key),) and host.host_key_policy == "strict"
    assert host.identity_agent == "none" and host.identities_only
    # -A forces the agent on even where IdentityAgent says none
    write(Path(os.path.expanduser("~")) / ".ssh" / "config", "Host *\n  IdentityAgent none\n")
    assert resolve(["h"], Options(use_agent=True))[0].identity_agent == "SSH_AUTH_SOCK"
    assert resolve(["h"], Options())[0].identity_agent == "none"


def test_the_target_beats_ssh_config_and_contradictions_are_still_refused(
        configured: Path) -> None:
    host = resolve(["alice@web9:2201"], Options())[0]
    assert (host.user, host.port, host.address) == ("alice", 2201, "web9.example.com")
    with pytest.raises(ConfigError, match="the target says port 2201 but the option says 2200"):
        resolve(["web9:2201"], Options(port=2200))


def test_explain_says_where_each_value_came_from(configured: Path) -> None:
    inventory = parse_inventory(INVENTORY)
    [web1] = explain(inventory.select("web1"), Options(command_timeout=5))
    home = os.path.expanduser("~")
    assert {k: web1.sources[k] for k in ("address", "user", "port", "connect_timeout",
                                         "command_timeout", "key_files", "identity_agent",
                                         "host_key_policy")} == {
        "address": "ssh-config", "user": "inventory", "port": "inventory",
        "connect_timeout": "inventory", "command_timeout": "flag", "key_files": "ssh-config",
        "identity_agent": "ssh-config", "host_key_policy": "ssh-config"}
    assert web1.ssh_config["address"] == "~/.ssh/config line 4"
    assert web1.ssh_config["key_files"] == "~/.ssh/config line 8"
    [target] = explain(["bob@other"], Options(use_ssh_config=False))
    assert (target.sources["user"], target.sources["port"], target.sources["key_files"]) == (
        "target", "default", "default")
    assert target.host.default_keys is True and home


def test_resolving_twice_reads_the_ssh_config_once(configured: Path, tmp_path: Path) -> None:
    once = resolve(["db1"], Options())
    write(Path(os.path.expanduser("~")) / ".ssh" / "config", "Host *\n  Port 1\n")
    again = resolve(once, Options())  # FleetSession resolves what the CLI resolved
    assert again == once


def test_strict_host_key_checking_no_is_refused_and_ask_is_strict_with_a_note() -> None:
    config = Path(os.path.expanduser("~")) / ".ssh" / "config"
    write(config, "Host *\n  StrictHostKeyChecking no\n")
    with pytest.raises(ConfigError, match="StrictHostKeyChecking no is refused"):
        resolve(["h"], Options())
    # an explicit policy beats the config: nothing to refuse
    assert resolve(["h"], Options(host_key_policy="strict"))[0].host_key_policy == "strict"
    write(config, "Host *\n  StrictHostKeyChecking ask\n  CheckHostIP yes\n")
    notes: list[str] = []
    assert resolve(["a", "b"], Options(), notes)[0].host_key_policy == "strict"
    assert notes == [
        "~/.ssh/config line 2: StrictHostKeyChecking ask: nobody can answer a prompt in a "
        "fleet run, so unknown hosts are refused (strict); --host-key-policy accept-new "
        "records them",
        "~/.ssh/config line 3: CheckHostIP yes is not supported; fleetexec checks the host "
        "key under the host's name only, never its IP"]


def test_keywords_that_would_change_the_run_are_noted_once_per_run() -> None:
    write(Path(os.path.expanduser("~")) / ".ssh" / "config", """\
        Host *
            LocalForward 8080 localhost:80
            RemoteCommand top
            ForwardAgent no
            ForwardAgent yes
            RequestTTY no
            ControlMaster auto
            SendEnv LANG LC_*
            Bogus thing
            IgnoreUnknown usekeychain,other*
            UseKeychain yes
            OtherThing 1
        """)
    notes: list[str] = []
    resolve(["a", "b", "c"], Options(), notes)
    assert notes == [
        "~/.ssh/config line 2: localforward 8080 localhost:80 is not supported; no port is "
        "forwarded",
        "~/.ssh/config line 3: remotecommand top is not supported; the command you give "
        "fleetexec runs, not this one",
        "~/.ssh/config line 7: controlmaster auto is not supported; each run makes its own "
        "connections (see --persist)",
        "~/.ssh/config line 9: unknown keyword 'bogus' ignored"]


def test_the_cli_prints_notes_on_stderr(tmp_path: Path) -> None:
    write(Path(os.path.expanduser("~")) / ".ssh" / "config", "Host *\n  RemoteCommand top\n")
    done = subprocess.run([sys.executable, "-m", "fleetexec", "hosts", "-H", "a,b"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ("fleetexec: note: ~/.ssh/config line 2: remotecommand top is not "
                           "supported; the command you give fleetexec runs, not this one\n")


def test_missing_identity_files_are_skipped_as_ssh_skips_them() -> None:
    home = Path(os.path.expanduser("~"))
    write(home / ".ssh" / "config", "Host *\n  IdentityFile ~/.ssh/gone\n")
    notes: list[str] = []
    host = resolve(["h"], Options(), notes)[0]
    # configured, though missing: the ~/.ssh/id_* files are not offered instead
    assert host.key_files == () and host.default_keys is False
    assert notes == [f"~/.ssh/config line 2: IdentityFile {home}/.ssh/gone does not exist; "
                     "not offered (as ssh does)"]


def test_known_hosts_files_follow_the_ssh_config_unless_flags_say_otherwise(
        tmp_path: Path) -> None:
    home = os.path.expanduser("~")
    write(Path(home) / ".ssh" / "config",
          "Host *\n  UserKnownHostsFile ~/kh1 ~/kh2\n  GlobalKnownHostsFile /etc/g\n")
    host = resolve(["h"], Options())[0]
    assert known_hosts_files(host, Options()) == (f"{home}/kh1", f"{home}/kh2", "/etc/g")
    accept = Options(host_key_policy="accept-new")
    host = resolve(["h"], accept)[0]
    assert accept_new_file(host, accept) == f"{home}/kh1"  # where accept-new records
    extra = Options(known_hosts=[str(tmp_path / "x")], system_known_hosts=False)
    host = resolve(["h"], extra)[0]
    assert known_hosts_files(host, extra) == (str(tmp_path / "x"),)


def test_hosts_json_shows_values_and_where_they_came_from(configured: Path,
                                                          tmp_path: Path) -> None:
    inventory = write(tmp_path / "inv.yaml", INVENTORY)
    done = subprocess.run([sys.executable, "-m", "fleetexec", "hosts", "-i", str(inventory),
                           "-o", "json", "-t", "5", "web1"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    [web1] = json.loads(done.stdout)["hosts"]
    home = os.path.expanduser("~")
    assert (web1["address"], web1["port"], web1["user"]) == ("web1.example.com", 2200,
                                                             "fromgroup")
    assert (web1["sources"]["address"], web1["sources"]["user"], web1["sources"]["port"],
            web1["sources"]["command_timeout"]) == ("ssh-config", "inventory", "inventory",
                                                    "flag")
    assert web1["ssh_config"]["identity_agent"] == "~/.ssh/config line 10"
    assert web1["key_files"] == [f"{home}/.ssh/from_config"]
    assert web1["identity_agent"] == f"{home}/agent.sock" and web1["agent_socket"] is None
    assert web1["known_hosts_files"][0] == f"{home}/.ssh/kh_web1.example.com"
    assert web1["accept_new_file"] == f"{home}/.ssh/kh_web1.example.com"
    assert web1["connect_timeout"] == 3.0 and web1["command_timeout"] == 5.0


# ---- default identity files -------------------------------------------------------------------


def write_key(path: Path, key: Ed25519PrivateKey | None = None,
              password: bytes | None = None, mode: int = 0o600) -> Path:
    key = key or Ed25519PrivateKey.generate()
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH, encryption))
    path.chmod(mode)
    return path


def test_default_identity_problems_are_read_without_paramiko(tmp_path: Path) -> None:
    good = write_key(tmp_path / "good")
    assert identity_file_problem(str(good), False) is None
    assert identity_file_problem(str(tmp_path / "missing"), False) is None
    assert "accessible by others (mode 0644)" in (identity_file_problem(
        str(write_key(tmp_path / "open", mode=0o644)), False) or "")
    locked = write_key(tmp_path / "locked", password=b"pw")
    assert "encrypted" in (identity_file_problem(str(locked), False) or "")
    assert identity_file_problem(str(locked), True) is None


# ---- end to end, against a real sshd ----------------------------------------------------------


@pytest.fixture
def sshd_config(sshd: OpenSSHServer, tmp_path: Path) -> tuple[Path, Path]:
    """~/.ssh/config naming web01..web03 (127.0.31.1-3), and their known_hosts."""
    home = Path(os.path.expanduser("~"))
    known = sshd.write_known_hosts(tmp_path / "known_hosts",
                                   [f"127.0.31.{i}" for i in range(1, 4)])
    names = "".join(f"Host web0{i}\n    HostName 127.0.31.{i}\n" for i in range(1, 4))
    config = write(home / ".ssh" / "config", names + textwrap.dedent(f"""\
        Host web0?
            User {sshd.user}
            Port {sshd.port}
            UserKnownHostsFile {known}
        Match originalhost web01,web02
            IdentityFile {sshd.client_key_path}
        """))
    return config, known


def test_zero_flags_run_from_the_users_own_ssh_setup(sshd_config: tuple[Path, Path]) -> None:
    # `ssh web01 uptime` works, so `fleetexec run -H web01,web02 -- uptime` does: address,
    # port, user, key and known_hosts all come from ~/.ssh/config.
    done = subprocess.run([sys.executable, "-m", "fleetexec", "run", "-H", "web01,web02",
                           "-o", "json", "--", "echo fine"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    hosts = json.loads(done.stdout)["hosts"]
    assert [(h["host"], h["status"], h["stdout"]) for h in hosts] == [
        ("web01", "ok", "fine\n"), ("web02", "ok", "fine\n")]


def test_the_agent_and_default_keys_are_offered_and_max_auth_tries_is_reported(
        sshd: OpenSSHServer, sshd_config: tuple[Path, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    home = Path(os.path.expanduser("~"))
    good = load_ssh_private_key(sshd.client_key_path.read_bytes(), None)
    assert isinstance(good, Ed25519PrivateKey)
    with ssh_agent(tmp_path, monkeypatch) as add:
        for i in range(7):  # more than sshd's MaxAuthTries (6), none of them accepted
            add(write_key(tmp_path / f"stranger{i}"))
        write_key(home / ".ssh" / "id_ed25519", good)  # the default file holds the good key
        # web03 has no IdentityFile: agent keys first (OpenSSH's order), the server hangs
        # up after 6, before the default file's turn.
        result = fleetexec.run(["web03"], "echo fine")
        r = result["web03"]
        assert r.status is Status.AUTH_FAILED
        assert "(6 credential(s) tried before the server closed the connection" in (
            r.error or "")
        # IdentitiesOnly: no agent key, the default file is offered first and accepted
        assert fleetexec.run(["web03"], "echo fine", identities_only=True)["web03"].ok
        # a configured key (web01's IdentityFile) goes before the agent's 7
        assert fleetexec.run(["web01"], "echo fine")["web01"].ok
        # and the agent's own key works with no key file anywhere
        (home / ".ssh" / "id_ed25519").unlink()
        add(sshd.client_key_path)
        assert not fleetexec.run(["web03"], "echo fine")["web03"].ok  # 7 strangers first
    with ssh_agent(tmp_path, monkeypatch) as add:
        add(sshd.client_key_path)
        assert fleetexec.run(["web03"], "echo fine")["web03"].ok
        assert not fleetexec.run(["web03"], "echo fine", use_agent=False)["web03"].ok


@contextlib.contextmanager
def ssh_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    socket_path = tmp_path / f"agent-{time.monotonic_ns()}.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket_path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(socket_path))

        def add(path: Path) -> None:
            subprocess.run(["ssh-add", str(path)], check=True, capture_output=True, timeout=30)

        yield add
    finally:
        agent.terminate()
        agent.wait(10)
        monkeypatch.delenv("SSH_AUTH_SOCK")


class FreezingProxy:
    """TCP to sshd, until `freeze()`: then nothing passes either way (a dead peer)."""

    def __init__(self, address: str, target: tuple[str, int]) -> None:
        self.listener = socket.create_server((address, 0))
        self.port = self.listener.getsockname()[1]
        self.target, self.frozen, self.sockets = target, threading.Event(), []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            client, _ = self.listener.accept()
            server = socket.create_connection(self.target)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if self.frozen.is_set():
                    return
                sink.sendall(data)

    def freeze(self) -> None:
        self.frozen.set()

    def close(self) -> None:
        for sock in [self.listener, *self.sockets]:
            sock.close()


def test_server_alive_ends_a_dead_connection_before_the_command_deadline(
        sshd: OpenSSHServer, sshd_config: tuple[Path, Path], tmp_path: Path) -> None:
    config, known = sshd_config
    proxy = FreezingProxy("127.0.31.1", ("127.0.31.1", sshd.port))
    config.write_text(config.read_text() + f"Host frozen\n    HostName 127.0.31.1\n"
                      f"    Port {proxy.port}\n    HostKeyAlias [127.0.31.1]:{sshd.port}\n"
                      f"    IdentityFile {sshd.client_key_path}\n    User {sshd.user}\n"
                      f"    UserKnownHostsFile {known}\n    ServerAliveInterval 1\n"
                      "    ServerAliveCountMax 2\n")
    try:
        threading.Timer(2.0, proxy.freeze).start()  # connected and running `sleep` by then
        begin = time.monotonic()
        result = fleetexec.run(["frozen"], "sleep 30", command_timeout=40)
        took = time.monotonic() - begin
    finally:
        proxy.close()
    r = result["frozen"]
    assert r.status is Status.CONNECTION_LOST, r
    assert took < 15  # about 2 s, then 3 unanswered keepalive intervals; not the 40 s deadline


def test_a_live_server_answers_keepalives(sshd: OpenSSHServer,
                                          sshd_config: tuple[Path, Path]) -> None:
    config, _ = sshd_config
    config.write_text("Host web01\n    ServerAliveInterval 1\n    ServerAliveCountMax 1\n"
                      + config.read_text())
    # CountMax 1 hangs up once a second ask goes unanswered: each one is answered
    result = fleetexec.run(["web01"], "sleep 3; echo done")
    assert result["web01"].ok, result["web01"]


def test_an_encrypted_identity_file_is_used_through_the_agent_as_ssh_does(
        sshd: OpenSSHServer, sshd_config: tuple[Path, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    config, _ = sshd_config
    good = load_ssh_private_key(sshd.client_key_path.read_bytes(), None)
    assert isinstance(good, Ed25519PrivateKey)
    write_key(Path(os.path.expanduser("~")) / ".ssh" / "locked", good, password=b"pw")
    config.write_text("Host web03\n    IdentityFile ~/.ssh/locked\n    IdentitiesOnly yes\n"
                      + config.read_text())
    # no agent, no passphrase: a configured key is an error before any connection
    with pytest.raises(ConfigError, match="locked is encrypted"):
        fleetexec.run(["web03"], "echo fine")
    assert fleetexec.run(["web03"], "echo fine", passphrase="pw")["web03"].ok
    with ssh_agent(tmp_path, monkeypatch) as add:
        add(sshd.client_key_path)  # the same key, in the agent: ssh signs with the agent's copy
        result = fleetexec.run(["web03"], "echo fine")
    assert result["web03"].ok, result["web03"]
