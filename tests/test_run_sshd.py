"""The whole pipeline against a real OpenSSH sshd on loopback (one sshd, many 127.x hosts)."""

from __future__ import annotations

from pathlib import Path

import pytest

import fleetexec
from fleetexec import Host, Status
from fleetexec.testing.faults import closed_port

pytestmark = pytest.mark.timeout(60)


def test_exit_code_stdout_and_stderr_are_kept_apart(sshd_fleet):
    fleet = sshd_fleet(3)
    result = fleetexec.run(fleet.hosts, "echo out; echo err >&2; exit 3", **fleet.run_options())
    assert list(result) == ["h1", "h2", "h3"]
    for host_result in result.values():
        assert host_result.status is Status.FAILED
        assert host_result.exit_code == 3
        assert host_result.stdout == b"out\n"
        assert host_result.stderr == b"err\n"
    assert result.exit_code == 1


def test_ok_run_exits_zero(sshd_fleet):
    fleet = sshd_fleet(2)
    result = fleetexec.run(fleet.hosts, "hostname >/dev/null && echo fine", **fleet.run_options())
    assert result.ok and result.exit_code == 0
    assert {r.stdout for r in result.values()} == {b"fine\n"}


def test_more_than_4_mib_on_both_streams_at_once_completes(sshd_fleet):
    fleet = sshd_fleet(1)
    command = ("head -c 5000000 /dev/zero | tr '\\0' o & "
               "head -c 5000000 /dev/zero | tr '\\0' e >&2; wait")
    result = fleetexec.run(fleet.hosts, command, max_output=8 * 1024 * 1024,
                           **fleet.run_options())
    r = result["h1"]
    assert r.status is Status.OK
    assert r.stdout == b"o" * 5_000_000 and r.stderr == b"e" * 5_000_000
    assert not r.truncated


def test_output_beyond_the_cap_is_truncated_and_flagged(sshd_fleet):
    fleet = sshd_fleet(1)
    command = "head -c 3000000 /dev/zero; head -c 10 /dev/zero >&2"
    result = fleetexec.run(fleet.hosts, command, max_output=1024 * 1024, **fleet.run_options())
    r = result["h1"]
    assert r.status is Status.OK
    assert len(r.stdout) == 1024 * 1024 and r.stdout_truncated
    assert r.stderr == b"\0" * 10 and not r.stderr_truncated


def test_closed_port_is_unreachable_and_others_are_intact(sshd_fleet):
    fleet = sshd_fleet(2)
    dead = Host("dead", address="127.0.0.1", port=closed_port(), user=fleet.server.user,
                key_files=fleet.hosts[0].key_files)
    result = fleetexec.run([*fleet.hosts, dead], "echo alive", **fleet.run_options())
    assert result["dead"].status is Status.UNREACHABLE
    assert "refused" in (result["dead"].error or "")
    assert result["h1"].stdout == b"alive\n" and result["h2"].ok
    assert result.exit_code == 3


def test_rejected_key_is_auth_failed(sshd_fleet, tmp_path: Path):
    fleet = sshd_fleet(1)
    stranger = tmp_path / "stranger"
    _write_ed25519(stranger)
    result = fleetexec.run([Host("h1", address=fleet.addresses[0], port=fleet.server.port,
                                 user=fleet.server.user, key_files=(str(stranger),))],
                           "true", **fleet.run_options())
    assert result["h1"].status is Status.AUTH_FAILED
    assert "authentication failed" in (result["h1"].error or "")


def test_unknown_host_key_is_refused_with_its_fingerprint(sshd_fleet, tmp_path: Path):
    fleet = sshd_fleet(1)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    options = {**fleet.run_options(), "known_hosts": [str(empty)]}
    result = fleetexec.run(fleet.hosts, "touch /tmp/fleetexec-must-not-run", **options)
    r = result["h1"]
    assert r.status is Status.HOSTKEY_UNKNOWN
    assert f"[{fleet.addresses[0]}]:{fleet.server.port}" in (r.error or "")
    assert "ssh-ed25519 SHA256:" in (r.error or "")


def test_changed_host_key_is_refused(sshd_fleet, tmp_path: Path):
    fleet = sshd_fleet(1)
    impostor_line = _ed25519_public_line()
    known = tmp_path / "changed_known_hosts"
    known.write_text(f"[{fleet.addresses[0]}]:{fleet.server.port} {impostor_line}\n")
    options = {**fleet.run_options(), "known_hosts": [str(known)]}
    r = fleetexec.run(fleet.hosts, "true", **options)["h1"]
    assert r.status is Status.HOSTKEY_CHANGED
    assert "HOST KEY CHANGED" in (r.error or "") and "SHA256:" in (r.error or "")


def test_command_timeout_keeps_partial_output(sshd_fleet):
    fleet = sshd_fleet(1)
    options = {**fleet.run_options(), "command_timeout": 1.0}
    r = fleetexec.run(fleet.hosts, "echo started; sleep 30", **options)["h1"]
    assert r.status is Status.TIMEOUT
    assert r.stdout == b"started\n"
    assert r.duration < 10


def test_killed_by_signal_is_not_an_exit_code(sshd_fleet):
    fleet = sshd_fleet(1)
    r = fleetexec.run(fleet.hosts, "kill -KILL $$", **fleet.run_options())["h1"]
    assert r.status is Status.KILLED
    assert r.signal == "KILL" and r.exit_code is None


def test_fifty_five_hosts_in_one_run_are_all_reported(sshd_fleet):
    fleet = sshd_fleet(55, first="127.0.2.1")
    seen = []
    result = fleetexec.run(fleet.hosts, "echo $SSH_CONNECTION", on_result=seen.append,
                           **fleet.run_options())
    assert len(result) == 55 and len(seen) == 55
    assert result.ok
    for host, r in zip(fleet.hosts, result.values(), strict=True):
        assert r.stdout.split()[2] == host.address.encode()  # really reached that address


def test_accept_new_records_each_host_once_and_then_is_strict(sshd_fleet, tmp_path: Path):
    fleet = sshd_fleet(20, first="127.0.3.1")
    learned = tmp_path / "learned_known_hosts"
    options = {**fleet.run_options(), "known_hosts": [str(learned)]}
    first = fleetexec.run(fleet.hosts, "true", host_key_policy="accept-new", **options)
    assert first.ok
    lines = learned.read_text().splitlines()
    assert len(lines) == 20 and len(set(lines)) == 20
    assert (learned.stat().st_mode & 0o777) == 0o600
    second = fleetexec.run(fleet.hosts, "true", **options)
    assert second.ok
    assert learned.read_text().splitlines() == lines


def test_a_raising_callback_does_not_break_the_run(sshd_fleet, capsys):
    fleet = sshd_fleet(3)

    def explode(result):
        raise RuntimeError("callback bug")

    result = fleetexec.run(fleet.hosts, "true", on_result=explode, **fleet.run_options())
    assert result.ok and len(result) == 3
    assert "callback bug" in capsys.readouterr().err


def _write_ed25519(path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _ed25519_public_line() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.OpenSSH,
                               serialization.PublicFormat.OpenSSH).decode()
