"""Issue 7: host key trust holes, closed the way OpenSSH closes them.

1. A name with any known_hosts entry, even one whose key is revoked, is not
   "new": accept-new refuses a different key as changed; a presented key that
   is itself @revoked is always refused.
2. Host names are compared and recorded lower-cased (plain and hashed entries).
3. The file accept-new records into is always consulted, even when it is not
   one of the files read; under its lock only an identical key is accepted.
4. Long-lived workers (FleetSession, the --persist agent) see edits to
   known_hosts and key files, and re-verify a kept connection before reuse.
5. No credential reaches a host whose key was refused (cases 1-3).
8. accept-new appends like OpenSSH: in place, as bytes, to a symlink's target,
   losing nothing another writer appends meanwhile.
9. known_hosts host patterns (`*`, `?`, `!negation`, `[host*]:port`) match as
   in OpenSSH: a host a wildcard line covers is known, not new.

Real sshd hosts here are 127.0.23.x; in-process recording servers 127.23.0.x
(and 127.0.0.1, for `LOCALHOST`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa as rsa_module
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import fleetexec
from fleetexec import Host, Options, Status
from fleetexec.ssh.hostkeys import HostKeyConflict, KnownHosts, record_host_key
from fleetexec.testing.sshd import OpenSSHServer

pytestmark = pytest.mark.timeout(60)

SECRET = "hunter2-SECRET-pw"
FAST = {"system_known_hosts": False, "connect_timeout": 5}
ACCEPT_NEW = {**FAST, "host_key_policy": "accept-new"}

logging.getLogger("tests.hostkey_trust").addHandler(logging.NullHandler())


# ---- helpers ------------------------------------------------------------------------------------


def public_line() -> str:
    """A fresh ed25519 public key no server here presents (`K1`)."""
    return Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def hashed(name: str, key_line: str) -> str:
    salt = os.urandom(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()} {key_line}\n"


def real_host(sshd: OpenSSHServer, name: str, address: str, key_file: Path | None = None) -> Host:
    return Host(name, address=address, port=sshd.port, user=sshd.user,
                key_files=(str(key_file or sshd.client_key_path),))


def ran_marker(marker: Path) -> str:
    """A command that leaves `marker` behind if it ever runs."""
    return f"touch {marker}; echo ran"


def client_key(path: Path) -> Path:
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def pkey(key_line: str) -> paramiko.PKey:
    key_type, key_b64 = key_line.split()[:2]
    return paramiko.PKey.from_type_string(key_type, base64.b64decode(key_b64))


# ---- 1. a name whose only entry is revoked is not new -------------------------------------------


def test_1_accept_new_refuses_a_new_key_for_a_name_whose_only_entry_is_revoked(
    sshd: OpenSSHServer, tmp_path: Path
) -> None:
    k1 = public_line()
    known = tmp_path / "known_hosts"
    contents = f"[127.0.23.1]:{sshd.port} {k1}\n@revoked * {k1}\n"
    known.write_text(contents)
    marker = tmp_path / "ran"
    result = fleetexec.run([real_host(sshd, "h1", "127.0.23.1")], ran_marker(marker),
                           known_hosts=[str(known)], **ACCEPT_NEW)
    r = result["h1"]
    assert r.status is Status.HOSTKEY_CHANGED, r.error
    assert result.exit_code == 3
    assert "HOST KEY CHANGED" in (r.error or "") and "\n" not in (r.error or "")
    assert not marker.exists()
    assert known.read_text() == contents  # nothing recorded over it


@pytest.mark.parametrize("where", ["read-file", "accept-new-file-not-read"])
@pytest.mark.parametrize("policy", ["strict", "accept-new"])
def test_1_a_presented_key_that_is_revoked_is_always_refused(
    sshd: OpenSSHServer, tmp_path: Path, isolated_home: Path, where: str, policy: str
) -> None:
    revocation = f"@revoked * {sshd.host_public_key}\n"
    if where == "read-file":
        known = tmp_path / "known_hosts"
        options: dict[str, object] = {"known_hosts": [str(known)]}
    else:  # ~/.ssh/known_hosts: where accept-new records, with no known_hosts file read
        known = isolated_home / ".ssh" / "known_hosts"
        known.parent.mkdir(mode=0o700)
        options = {}
    known.write_text(revocation)
    marker = tmp_path / "ran"
    result = fleetexec.run([real_host(sshd, "h1", "127.0.23.2")], ran_marker(marker),
                           host_key_policy=policy, **options, **FAST)
    if (policy, where) == ("strict", "accept-new-file-not-read"):
        expected = Status.HOSTKEY_UNKNOWN  # strict reads only the known_hosts files given
    else:
        expected = Status.HOSTKEY_CHANGED
    assert result["h1"].status is expected, result["h1"].error
    assert not marker.exists()
    assert known.read_text() == revocation


# ---- 2. host names are compared and recorded lower-cased ----------------------------------------


@pytest.mark.parametrize("form", ["plain", "hashed"])
def test_2_a_name_differing_only_in_case_is_the_same_host(
    sshd: OpenSSHServer, tmp_path: Path, form: str
) -> None:
    name = f"[localhost]:{sshd.port}"
    k1 = public_line()
    known = tmp_path / "known_hosts"
    contents = f"{name} {k1}\n" if form == "plain" else hashed(name, k1)
    known.write_text(contents)
    marker = tmp_path / "ran"
    result = fleetexec.run([real_host(sshd, "impostor", "LOCALHOST")], ran_marker(marker),
                           known_hosts=[str(known)], **ACCEPT_NEW)
    assert result["impostor"].status is Status.HOSTKEY_CHANGED, result["impostor"].error
    assert not marker.exists()
    assert known.read_text() == contents  # no `[LOCALHOST]:port K2` appended


def test_2_accept_new_records_the_lower_cased_name_and_any_case_matches_it(
    sshd: OpenSSHServer, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    first = fleetexec.run([real_host(sshd, "h", "LocalHost")], "echo fine",
                          known_hosts=[str(known)], **ACCEPT_NEW)
    assert first["h"].status is Status.OK, first["h"].error
    assert known.read_text() == f"[localhost]:{sshd.port} {sshd.host_public_key}\n"
    again = fleetexec.run([real_host(sshd, "h", "LOCALHOST")], "echo fine",
                          known_hosts=[str(known)], **FAST)  # strict
    assert again["h"].status is Status.OK, again["h"].error
    # An upper-case entry written by hand matches a lower-case target, as in OpenSSH.
    known.write_text(f"[LOCALHOST]:{sshd.port} {sshd.host_public_key}\n")
    lower = fleetexec.run([real_host(sshd, "h", "localhost")], "echo fine",
                          known_hosts=[str(known)], **FAST)
    assert lower["h"].status is Status.OK, lower["h"].error


# ---- 3. the accept-new file is always consulted -------------------------------------------------


def test_3_accept_new_consults_the_file_it_records_into_even_when_it_is_not_read(
    sshd: OpenSSHServer, tmp_path: Path, isolated_home: Path
) -> None:
    recorded = isolated_home / ".ssh" / "known_hosts"  # accept-new's file; no file is read
    recorded.parent.mkdir(mode=0o700)
    contents = (f"[127.0.23.3]:{sshd.port} {public_line()}\n"
                f"[127.0.23.4]:{sshd.port} {sshd.host_public_key}\n")
    recorded.write_text(contents)
    marker = tmp_path / "ran"
    hosts = [real_host(sshd, "other-key", "127.0.23.3"), real_host(sshd, "same-key", "127.0.23.4")]
    result = fleetexec.run(hosts, f'case "$SSH_CONNECTION" in *" 127.0.23.3 "*) touch {marker};; '
                           "esac; echo fine", **ACCEPT_NEW)
    assert result["other-key"].status is Status.HOSTKEY_CHANGED, result["other-key"].error
    assert (result["same-key"].status, result["same-key"].stdout) == (Status.OK, b"fine\n")
    assert not marker.exists()
    assert recorded.read_text() == contents  # nothing added, not even the identical key again


def test_3_record_host_key_accepts_only_an_identical_key_under_its_lock(tmp_path: Path) -> None:
    k1, k2, k3 = public_line(), public_line(), public_line()
    known = tmp_path / "known_hosts"
    contents = f"[web1]:2222 {k1}\n@revoked * {k3}\n"
    known.write_text(contents)
    assert record_host_key(str(known), "[web1]:2222", pkey(k1)) is False  # already there
    assert record_host_key(str(known), "[WEB1]:2222", pkey(k1)) is False
    with pytest.raises(HostKeyConflict, match="has ssh-ed25519 SHA256:"):
        record_host_key(str(known), "[web1]:2222", pkey(k2))
    with pytest.raises(HostKeyConflict, match="@revoked"):
        record_host_key(str(known), "[web2]:2222", pkey(k3))
    assert known.read_text() == contents
    assert record_host_key(str(known), "[web2]:2222", pkey(k2)) is True
    assert known.read_text() == contents + f"[web2]:2222 {k2}\n"


# ---- 4. long-lived workers see edits to known_hosts and key files -------------------------------


def client_ports(result: fleetexec.FleetResult) -> dict[str, str]:
    return {h: r.stdout.split()[1].decode() for h, r in result.items() if r.status is Status.OK}


@pytest.mark.parametrize("edit", ["revoked", "removed"])
def test_4_a_fleet_session_drops_a_kept_connection_whose_key_is_no_longer_trusted(
    sshd: OpenSSHServer, tmp_path: Path, edit: str
) -> None:
    known = tmp_path / "known_hosts"
    keep = f"[127.0.23.6]:{sshd.port} {sshd.host_public_key}\n"
    known.write_text(f"[127.0.23.5]:{sshd.port} {sshd.host_public_key}\n" + keep)
    hosts = [real_host(sshd, "edited", "127.0.23.5"), real_host(sshd, "kept", "127.0.23.6")]
    with fleetexec.FleetSession(hosts, known_hosts=[str(known)], **FAST) as fleet:
        first = fleet.run("echo $SSH_CONNECTION")
        assert first.ok, {h: r.error for h, r in first.items()}
        # Found trusted on reuse, before the edit: that answer must not outlive it.
        assert fleet.run("true").ok
        if edit == "revoked":
            with known.open("a") as file:
                file.write(f"@revoked [127.0.23.5]:{sshd.port} {sshd.host_public_key}\n")
        else:
            known.write_text(keep)
        second = fleet.run("echo $SSH_CONNECTION")
    if edit == "revoked":  # a revoked key is refused for every host that presents it
        assert {r.status for r in second.values()} == {Status.HOSTKEY_CHANGED}
    else:
        assert second["edited"].status is Status.HOSTKEY_UNKNOWN, second["edited"].error
        assert client_ports(second)["kept"] == client_ports(first)["kept"]  # still reused


def test_4_a_fleet_session_sees_a_host_added_to_known_hosts_between_runs(
    sshd: OpenSSHServer, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.23.7]:{sshd.port} {sshd.host_public_key}\n")
    hosts = [real_host(sshd, "known", "127.0.23.7"), real_host(sshd, "added", "127.0.23.8")]
    with fleetexec.FleetSession(hosts, known_hosts=[str(known)], **FAST) as fleet:
        first = fleet.run("echo $SSH_CONNECTION")
        assert first["known"].status is Status.OK, first["known"].error
        assert first["added"].status is Status.HOSTKEY_UNKNOWN
        with known.open("a") as file:  # the user verifies the host and adds it
            file.write(f"[127.0.23.8]:{sshd.port} {sshd.host_public_key}\n")
        second = fleet.run("echo $SSH_CONNECTION")
    assert second["added"].status is Status.OK, second["added"].error
    assert client_ports(second)["known"] == client_ports(first)["known"]


def test_4_a_fleet_session_no_longer_authenticates_with_a_deleted_key_file(
    sshd: OpenSSHServer, tmp_path: Path
) -> None:
    key = tmp_path / "id_ed25519"
    key.write_bytes(sshd.client_key_path.read_bytes())
    key.chmod(0o600)
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.23.9]:{sshd.port} {sshd.host_public_key}\n"
                     f"[127.0.23.10]:{sshd.port} {sshd.host_public_key}\n")
    hosts = [real_host(sshd, "kept", "127.0.23.9", key),
             real_host(sshd, "lost", "127.0.23.10", key)]
    # The first command on "lost" kills its own sshd session: no connection is kept for it.
    drop = 'case "$SSH_CONNECTION" in *" 127.0.23.10 "*) kill -9 $PPID;; esac; echo $SSH_CONNECTION'
    with fleetexec.FleetSession(hosts, known_hosts=[str(known)], **FAST) as fleet:
        first = fleet.run(drop)
        assert first["kept"].status is Status.OK, first["kept"].error
        assert first["lost"].status is not Status.OK
        key.unlink()
        second = fleet.run("echo $SSH_CONNECTION")
    r = second["lost"]  # a new connection: the key file is gone, so no key is offered
    assert r.status is Status.ERROR, r.error
    assert r.error == f"key file {key}: No such file or directory"
    # A connection kept from before stays usable, as with an ssh ControlMaster.
    assert client_ports(second)["kept"] == client_ports(first)["kept"]


@pytest.fixture
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    directory = tmp_path / "runtime"
    directory.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(directory))
    yield directory
    subprocess.run([sys.executable, "-m", "fleetexec", "agent", "stop"], capture_output=True,
                   timeout=30, check=False)


@pytest.mark.timeout(120)
def test_4_the_persist_agent_sees_a_revocation_made_between_runs(
    sshd: OpenSSHServer, tmp_path: Path, runtime_dir: Path
) -> None:
    inventory = sshd.write_inventory(tmp_path / "inv.yaml", ["127.0.23.11"])
    known = tmp_path / "known_hosts"

    def persist_run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fleetexec", "run", "-i", str(inventory),
             "--no-system-known-hosts", "--persist", "--connect-timeout", "5", "-o", "json",
             "--", "echo fine"], capture_output=True, text=True, timeout=60, check=False)

    first = persist_run()
    assert first.returncode == 0, first.stderr
    with known.open("a") as file:
        file.write(f"@revoked * {sshd.host_public_key}\n")
    second = persist_run()
    assert second.returncode == 3, second.stdout + second.stderr
    assert json.loads(second.stdout)["hosts"][0]["status"] == "hostkey_changed"


# ---- 5. no credential reaches a refused host ----------------------------------------------------


class _Recorder(paramiko.ServerInterface):
    """Notes every authentication attempt; lets nobody in."""

    def __init__(self, name: str, log: list[tuple[str, str]]) -> None:
        self.name, self.log = name, log

    def get_allowed_auths(self, username: str) -> str:
        return "publickey,password"

    def check_auth_none(self, username: str) -> int:
        self.log.append((self.name, "none"))
        return paramiko.AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        self.log.append((self.name, "publickey"))
        return paramiko.AUTH_FAILED

    def check_auth_password(self, username: str, password: str) -> int:
        self.log.append((self.name, f"password {password}"))
        return paramiko.AUTH_FAILED


class RecordingServer:
    """An in-process SSH server on `address` with its own host key, recording auth attempts."""

    def __init__(self, name: str, address: str, log: list[tuple[str, str]]) -> None:
        self.name, self.address, self.log = name, address, log
        self.key = paramiko.ECDSAKey.generate()
        self.sock = socket.create_server((address, 0))
        self.port: int = self.sock.getsockname()[1]
        self.transports: list[paramiko.Transport] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def public_line(self) -> str:
        return f"{self.key.get_name()} {self.key.get_base64()}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed by __exit__
            transport = paramiko.Transport(conn)
            transport.set_log_channel("tests.hostkey_trust")
            transport.add_server_key(self.key)
            self.transports.append(transport)
            # With an event, negotiation runs on paramiko's thread and never raises here.
            transport.start_server(event=threading.Event(), server=_Recorder(self.name, self.log))

    def __enter__(self) -> RecordingServer:
        self.thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self.sock.close()
        self.thread.join(5)
        for transport in self.transports:
            transport.close()


@pytest.mark.parametrize("case", ["1-revoked-only-entry", "2-name-case", "3-accept-new-file"])
def test_5_no_credential_reaches_a_host_whose_key_was_refused(
    tmp_path: Path, isolated_home: Path, case: str
) -> None:
    log: list[tuple[str, str]] = []
    key = client_key(tmp_path / "id_ed25519")
    impostor_address = "127.0.0.1" if case == "2-name-case" else "127.23.0.1"
    with RecordingServer("impostor", impostor_address, log) as impostor, \
            RecordingServer("control", "127.23.0.2", log) as control:
        k1 = public_line()
        target = "LOCALHOST" if case == "2-name-case" else impostor.address
        name = f"[{'localhost' if case == '2-name-case' else target}]:{impostor.port}"
        lines = f"[{control.address}]:{control.port} {control.public_line}\n"
        if case == "1-revoked-only-entry":
            lines += f"{name} {k1}\n@revoked * {k1}\n"
        else:
            lines += f"{name} {k1}\n"
        if case == "3-accept-new-file":  # ~/.ssh/known_hosts: recorded into, not read
            known = isolated_home / ".ssh" / "known_hosts"
            known.parent.mkdir(mode=0o700)
            options: dict[str, object] = {}
        else:
            known = tmp_path / "known_hosts"
            options = {"known_hosts": [str(known)]}
        known.write_text(lines)
        hosts = [Host("impostor", address=target, port=impostor.port, user="deploy",
                      key_files=(str(key),)),
                 Host("control", address=control.address, port=control.port, user="deploy",
                      key_files=(str(key),))]
        result = fleetexec.run(hosts, "true", password=SECRET, **options, **ACCEPT_NEW)
    assert result["impostor"].status is Status.HOSTKEY_CHANGED, result["impostor"].error
    assert [attempt for who, attempt in log if who == "impostor"] == []
    assert result["control"].status is Status.AUTH_FAILED, result["control"].error
    assert ("control", f"password {SECRET}") in log  # the recorder does see passwords
    assert known.read_text() == lines


# ---- 8. accept-new appends like OpenSSH ---------------------------------------------------------


def test_8_record_host_key_appends_to_a_symlinks_target_and_keeps_the_link(tmp_path: Path) -> None:
    target = tmp_path / "dotfiles" / "known_hosts"
    target.parent.mkdir()
    target.write_text("[old]:22 " + public_line() + "\n")
    before = target.read_text()
    link = tmp_path / "known_hosts"
    link.symlink_to(target)
    k = public_line()
    assert record_host_key(str(link), "[new]:22", pkey(k)) is True
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == before + f"[new]:22 {k}\n"


def test_8_record_host_key_keeps_other_bytes_exactly_and_appends_in_place(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    before = b"# caf\xe9 \xff\xfe not UTF-8\n[old]:22 " + public_line().encode()  # no final \n
    known.write_bytes(before)
    inode = known.stat().st_ino
    appender = known.open("ab")  # a writer that opened the file before we recorded
    try:
        k = public_line()
        assert record_host_key(str(known), "[new]:22", pkey(k)) is True
        appender.write(b"[later]:22 " + public_line().encode() + b"\n")
    finally:
        appender.close()
    data = known.read_bytes()
    assert known.stat().st_ino == inode  # not replaced: the open appender's line is kept
    assert data.startswith(before + b"\n" + f"[new]:22 {k}\n".encode())
    assert data.count(b"\n") == 4 and b"[later]:22 " in data


def test_8_record_host_key_creates_a_missing_file_private(tmp_path: Path) -> None:
    known = tmp_path / "new-dir" / "known_hosts"
    old_umask = os.umask(0o022)
    try:
        assert record_host_key(str(known), "[new]:22", pkey(public_line())) is True
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    assert stat.S_IMODE(known.parent.stat().st_mode) == 0o700


WRITER = """
import sys, threading
import paramiko
from fleetexec.ssh.hostkeys import record_host_key
path, tag = sys.argv[1], sys.argv[2]
key = paramiko.ECDSAKey.generate()
results = []
def record(i):
    results.append(record_host_key(path, f"[127.0.{tag}.{i}]:22", key))
threads = [threading.Thread(target=record, args=(i,)) for i in range(1, 11)]
print("ready", flush=True)
sys.stdin.readline()
for t in threads: t.start()
for t in threads: t.join()
print(sorted(results))
"""


def test_8_forty_recorders_and_forty_plain_appends_at_once_leave_eighty_lines(
    tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(known), str(tag)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for tag in range(1, 5)]  # 4 processes x 10 threads
    try:
        for writer in writers:
            assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        for writer in writers:  # go, then start the shell appenders while they record
            assert writer.stdin is not None
            writer.stdin.write("go\n")
            writer.stdin.flush()
        appends = [subprocess.Popen(["sh", "-c", 'printf "%s\\n" "$1" >> "$2"', "sh",
                                     f"plain{i}.example ssh-ed25519 AAAA{i}", str(known)])
                   for i in range(40)]
        assert [a.wait(30) for a in appends] == [0] * 40
        outputs = [w.communicate(timeout=30)[0] for w in writers]
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
    assert outputs == ["[True, True, True, True, True, True, True, True, True, True]\n"] * 4
    lines = known.read_text().splitlines()
    assert len(lines) == 80
    names = {line.split()[0] for line in lines}
    assert names == ({f"[127.0.{t}.{i}]:22" for t in range(1, 5) for i in range(1, 11)}
                     | {f"plain{i}.example" for i in range(40)})


# ---- 9. host patterns match as in OpenSSH -------------------------------------------------------


def known_from(text: str) -> KnownHosts:
    known = KnownHosts()
    for line in text.splitlines():
        known._add_line(line)
    return known


@pytest.mark.parametrize(("names", "host", "applies"), [
    ("*.example.com", "web1.example.com", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "WEB1.Example.COM", True),  # the name is lower-cased
    ("*.EXAMPLE.com", "web1.example.com", True),  # and so is the pattern
    ("web?", "web1", True),
    ("web?", "web", False),
    ("web?", "web12", False),
    ("w*b*1", "web-db-1", True),
    ("[10.0.0.*]:2222", "[10.0.0.7]:2222", True),  # `[` is literal, not a character class
    ("[10.0.0.*]:2222", "[10.0.0.7]:22", False),
    ("[10.0.0.*]:2222", "10.0.0.7", False),
    ("10.0.0.*", "[10.0.0.7]:2222", False),  # matched as written: the port form is not stripped
    ("*", "[10.0.0.7]:2222", True),
    ("*.example.com,!bastion.example.com", "web1.example.com", True),
    ("*.example.com,!bastion.example.com", "bastion.example.com", False),
    ("!bastion.example.com,*.example.com", "BASTION.example.com", False),
    ("web1.example.com,!*.example.com", "web1.example.com", False),  # vetoes the exact name too
    ("!bastion.example.com", "web1.example.com", False),  # no positive pattern
])
def test_9_known_hosts_patterns_match_like_openssh(names: str, host: str, applies: bool) -> None:
    k1 = public_line()
    found = known_from(f"{names} {k1}\n").lookup(host)
    assert found == ([tuple(k1.split()[:2])] if applies else [])


def test_9_exact_names_stay_in_the_dict_and_pattern_lines_are_kept_apart() -> None:
    k1, k2, k3 = public_line(), public_line(), public_line()
    known = known_from(f"web1,WEB2 {k1}\nweb* {k2}\n{hashed('web*', k3).strip()}\n")
    assert set(known.plain) == {"web1", "web2"}
    assert [names for names, _, _ in known.patterns] == [("web*",)]
    assert [b for _, b in known.lookup("web1")] == [k1.split()[1], k2.split()[1]]
    assert [b for _, b in known.lookup("web3")] == [k2.split()[1]]
    # A hashed name is an exact hash: `web*` hashed matches the literal name only.
    assert sorted(b for _, b in known.lookup("web*")) == sorted([k2.split()[1], k3.split()[1]])
    assert known.trusts("webx", pkey(k2)) and not known.trusts("webx", pkey(k1))


def test_9_revoked_lines_with_patterns_keep_their_meaning() -> None:
    k1, k2 = public_line(), public_line()
    known = known_from(f"@revoked * {k1}\n@revoked db1,db* {k2}\n@cert-authority * {k2}\n")
    assert known.revoked == {k1.split()[1], k2.split()[1]}
    assert known.lookup("web1") == []  # `@revoked *` does not make every host known
    assert known.lookup("db2") == []
    assert [b for _, b in known.lookup("db1")] == [k2.split()[1]]  # its literal names are known
    assert not known.trusts("db1", pkey(k2))


def test_9_record_host_key_sees_wildcard_lines(tmp_path: Path) -> None:
    k1, k2 = public_line(), public_line()
    known = tmp_path / "known_hosts"
    contents = f"[10.0.0.*]:2222,![10.0.0.9]:2222 {k1}\n"
    known.write_text(contents)
    assert record_host_key(str(known), "[10.0.0.5]:2222", pkey(k1)) is False
    with pytest.raises(HostKeyConflict, match="has ssh-ed25519 SHA256:"):
        record_host_key(str(known), "[10.0.0.5]:2222", pkey(k2))
    assert known.read_text() == contents
    assert record_host_key(str(known), "[10.0.0.9]:2222", pkey(k2)) is True  # negated: new
    assert known.read_text() == contents + f"[10.0.0.9]:2222 {k2}\n"


def test_9_strict_trusts_a_host_known_only_through_a_wildcard_line(
    sshd: OpenSSHServer, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.23.*]:{sshd.port} {sshd.host_public_key}\n")
    result = fleetexec.run([real_host(sshd, "h1", "127.0.23.21")], "echo fine",
                           known_hosts=[str(known)], system_known_hosts=False,
                           host_key_policy="strict", connect_timeout=5)
    assert (result["h1"].status, result["h1"].stdout) == (Status.OK, b"fine\n"), result["h1"].error


@pytest.mark.parametrize("same_key", [True, False])
def test_9_accept_new_treats_a_wildcard_line_as_an_entry_for_the_host(
    sshd: OpenSSHServer, tmp_path: Path, same_key: bool
) -> None:
    known = tmp_path / "known_hosts"
    contents = f"[127.0.23.*]:{sshd.port} {sshd.host_public_key if same_key else public_line()}\n"
    known.write_text(contents)
    marker = tmp_path / "ran"
    result = fleetexec.run([real_host(sshd, "h1", "127.0.23.22")], ran_marker(marker),
                           known_hosts=[str(known)], system_known_hosts=False,
                           host_key_policy="accept-new", connect_timeout=5)
    r = result["h1"]
    if same_key:
        assert r.status is Status.OK, r.error
    else:
        assert r.status is Status.HOSTKEY_CHANGED, r.error
        assert "HOST KEY CHANGED" in (r.error or "")
        assert not marker.exists()
    assert known.read_text() == contents  # not "new": nothing recorded either way


def test_9_a_negated_pattern_excludes_the_host(sshd: OpenSSHServer, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.23.*]:{sshd.port},![127.0.23.24]:{sshd.port} "
                     f"{sshd.host_public_key}\n")
    hosts = [real_host(sshd, "excluded", "127.0.23.24"), real_host(sshd, "covered", "127.0.23.25")]
    result = fleetexec.run(hosts, "echo fine", known_hosts=[str(known)], system_known_hosts=False,
                           host_key_policy="strict", connect_timeout=5)
    assert result["excluded"].status is Status.HOSTKEY_UNKNOWN, result["excluded"].error
    assert result["covered"].status is Status.OK, result["covered"].error


def test_an_rsa_entry_listed_first_does_not_make_the_server_sign_with_rsa(
        tmp_path: Path) -> None:
    """ssh-keyscan lists a host's RSA key first; paramiko asks for the type of the first
    entry, and RSA signing costs the sshd ~2 ms more per connection. ed25519 is asked for."""
    from fleetexec.resolve import resolve
    from fleetexec.ssh.connect import connect
    from fleetexec.ssh.session import WorkerContext
    from fleetexec.ssh.transport import close_client
    from fleetexec.testing.sshd import require_sshd

    require_sshd()
    rsa = rsa_module.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_path = tmp_path / "ssh_host_rsa_key"
    rsa_path.write_bytes(rsa.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.OpenSSH,
                                           serialization.NoEncryption()))
    rsa_path.chmod(0o600)
    rsa_public = rsa.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
    with OpenSSHServer(extra_config=[f"HostKey {rsa_path}"]) as server:
        name = f"[127.0.1.1]:{server.port}"
        known = tmp_path / "known_hosts"
        known.write_text(f"{name} {rsa_public}\n{name} {server.host_public_key}\n")
        options = Options(known_hosts=(str(known),), system_known_hosts=False,
                          use_ssh_config=False, key_files=(str(server.client_key_path),))
        [host] = resolve([Host("h", address="127.0.1.1", port=server.port, user=server.user)],
                         options)
        context = WorkerContext(options)
        client = connect(host, context, time.monotonic())
        try:
            transport = client.get_transport()
            assert transport is not None
            assert transport.get_remote_server_key().get_name() == "ssh-ed25519"
        finally:
            close_client(client)
            context.close_connections()
