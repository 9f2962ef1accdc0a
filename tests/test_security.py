"""Rows 1-8, 24-31, 50 and 51 of the fault catalogue (research/faults.md §2), end to end.

What the loader and renderer unit tests already prove (tests/test_inventory.py,
test_host.py, test_render.py) is not repeated here; these tests take the same
rules through `fleetexec.run` or the CLI: a bad inventory contacts no host, a
secret shows nowhere, host keys are checked before anything is sent, credentials
are offered as OpenSSH offers them (and only the configured ones with
IdentitiesOnly), and nothing a server sends reaches the terminal raw. Real sshd
hosts here are 127.0.6.x (accept-new) and 127.0.7.x.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import fleetexec
from fleetexec import ConfigError, FleetError, Host, Status, load_inventory
from fleetexec.render import render_gathered, render_json, render_summary, render_table
from fleetexec.testing import BINARY_PAYLOAD, Fault, MockFleet, MockHost, Reply
from fleetexec.testing._mockserver import _Handler
from fleetexec.testing.faults import FaultServer
from fleetexec.testing.sshd import OpenSSHServer

pytestmark = pytest.mark.timeout(60)

GRACE = 3.0
SECRET = "hunter2-SECRET-pw"
# Bytes a terminal acts on: ESC, BEL, backspace, NUL, 8-bit CSI (raw and as UTF-8), RLO.
TERMINAL_CONTROLS = [b"\x1b", b"\x07", b"\x08", b"\x00", b"\x9b", b"\xc2\x9b", b"\xe2\x80\xae"]


def cli(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleetexec", *args], capture_output=True,
                          timeout=60, env=env, **kwargs)


def assert_terminal_safe(data: bytes) -> None:
    for control in TERMINAL_CONTROLS:
        assert control not in data, (control, data[:2000])
    assert re.search(rb"\r(?!\n)", data) is None  # a lone CR could overwrite a line


def write_key(path: Path, key: Ed25519PrivateKey | None = None, password: bytes | None = None
              ) -> Path:
    key = key or Ed25519PrivateKey.generate()
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH, encryption))
    path.chmod(0o600)
    return path


def sshd_key(sshd: OpenSSHServer) -> Ed25519PrivateKey:
    key = serialization.load_ssh_private_key(sshd.client_key_path.read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def fingerprint(public_line: str) -> str:
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def real_host(sshd: OpenSSHServer, name: str, address: str, **fields) -> Host:
    fields.setdefault("key_files", (str(sshd.client_key_path),))
    return Host(name, address=address, port=sshd.port, user=sshd.user, **fields)


def known_line(sshd: OpenSSHServer, address: str) -> str:
    return f"[{address}]:{sshd.port} {sshd.host_public_key}\n"


STRICT = {"system_known_hosts": False, "connect_timeout": 20, "command_timeout": 20}


# ---- rows 1-7: a bad inventory stops the CLI before any host is contacted --------------------


BAD_INVENTORIES = {
    # row 1: a Python tag would run `touch MARKER` if the loader were unsafe
    "python-tag": ('  evil: !!python/object/apply:os.system ["touch MARKER"]\n', 3),
    # row 3: a host defined twice
    "duplicate-host": ("  good: {address: ADDRESS, port: PORT}\n", 3),
    # row 4: a host name that would be an ssh option
    "option-host": ('  "-oProxyCommand=touch MARKER": {}\n', 3),
    # row 7: not UTF-8
    "latin-1": ("  caf\xe9: {}\n", 3),
}


@pytest.mark.parametrize("case", sorted(BAD_INVENTORIES))
def test_a_bad_inventory_stops_the_cli_before_any_connection(
    tmp_path: Path, case: str
) -> None:
    marker = tmp_path / "pwned"
    with FaultServer("tarpit", "127.7.0.1") as tarpit:
        entry, line = BAD_INVENTORIES[case]
        text = ("hosts:\n  good: {address: ADDRESS, port: PORT}\n" + entry)
        text = (text.replace("ADDRESS", tarpit.address).replace("PORT", str(tarpit.port))
                .replace("MARKER", str(marker)))
        inventory = tmp_path / "inv.yaml"
        inventory.write_bytes(text.encode("latin-1"))
        done = cli("run", "-i", str(inventory), "--no-system-known-hosts", "--connect-timeout",
                   "2", "--", "touch", str(marker), cwd=tmp_path)
        time.sleep(0.2)  # a connection, had one been made, would be counted by now
        assert tarpit.accepted == 0
    assert done.returncode == 2, done.stderr
    stderr = done.stderr.decode()
    assert stderr.startswith("fleetexec: error: ") and stderr.count("\n") == 1, stderr
    assert f"inv.yaml:{line}" in stderr and "Traceback" not in stderr
    assert not marker.exists()


def test_the_same_host_twice_in_one_run_is_refused_before_connecting() -> None:
    with FaultServer("tarpit", "127.7.0.3") as tarpit:
        twice = [Host("web1", address=tarpit.address, port=tarpit.port)] * 2
        with pytest.raises(ConfigError, match="twice"):
            fleetexec.run(twice, "true", system_known_hosts=False, connect_timeout=2)
        assert tarpit.accepted == 0


@pytest.mark.parametrize("target", ["-oProxyCommand=touch /tmp/x", "web1;id", "$(id)", "a\nb",
                                    "web1\u202e", "-l root@web1"])
def test_hostile_targets_are_refused_by_the_api_before_connecting(target: str) -> None:
    with pytest.raises(FleetError):
        fleetexec.run([target], "true", system_known_hosts=False, connect_timeout=2)


def test_a_private_key_others_can_read_is_refused_before_connecting(tmp_path: Path) -> None:
    key = write_key(tmp_path / "id_ed25519")
    key.chmod(0o644)
    with FaultServer("tarpit", "127.7.0.5") as tarpit:
        host = Host("web1", address=tarpit.address, port=tarpit.port, key_files=(str(key),))
        with pytest.raises(ConfigError, match="chmod 600"):
            fleetexec.run([host], "true", system_known_hosts=False, connect_timeout=2)
        assert tarpit.accepted == 0


def test_a_password_never_shows_in_results_renderings_or_reprs(
    sshd: OpenSSHServer, tmp_path: Path
) -> None:
    stranger = write_key(tmp_path / "stranger")  # sshd refuses it; then the password is tried
    known = tmp_path / "known_hosts"
    known.write_text(known_line(sshd, "127.0.7.5"))
    host = real_host(sshd, "web1", "127.0.7.5", key_files=(str(stranger),))
    result = fleetexec.run([host], "true", password=SECRET, known_hosts=[str(known)], **STRICT)
    r = result["web1"]
    assert r.status is Status.AUTH_FAILED
    assert "2 credential(s) tried" in (r.error or "")  # the key, then the password
    shown = [repr(result), str(result), repr(r), str(r), r.error or "", render_table(result),
             render_gathered(result), render_summary(result), render_json(result)]
    for text in shown:
        assert SECRET not in text


@pytest.mark.parametrize("output_format", ["table", "gathered", "json", "jsonl"])
def test_a_password_from_the_environment_never_shows_in_cli_output(
    sshd: OpenSSHServer, tmp_path: Path, output_format: str
) -> None:
    stranger = write_key(tmp_path / "stranger")
    inventory = sshd.write_inventory(tmp_path / "inv.yaml", ["127.0.7.5"])
    done = cli("run", "-i", str(inventory), "--no-system-known-hosts", "-k", str(stranger),
               "--progress", "-o", output_format, "--", "true",
               env={**os.environ, "FLEETEXEC_PASSWORD": SECRET})
    assert done.returncode == 3, done.stderr
    assert b"auth_failed" in done.stdout + done.stderr
    assert SECRET.encode() not in done.stdout + done.stderr


def test_a_selection_that_matches_no_host_is_a_usage_error(
    sshd: OpenSSHServer, tmp_path: Path
) -> None:
    inventory = sshd.write_inventory(tmp_path / "inv.yaml", ["127.0.7.6"], names=["web1"])
    done = cli("run", "-i", str(inventory), "--no-system-known-hosts", "db*", "--", "true")
    assert done.returncode == 2
    assert done.stderr.decode() == (
        f"fleetexec: error: {inventory}: no host or group matches 'db*'\n")



# ---- row 24: unknown host keys --------------------------------------------------------------


def test_unknown_host_is_refused_with_its_fingerprint_and_nothing_runs_or_is_recorded(
    sshd: OpenSSHServer, tmp_path: Path, isolated_home: Path
) -> None:
    marker = tmp_path / "ran"
    known = tmp_path / "known_hosts"
    known.write_text(known_line(sshd, "127.0.7.1"))  # the healthy host only
    hosts = [real_host(sshd, "known", "127.0.7.1"), real_host(sshd, "stranger", "127.0.7.24")]
    result = fleetexec.run(hosts, f'case "$SSH_CONNECTION" in *" 127.0.7.24 "*) touch {marker};; '
                           "esac; echo fine", known_hosts=[str(known)], **STRICT)
    r = result["stranger"]
    assert r.status is Status.HOSTKEY_UNKNOWN
    assert f"ssh-ed25519 {fingerprint(sshd.host_public_key)}" in (r.error or "")
    assert (result["known"].status, result["known"].stdout) == (Status.OK, b"fine\n")
    assert not marker.exists()
    assert known.read_text() == known_line(sshd, "127.0.7.1")  # strict never records
    assert not (isolated_home / ".ssh").exists()


@pytest.mark.timeout(120)
def test_accept_new_on_200_hosts_at_once_records_each_exactly_once(
    sshd: OpenSSHServer, tmp_path: Path
) -> None:
    addresses = [f"127.0.6.{i}" for i in range(1, 201)]
    hosts = [real_host(sshd, f"h{i:03d}", a) for i, a in enumerate(addresses, 1)]
    directory = tmp_path / "kh"
    directory.mkdir()
    learned = directory / "known_hosts"
    options = {**STRICT, "known_hosts": [str(learned)], "processes": 2}  # two writers at once
    first = fleetexec.run(hosts, "true", host_key_policy="accept-new", **options)
    assert first.counts() == {Status.OK: 200}, {r.error for r in first.values()}
    lines = learned.read_text().splitlines()
    assert sorted(lines) == sorted(known_line(sshd, a).rstrip("\n") for a in addresses)
    assert learned.stat().st_mode & 0o777 == 0o600
    leftovers = {p.name for p in directory.iterdir()} - {"known_hosts", "known_hosts.lock"}
    assert leftovers == set()  # no temp file left behind by the atomic rewrites
    second = fleetexec.run(hosts, "true", **options)  # strict now, from the learned file
    assert second.ok
    assert learned.read_text().splitlines() == lines


# ---- rows 25, 26: changed host keys ---------------------------------------------------------


class RecordingHandler(_Handler):
    """A mock host connection that notes every authentication attempt it receives."""

    attempts: list[tuple[str, str]] = []

    def check_auth_none(self, username: str) -> int:
        self.attempts.append((self.server.name, "none"))
        return paramiko.AUTH_FAILED

    def check_auth_password(self, username: str, password: str) -> int:
        self.attempts.append((self.server.name, "password"))
        return paramiko.AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        self.attempts.append((self.server.name, "publickey"))
        result: int = super().check_auth_publickey(username, key)
        return result


@pytest.mark.parametrize("fault", [Fault.fresh_host_key(), Fault.changed_key_type()],
                         ids=["25-changed-key", "26-changed-key-type"])
@pytest.mark.parametrize("policy", ["strict", "accept-new"])
def test_changed_host_key_is_refused_before_any_credential_or_command(
    fault: Fault, policy: str
) -> None:
    ran: list[str] = []

    def record(command: str) -> Reply:
        ran.append(command)
        return Reply("ran\n")

    RecordingHandler.attempts = []
    specs = [MockHost("changed", fault=fault, default=record), MockHost("good", default=record)]
    with MockFleet(specs, connect_timeout=20) as fleet:
        for server in fleet:
            server.handler_cls = RecordingHandler
        before = fleet.known_hosts_path.read_text()
        result = fleet.run("deploy", password=SECRET, host_key_policy=policy, command_timeout=20)
        after = fleet.known_hosts_path.read_text()
        offered, served = fleet["changed"].known_key, fleet["changed"].host_key
    r = result["changed"]
    assert r.status is Status.HOSTKEY_CHANGED
    assert f"{served.get_name()} SHA256:" in (r.error or "")
    assert f"known_hosts has {offered.get_name()} SHA256:" in (r.error or "")
    assert [a for a in RecordingHandler.attempts if a[0] == "changed"] == []
    assert ("good", "publickey") in RecordingHandler.attempts  # the recorder works
    assert ran == ["deploy"]  # only the good host ran it
    assert (result["good"].status, result["good"].stdout) == (Status.OK, b"ran\n")
    assert after == before  # no policy records over a changed key


# ---- rows 27, 28: known_hosts forms, markers and damage --------------------------------------


def hashed(name: str, public_line: str) -> str:
    salt = os.urandom(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return (f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()} "
            f"{public_line}\n")


def other_public_line() -> str:
    return Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def test_hashed_and_bracketed_entries_are_honoured(sshd: OpenSSHServer,
                                                      tmp_path: Path) -> None:
    key = sshd.host_public_key
    known = tmp_path / "known_hosts"
    known.write_text(
        hashed(f"[127.0.7.27]:{sshd.port}", key)  # `ssh-keygen -H` form
        + f"decoy.example,[127.0.7.28]:{sshd.port} {key}\n"  # one of several names
        + hashed(f"[127.0.7.29]:{sshd.port}", other_public_line())  # hashed, but wrong
    )
    hosts = [real_host(sshd, "hashed", "127.0.7.27"), real_host(sshd, "listed", "127.0.7.28"),
             real_host(sshd, "wrong", "127.0.7.29")]
    result = fleetexec.run(hosts, "echo fine", known_hosts=[str(known)], **STRICT)
    assert (result["hashed"].status, result["hashed"].stdout) == (Status.OK, b"fine\n")
    assert (result["listed"].status, result["listed"].stdout) == (Status.OK, b"fine\n")
    assert result["wrong"].status is Status.HOSTKEY_CHANGED  # a hashed entry is not ignored


@pytest.mark.parametrize("policy", ["strict", "accept-new"])
def test_a_revoked_key_is_refused_even_where_it_is_also_trusted(
    sshd: OpenSSHServer, tmp_path: Path, policy: str
) -> None:
    known = tmp_path / "known_hosts"
    contents = (known_line(sshd, "127.0.7.27") + known_line(sshd, "127.0.7.1")
                + f"@revoked [127.0.7.27]:{sshd.port} {sshd.host_public_key}\n")
    known.write_text(contents)
    other = tmp_path / "other_known_hosts"  # a revocation in one file applies to all
    other.write_text(f"@revoked * {sshd.host_public_key}\n")
    hosts = [real_host(sshd, "revoked", "127.0.7.27")]
    result = fleetexec.run(hosts, "echo fine", known_hosts=[str(known)],
                           host_key_policy=policy, **STRICT)
    r = result["revoked"]
    assert r.status is Status.HOSTKEY_CHANGED and "@revoked" in (r.error or "")
    assert known.read_text() == contents
    elsewhere = fleetexec.run([real_host(sshd, "h1", "127.0.7.1")], "echo fine",
                              known_hosts=[str(known), str(other)], host_key_policy=policy,
                              **STRICT)
    assert elsewhere["h1"].status is Status.HOSTKEY_CHANGED


def test_a_cert_authority_line_alone_does_not_make_a_host_trusted(
    sshd: OpenSSHServer, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"@cert-authority [127.0.7.27]:{sshd.port} {sshd.host_public_key}\n")
    result = fleetexec.run([real_host(sshd, "ca-only", "127.0.7.27")], "echo fine",
                           known_hosts=[str(known)], **STRICT)
    assert result["ca-only"].status is Status.HOSTKEY_UNKNOWN


def test_damaged_lines_do_not_discard_the_rest_of_known_hosts(
    sshd: OpenSSHServer, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    known.write_bytes(
        b"garbage\n"
        + f"[127.0.7.28]:{sshd.port} ssh-ed25519 !!!not-base64!!!\n".encode()
        + f"[127.0.7.28]:{sshd.port} ssh-ed25519\n".encode()  # truncated
        + b"|1|bad|hash ssh-ed25519 AAAA\n"
        + b"\xff\xfe\x00 binary \x1b[2J line\n"
        + f"[127.0.7.28]:{sshd.port} ssh-frobnicate AAAAB3NzaC1\n".encode()
        + known_line(sshd, "127.0.7.28").encode()
        + b"# a comment\n"
    )
    result = fleetexec.run([real_host(sshd, "web1", "127.0.7.28")], "echo fine",
                           known_hosts=[str(known)], **STRICT)
    assert (result["web1"].status, result["web1"].stdout) == (Status.OK, b"fine\n")


def test_an_unwritable_known_hosts_is_a_clear_error_for_new_hosts_only(
    sshd: OpenSSHServer, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    unwritable = blocker / "known_hosts"
    known = tmp_path / "known_hosts"
    known.write_text(known_line(sshd, "127.0.7.1"))
    hosts = [real_host(sshd, "known", "127.0.7.1"), real_host(sshd, "new", "127.0.7.28")]
    result = fleetexec.run(hosts, "echo fine", known_hosts=[str(unwritable), str(known)],
                           host_key_policy="accept-new", **STRICT)
    r = result["new"]
    assert r.status is Status.ERROR
    assert (r.error or "").startswith(f"cannot record host key in {unwritable}")
    assert (result["known"].status, result["known"].stdout) == (Status.OK, b"fine\n")


# ---- rows 29-31: credentials -----------------------------------------------------------------


def test_keys_are_offered_as_openssh_does_and_identities_only_offers_only_the_configured(
    sshd: OpenSSHServer, tmp_path: Path
) -> None:
    # OpenSSH's rule (it replaced "only configured keys"): the configured key files first,
    # then the agent's keys unless IdentitiesOnly, then, only when no key file is
    # configured, ~/.ssh/id_*. HOME's id_ed25519 and the agent both hold the key sshd
    # accepts; --key names a key it refuses.
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    default = write_key(home / ".ssh" / "id_ed25519", sshd_key(sshd))
    agent_socket = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(agent_socket)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not agent_socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        env = {**os.environ, "HOME": str(home), "SSH_AUTH_SOCK": str(agent_socket)}
        subprocess.run(["ssh-add", str(sshd.client_key_path)], env=env, check=True,
                       capture_output=True, timeout=30)
        stranger = write_key(tmp_path / "stranger")
        known = sshd.write_known_hosts(tmp_path / "known_hosts", ["127.0.7.29"])
        target = ["-H", f"{sshd.user}@127.0.7.29:{sshd.port}", "--known-hosts", str(known),
                  "--no-system-known-hosts", "-o", "json"]

        def status(*flags: str) -> dict:
            done = cli("run", *target, *flags, "--", "echo fine", env=env)
            return json.loads(done.stdout)["hosts"][0] | {"stderr": done.stderr.decode()}

        configured_then_agent = status("-k", str(stranger))
        identities_only = status("-k", str(stranger), "--identities-only")
        no_agent = status("-k", str(stranger), "--no-agent")
        nothing_configured = status("--no-agent")  # ~/.ssh/id_ed25519 is offered
        default.chmod(0o644)
        too_open = status("--no-agent")  # skipped with a note, as ssh skips it
    finally:
        agent.terminate()
        agent.wait(10)
    assert (configured_then_agent["status"], configured_then_agent["stdout"]) == ("ok", "fine\n")
    assert (nothing_configured["status"], nothing_configured["stdout"]) == ("ok", "fine\n")
    for refused in (identities_only, no_agent):
        assert refused["status"] == "auth_failed", refused
        assert refused["error"].endswith("(1 credential(s) tried)")
    assert too_open["status"] == "auth_failed" and "no credentials" in too_open["error"]
    assert (f"fleetexec: note: default identity {default} is accessible by others (mode 0644)"
            in too_open["stderr"])


def test_a_stalled_auth_answer_times_out_once_per_host_not_once_per_key(
    tmp_path: Path
) -> None:
    second_key = write_key(tmp_path / "second")
    specs = [MockHost("slow", fault=Fault.slow_auth(10)), MockHost("healthy")]
    with MockFleet(specs, connect_timeout=1.5) as fleet:
        hosts = load_inventory(fleet.inventory_path).select()
        hosts = [replace(h, key_files=(*h.key_files, str(second_key))) if h.name == "slow"
                 else replace(h, connect_timeout=20) for h in hosts]
        result = fleetexec.run(hosts, "echo alive", system_known_hosts=False, command_timeout=20)
    r = result["slow"]
    assert r.status is Status.TIMEOUT
    assert r.error == "connect did not complete within 1.5s"
    assert 1.4 <= r.duration < 1.5 + GRACE  # not 2 keys x 10 s
    assert (result["healthy"].status, result["healthy"].stdout) == (Status.OK, b"alive\n")


def test_an_encrypted_key_without_its_passphrase_fails_before_any_connection(
    tmp_path: Path
) -> None:
    key = write_key(tmp_path / "encrypted", password=b"sesame")
    with FaultServer("tarpit", "127.7.0.31") as tarpit:
        host = Host("web1", address=tarpit.address, port=tarpit.port, key_files=(str(key),))
        with pytest.raises(ConfigError, match="is encrypted") as missing:
            fleetexec.run([host], "true", system_known_hosts=False, connect_timeout=2)
        assert tarpit.accepted == 0
    assert str(key) in str(missing.value)


def test_a_wrong_passphrase_fails_before_any_connection_without_showing_it(
    tmp_path: Path
) -> None:
    key = write_key(tmp_path / "encrypted", password=b"sesame")
    with FaultServer("tarpit", "127.7.0.31") as tarpit:
        host = Host("web1", address=tarpit.address, port=tarpit.port, key_files=(str(key),))
        with pytest.raises(ConfigError, match="wrong passphrase") as wrong:
            fleetexec.run([host], "true", passphrase="not-it-SECRET", system_known_hosts=False,
                          connect_timeout=2)
        assert tarpit.accepted == 0
    assert "not-it-SECRET" not in str(wrong.value)


def test_an_encrypted_key_with_its_passphrase_logs_in(sshd: OpenSSHServer,
                                                          tmp_path: Path) -> None:
    passphrase = "sesame-SECRET-phrase"
    key = write_key(tmp_path / "encrypted", sshd_key(sshd), password=passphrase.encode())
    known = tmp_path / "known_hosts"
    known.write_text(known_line(sshd, "127.0.7.31"))
    result = fleetexec.run([real_host(sshd, "web1", "127.0.7.31", key_files=(str(key),))],
                           "echo fine", passphrase=passphrase, known_hosts=[str(known)], **STRICT)
    assert (result["web1"].status, result["web1"].stdout) == (Status.OK, b"fine\n"), (
        result["web1"].error)


def test_the_cli_never_prompts_for_a_missing_passphrase(
    sshd: OpenSSHServer, tmp_path: Path
) -> None:
    key = write_key(tmp_path / "encrypted", sshd_key(sshd), password=b"sesame")
    inventory = sshd.write_inventory(tmp_path / "inv.yaml", ["127.0.7.31"])
    done = cli("run", "-i", str(inventory), "--no-system-known-hosts", "-k", str(key), "--",
               "true", stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stdout
    assert done.stderr.decode() == (f"fleetexec: error: key file {key} is encrypted: "
                                    "set FLEETEXEC_PASSPHRASE or use --ask-passphrase\n")


# ---- rows 50, 51: what reaches the terminal, and JSON ---------------------------------------


@pytest.fixture
def binary_fleet():
    with MockFleet([MockHost("binary", fault=Fault.binary()), MockHost("healthy")]) as fleet:
        yield fleet


@pytest.mark.parametrize("output_format", ["table", "gathered"])
def test_escapes_in_remote_output_never_reach_the_terminal(binary_fleet: MockFleet,
                                                              output_format: str) -> None:
    done = cli("run", "-i", str(binary_fleet.inventory_path), "--no-system-known-hosts",
               "--progress", "-o", output_format, "--", "echo alive")
    assert done.returncode == 0, done.stderr
    assert_terminal_safe(done.stdout)
    assert_terminal_safe(done.stderr)
    assert b"\\x1b" in done.stdout  # shown as a visible escape, not dropped


@pytest.mark.parametrize("output_format", ["table", "gathered"])
def test_escapes_in_error_texts_and_banners_never_reach_the_terminal(
    sshd: OpenSSHServer, tmp_path: Path, output_format: str
) -> None:
    with FaultServer("lines", "127.7.0.50") as server:  # junk lines carrying an OSC title
        inventory = sshd.write_inventory(tmp_path / "inv.yaml", ["127.0.7.1"], names=["healthy"])
        inventory.write_text(inventory.read_text()
                             + f'  "junk": {{ address: {server.address}, port: {server.port} }}\n')
        done = cli("run", "-i", str(inventory), "--no-system-known-hosts", "--progress",
                   "-o", output_format, "--", "echo alive")
    assert done.returncode == 3
    assert b"protocol_error" in done.stdout
    assert_terminal_safe(done.stdout)
    assert_terminal_safe(done.stderr)  # paramiko's own log lines included
    assert b"Traceback" not in done.stderr


def test_the_error_text_is_one_line_and_renders_without_escapes() -> None:
    with FaultServer("lines", "127.7.0.50") as server:
        result = fleetexec.run([Host("junk", address=server.address, port=server.port)], "true",
                               system_known_hosts=False, connect_timeout=5)
    r = result["junk"]
    assert r.status is Status.PROTOCOL_ERROR
    assert "\x1b]0;pwned-by-banner" in (r.error or "")  # kept as received, for JSON
    assert "\n" not in (r.error or "")
    for text in (render_table(result), render_gathered(result), render_summary(result)):
        assert_terminal_safe(text.encode())


@pytest.mark.parametrize("output_format", ["json", "jsonl"])
def test_json_output_is_valid_ascii_and_lossless_for_binary_output(
    binary_fleet: MockFleet, output_format: str
) -> None:
    done = cli("run", "-i", str(binary_fleet.inventory_path), "--no-system-known-hosts",
               "-o", output_format, "--", "echo alive")
    assert done.returncode == 0, done.stderr
    assert done.stdout.isascii()
    if output_format == "json":
        hosts = json.loads(done.stdout)["hosts"]
    else:
        hosts = [json.loads(line) for line in done.stdout.splitlines()]
    by_host = {h["host"]: h for h in hosts}
    binary = by_host["binary"]
    assert base64.b64decode(binary["stdout_b64"]) == BINARY_PAYLOAD
    assert base64.b64decode(binary["stderr_b64"]) == BINARY_PAYLOAD
    assert binary["stdout"] == BINARY_PAYLOAD.decode("utf-8", "replace")
    assert (by_host["healthy"]["stdout"], by_host["healthy"]["stdout_b64"]) == ("alive\n", None)
