"""`--sudo`: the password goes to sudo only when it asks, and never anywhere else.

The gate is tested on its own first (no sshd); then against the session's real sshd with
two dedicated local users, created once (root and `sudo` needed): one whose sudo asks for
a password, one with NOPASSWD. The sshd's AuthorizedKeysFile serves every user, so both
log in with the session's client key.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

import fleetexec
from fleetexec import ConfigError, Host, Options, Status
from fleetexec.cli import main
from fleetexec.options import Secret
from fleetexec.ssh.sudo import SudoGate
from fleetexec.testing.sshd import OpenSSHServer

pytestmark = pytest.mark.timeout(120)

ASKS = "fleetexec-sudo-test"  # sudo asks this user for a password
NOPASSWD = "fleetexec-sudo-nopw"  # sudo never asks this one
SUDOERS = Path("/etc/sudoers.d/fleetexec-test")
WRONG = "not-the-password-" + secrets.token_hex(4)


# ---- the gate alone ---------------------------------------------------------------------------


class FakeChannel:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.eof = False

    def sendall(self, data: bytes) -> None:
        self.sent.append(data)

    def shutdown_write(self) -> None:
        self.eof = True


class Kept:
    def __init__(self) -> None:
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk


def gate(password: str | None = "s3cret",  # noqa: S107 - a test value
         ) -> tuple[SudoGate, FakeChannel, Kept, list[str]]:
    kept, channel, started = Kept(), FakeChannel(), []
    sudo = SudoGate(kept, None, None if password is None else Secret(password))
    sudo.attach(channel, lambda: started.append("stdin"))
    return sudo, channel, kept, started


def feed(sudo: SudoGate, data: bytes, size: int) -> None:
    for i in range(0, len(data), size):
        sudo.add(data[i:i + size])


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_the_password_is_sent_once_after_the_prompt_and_stdin_after_the_marker(size):
    sudo, channel, kept, started = gate()
    feed(sudo, b"sudo: unable to resolve host x\n" + sudo.prompt, size)
    assert channel.sent == [b"s3cret\n"] and started == [] and kept.data == b""
    feed(sudo, sudo.marker + b"the command's own\n" + sudo.prompt, size)
    assert sudo.ran and started == ["stdin"] and channel.sent == [b"s3cret\n"]
    assert sudo.prompts == 1 and not channel.eof and not sudo.wrong
    sudo.close()
    # After the marker everything is the command's, even text that looks like the prompt.
    assert kept.data == b"the command's own\n" + sudo.prompt and sudo.failure() is None


@pytest.mark.parametrize("size", [1, 5, 1000])
def test_without_a_prompt_the_password_is_never_sent(size):
    sudo, channel, kept, started = gate()
    feed(sudo, b"lecture\n" + sudo.marker + b"err\n", size)
    assert channel.sent == [] and started == ["stdin"] and kept.data == b"err\n"


def test_a_second_prompt_means_a_wrong_password_sent_once_then_end_of_file():
    sudo, channel, kept, started = gate()
    sudo.add(sudo.prompt + b"\nSorry, try again.\n" + sudo.prompt + sudo.prompt)
    sudo.add(b"\nsudo: 1 incorrect password attempt\n")
    sudo.close()
    assert channel.sent == [b"s3cret\n"] and channel.eof and started == []
    assert sudo.failure() == "sudo: wrong password"
    assert sudo.prompt not in kept.data and b"incorrect password attempt" in kept.data


def test_sudo_n_asking_for_a_password_and_other_refusals_are_explained():
    sudo, channel, kept, _ = gate(None)
    sudo.add(b"sudo: a password is required\n")
    sudo.close()
    assert sudo.failure() == "sudo: a password is required (use --ask-sudo-password)"
    assert channel.sent == [] and kept.data == b"sudo: a password is required\n"
    other, _, _, _ = gate(None)
    other.add(b"sh: 1: sudo: not found\n")
    other.close()
    assert other.failure() == "sudo did not run the command: sh: 1: sudo: not found"


def test_the_wrapped_command_quotes_everything_and_holds_no_password():
    sudo = SudoGate(Kept(), "o'brien", Secret("pw-" + "x" * 8))
    words = shlex.split(sudo.wrap("echo 'a b' | tr a-z A-Z; exit 3"))
    assert words[:4] == ["sudo", "-S", "-p", sudo.prompt.decode()]
    assert words[4:7] == ["-u", "o'brien", "--"] and words[-2:] == ["sh", "echo 'a b' | tr a-z "
                                                                    "A-Z; exit 3"]
    assert not any("pw-" in w for w in words) and sudo.marker.decode() not in " ".join(words)
    assert shlex.split(SudoGate(Kept(), None, None).wrap("true"))[:3] == ["sudo", "-n", "--"]


def test_the_options_keep_the_sudo_password_secret_and_check_sudo_user():
    options = Options(sudo=True, sudo_user="app", sudo_password="hunter2")
    assert "hunter2" not in repr(options) and "hunter2" not in json.dumps(options.to_json())
    assert Options.from_json(options.to_json(), options.secrets()) == options
    with pytest.raises(ConfigError, match="sudo_user needs sudo"):
        Options(sudo_user="app")
    with pytest.raises(ConfigError, match="sudo_user"):
        Options(sudo=True, sudo_user="")


def test_ask_sudo_password_needs_sudo():
    done = CliRunner().invoke(main, ["run", "-H", "127.0.0.1", "--ask-sudo-password", "--",
                                     "true"], input="pw\n")
    assert done.exit_code == 2 and "--ask-sudo-password needs --sudo" in done.output
    done = CliRunner().invoke(main, ["run", "-H", "127.0.0.1", "--sudo-user", "app", "--", "true"])
    assert done.exit_code == 2 and "needs sudo" in done.output


# ---- against a real sshd and sudo -------------------------------------------------------------


@dataclass
class SudoHosts:
    server: OpenSSHServer
    known_hosts: str
    password: str

    def host(self, user: str, address: str = "127.0.16.1") -> Host:
        return Host("h1", address=address, port=self.server.port, user=user,
                    key_files=(str(self.server.client_key_path),))

    def options(self, **changes: object) -> dict[str, object]:
        return {"known_hosts": [self.known_hosts], "system_known_hosts": False,
                "connect_timeout": 10.0, "command_timeout": 30.0, "sudo": True, **changes}


def _missing() -> str | None:
    for tool in ("sudo", "visudo", "useradd", "userdel", "chpasswd"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install sudo)"
    return None


def _run(*argv: str, stdin: str | None = None) -> None:
    subprocess.run(argv, input=stdin, text=True, check=True, capture_output=True, timeout=30)


def _remove_user(user: str) -> None:
    subprocess.run(["userdel", "-r", user], capture_output=True, check=False, timeout=30)
    for leftover in (Path("/var/lib/sudo/lectured") / user, Path("/run/sudo/ts") / user):
        leftover.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def sudo_hosts(sshd: OpenSSHServer, tmp_path_factory: pytest.TempPathFactory,
               ) -> Iterator[SudoHosts]:
    missing = _missing()
    if missing is not None:
        if os.environ.get("FLEETEXEC_REQUIRE_SSHD") == "1":
            pytest.fail(f"FLEETEXEC_REQUIRE_SSHD=1 but sudo tests cannot run: {missing}")
        pytest.skip(f"sudo tests need sudo: {missing}")
    if os.geteuid() != 0:  # the sshd fixture already needs root; said here for clarity
        pytest.skip("sudo tests need root to create their users")
    password = secrets.token_urlsafe(18)
    known_hosts = tmp_path_factory.mktemp("sudo") / "known_hosts"
    sshd.write_known_hosts(known_hosts, [f"127.0.16.{i}" for i in range(1, 10)])
    # The new users read the shared authorized_keys as themselves: let them reach it.
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in (sshd.dir, sshd.dir / "authorized_keys")}
    temp = SUDOERS.with_name(".fleetexec-test.tmp")  # a name with a dot: sudo skips it
    try:
        for user in (ASKS, NOPASSWD):
            _remove_user(user)  # left over from an interrupted run
            _run("useradd", "-m", "-s", "/bin/sh", user)
            _run("chpasswd", stdin=f"{user}:{password}\n")  # not locked: sshd lets it in
        temp.write_text(f"Defaults:{ASKS} timestamp_timeout=0\n"
                        f"{ASKS} ALL=(ALL:ALL) ALL\n"
                        f"{NOPASSWD} ALL=(ALL:ALL) NOPASSWD: ALL\n")
        temp.chmod(0o440)
        _run("visudo", "-cf", str(temp))
        temp.rename(SUDOERS)
        sshd.dir.chmod(0o711)
        (sshd.dir / "authorized_keys").chmod(0o644)
        yield SudoHosts(sshd, str(known_hosts), password)
    finally:
        temp.unlink(missing_ok=True)
        SUDOERS.unlink(missing_ok=True)
        for user in (ASKS, NOPASSWD):
            _remove_user(user)
        for path, mode in modes.items():
            if path.exists():
                path.chmod(mode)


def _nowhere(result: fleetexec.FleetResult, *texts: str) -> None:
    everything = json.dumps([{"out": r.stdout.decode(errors="replace"),
                              "err": r.stderr.decode(errors="replace"), "error": r.error}
                             for r in result.values()])
    for text in texts:
        assert text not in everything


def test_the_right_password_runs_the_command_as_root_with_nothing_of_sudo_kept(sudo_hosts):
    chunks: list[bytes] = []
    with fleetexec.FleetSession([sudo_hosts.host(ASKS)],
                                **sudo_hosts.options(sudo_password=sudo_hosts.password)) as fleet:
        result = fleet.run("id -u; echo to-err >&2", on_output=lambda o: chunks.append(o.data))
    r = result["h1"]
    assert r.status is Status.OK, r
    assert r.stdout == b"0\n" and r.stderr == b"to-err\n"  # no prompt, lecture or marker
    live = b"".join(chunks)  # the live output: no prompt, no marker either
    assert b"to-err\n" in live and b"fleetexec-sudo" not in live
    _nowhere(result, sudo_hosts.password, "fleetexec-sudo")


def test_sudo_user_runs_the_command_as_that_user(sudo_hosts):
    result = fleetexec.run([sudo_hosts.host(ASKS, "127.0.16.2")], "id -un",
                           **sudo_hosts.options(sudo_user=NOPASSWD,
                                                sudo_password=sudo_hosts.password))
    assert result["h1"].status is Status.OK and result["h1"].stdout == f"{NOPASSWD}\n".encode()


def test_a_wrong_password_is_auth_failed_and_appears_nowhere(sudo_hosts):
    env = {**os.environ, "FLEETEXEC_SUDO_PASSWORD": WRONG}
    server = sudo_hosts.server
    done = subprocess.run(
        [sys.executable, "-m", "fleetexec", "run", "-H", f"{ASKS}@127.0.16.3:{server.port}",
         "-k", str(server.client_key_path), "--known-hosts", sudo_hosts.known_hosts,
         "--no-system-known-hosts", "--sudo", "-o", "json", "--no-save", "--", "id", "-u"],
        env=env, capture_output=True, timeout=60)
    assert done.returncode == 3, done.stderr
    record = json.loads(done.stdout)["hosts"][0]
    assert record["status"] == "auth_failed" and record["error"] == "sudo: wrong password"
    assert record["exit_code"] is None and record["stdout"] == ""
    for output in (done.stdout, done.stderr):
        assert WRONG.encode() not in output and b"fleetexec-sudo" not in output


def test_a_nopasswd_sudo_never_gets_the_password_on_its_stdin(sudo_hosts):
    result = fleetexec.run([sudo_hosts.host(NOPASSWD, "127.0.16.4")], "cat; id -u",
                           **sudo_hosts.options(sudo_password=sudo_hosts.password))
    r = result["h1"]
    assert r.status is Status.OK and r.stdout == b"0\n" and r.stderr == b""


def test_stdin_data_follows_an_accepted_password_or_goes_at_once_without_a_prompt(sudo_hosts):
    data = b"line one\nline two\n" * 1000
    for user, address in ((ASKS, "127.0.16.5"), (NOPASSWD, "127.0.16.6")):
        with fleetexec.FleetSession([sudo_hosts.host(user, address)], **sudo_hosts.options(
                sudo_password=sudo_hosts.password)) as fleet:
            result = fleet.run("cat", stdin=data)
        assert result["h1"].status is Status.OK and result["h1"].stdout == data, user
        _nowhere(result, sudo_hosts.password)


def test_without_a_password_sudo_n_is_a_clear_auth_failed(sudo_hosts):
    result = fleetexec.run([sudo_hosts.host(ASKS, "127.0.16.7")], "id -u",
                           **sudo_hosts.options())
    r = result["h1"]
    assert r.status is Status.AUTH_FAILED and r.exit_code is None
    assert r.error == "sudo: a password is required (use --ask-sudo-password)"
    assert r.stdout == b"" and b"fleetexec-sudo" not in r.stderr
    assert result.exit_code == 3


def test_a_command_failing_under_sudo_is_failed_with_its_exit_code(sudo_hosts):
    result = fleetexec.run([sudo_hosts.host(ASKS, "127.0.16.8")], "echo oops >&2; exit 7",
                           **sudo_hosts.options(sudo_password=sudo_hosts.password))
    r = result["h1"]
    assert r.status is Status.FAILED and r.exit_code == 7 and r.stderr == b"oops\n"
    assert result.exit_code == 1


def test_ask_sudo_password_prompts_once_in_the_parent(sudo_hosts):
    server = sudo_hosts.server
    done = CliRunner().invoke(main, [
        "run", "-H", f"{ASKS}@127.0.16.9:{server.port}", "-k", str(server.client_key_path),
        "--known-hosts", sudo_hosts.known_hosts, "--no-system-known-hosts", "--sudo",
        "--ask-sudo-password", "-o", "json", "--no-save", "--", "id", "-u"],
        input=sudo_hosts.password + "\n")
    assert done.exit_code == 0, done.output
    assert done.output.count("sudo password") == 1
    assert '"stdout": "0\\n"' in done.output and sudo_hosts.password not in done.output
