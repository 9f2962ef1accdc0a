"""`--outdir`: per-host .out/.err/.json files, safe names, no symlink followed."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fleetexec
from fleetexec import ConfigError, Status
from fleetexec.backends import Output
from fleetexec.host import check_hostname
from fleetexec.outdir import SPOOL_IN_MEMORY, OutdirWriter, file_stem
from fleetexec.render import result_to_dict
from fleetexec.results import HostResult
from fleetexec.testing import Fault, MockHost, Reply, ScriptedBackend

pytestmark = pytest.mark.timeout(90)

OK = HostResult("web01", Status.OK, 0, stdout=b"hello\n", stderr=b"warn\n", duration=0.1)
BINARY = HostResult("web02", Status.FAILED, 2, stdout=b"\xff\x00\x1b[2J raw\n", stderr=b"",
                    duration=0.2, error="exit code 2")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def fleetexec_cli(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_STATE_HOME": str(state)}
    return subprocess.run([sys.executable, "-m", "fleetexec", *args], capture_output=True,
                          text=True, timeout=60, env=env)


# --- file names ----------------------------------------------------------------------

@pytest.mark.parametrize(("host", "stem"), [
    ("web01.example.com", "web01.example.com"),
    ("WEB_1-a", "WEB_1-a"),
    ("10.0.0.1", "10.0.0.1"),
    ("::1", "++1"),
    ("[::1]", "=++1="),
    ("fe80::1%eth0", "fe80++1@eth0"),
    ("[fe80::1%eth0.5]", "=fe80++1@eth0.5="),
    ("::ffff:10.0.0.1", "++ffff+10.0.0.1"),
])
def test_file_stem_mapping(host: str, stem: str) -> None:
    assert file_stem(host) == stem


def test_file_stems_of_look_alike_names_differ() -> None:
    names = ["::1", "[::1]", "0::1", "fe80::1", "fe80++1", "fe80__1", "fe80--1", "fe80::1%eth0",
             "fe80::1%eth0.1", "web1", "WEB1", "a.b", "a_b", "a-b"]
    names = [n for n in names if _valid(n)]
    assert "fe80++1" not in names  # `+` is in no host name, so it can stand for `:`
    assert len({file_stem(n) for n in names}) == len(names)


@pytest.mark.parametrize("bad", ["", "a/b", "../etc", "-rf", ".", "..", "a b", "x\n"])
def test_file_stem_refuses_what_is_not_a_host_name(bad: str) -> None:
    with pytest.raises(ValueError):
        file_stem(bad)


def _valid(name: str) -> bool:
    try:
        check_hostname(name)
    except ValueError:
        return False
    return True


_LABELS = st.from_regex(r"\A[A-Za-z0-9_]([A-Za-z0-9_-]{0,8}[A-Za-z0-9_])?\Z")
_DNS = st.lists(_LABELS, min_size=1, max_size=3).map(".".join)
_V6 = st.ip_addresses(v=6).map(str)
_ZONED = st.tuples(_V6, st.from_regex(r"\A[A-Za-z0-9_.-]{1,6}\Z")).map("%".join)
_HOSTS = st.one_of(_DNS, st.ip_addresses(v=4).map(str), _V6, _ZONED,
                   st.one_of(_V6, _ZONED).map(lambda a: f"[{a}]"))


@settings(max_examples=300, deadline=None)
@given(_HOSTS, _HOSTS)
def test_file_stem_is_safe_and_collision_free(a: str, b: str) -> None:
    assert _valid(a) and _valid(b)
    stem_a, stem_b = file_stem(a), file_stem(b)
    assert (stem_a == stem_b) == (a == b)
    assert "/" not in stem_a and stem_a[0] not in ".-"
    assert set(stem_a) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                              "0123456789_-.+@=")


def test_v6_names_are_not_normalised() -> None:
    # Two spellings of one address are two host names, hence two files.
    assert ipaddress.ip_address("::1") == ipaddress.ip_address("0::1")
    assert file_stem("::1") != file_stem("0::1")


# --- the writer ----------------------------------------------------------------------

def test_writes_exact_bytes_and_the_json_record_0600_in_a_new_0700_dir(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with OutdirWriter(out) as writer:
        writer(OK)
        writer(BINARY)
    assert mode(out) == 0o700
    assert sorted(p.name for p in out.iterdir()) == [
        "web01.err", "web01.json", "web01.out", "web02.err", "web02.json", "web02.out"]
    assert (out / "web01.out").read_bytes() == b"hello\n"
    assert (out / "web01.err").read_bytes() == b"warn\n"
    assert (out / "web02.out").read_bytes() == b"\xff\x00\x1b[2J raw\n"  # raw, not sanitised
    assert (out / "web02.err").read_bytes() == b""
    assert json.loads((out / "web02.json").read_text()) == result_to_dict(BINARY)
    assert all(mode(p) == 0o600 for p in out.iterdir())
    assert writer.written == ["web01", "web02"]


def test_files_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        with OutdirWriter(tmp_path / "out") as writer:
            writer(OK)
    finally:
        os.umask(old)
    assert all(mode(p) == 0o600 for p in (tmp_path / "out").iterdir())


def test_an_existing_empty_dir_is_used(tmp_path: Path) -> None:
    with OutdirWriter(tmp_path) as writer:
        writer(OK)
    assert (tmp_path / "web01.out").read_bytes() == b"hello\n"


def test_a_non_empty_dir_is_refused_unless_force(tmp_path: Path) -> None:
    (tmp_path / "web01.out").write_bytes(b"old")
    (tmp_path / "other.out").write_bytes(b"someone else's")
    with pytest.raises(ConfigError, match="not empty.*--force"):
        OutdirWriter(tmp_path)
    assert (tmp_path / "web01.out").read_bytes() == b"old"
    with OutdirWriter(tmp_path, force=True) as writer:
        writer(OK)
    assert (tmp_path / "web01.out").read_bytes() == b"hello\n"
    assert (tmp_path / "other.out").read_bytes() == b"someone else's"  # left alone


def test_a_file_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        OutdirWriter(tmp_path / "f")
    with pytest.raises(ConfigError, match="cannot create"):
        OutdirWriter(tmp_path / "missing" / "deeper")


def test_a_planted_symlink_is_replaced_never_followed(tmp_path: Path) -> None:
    out, victim = tmp_path / "out", tmp_path / "victim"
    victim.write_bytes(b"precious")
    writer = OutdirWriter(out)
    for suffix in (".out", ".err", ".json"):  # planted after the check, before the write
        (out / f"web01{suffix}").symlink_to(victim)
    (out / "web02.out").symlink_to(tmp_path / "dangling")
    writer(OK)
    writer(BINARY)
    writer.close()
    assert victim.read_bytes() == b"precious"
    assert not (tmp_path / "dangling").exists()
    for path in out.iterdir():
        assert not path.is_symlink() and mode(path) == 0o600
    assert (out / "web01.out").read_bytes() == b"hello\n"


def test_with_force_pre_existing_symlinks_are_replaced_too(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "web01.json").symlink_to(victim)
    with OutdirWriter(out, force=True) as writer:
        writer(OK)
    assert victim.read_bytes() == b"precious"
    assert not (out / "web01.json").is_symlink()


def test_writes_follow_the_opened_dir_even_if_it_is_moved(tmp_path: Path) -> None:
    out = tmp_path / "out"
    writer = OutdirWriter(out)
    out.rename(tmp_path / "moved")
    (tmp_path / "out").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    writer(OK)
    writer.close()
    assert (tmp_path / "moved" / "web01.out").read_bytes() == b"hello\n"
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_no_temporary_file_is_left_behind(tmp_path: Path) -> None:
    with OutdirWriter(tmp_path) as writer:
        for i in range(5):
            writer(HostResult(f"h{i}", Status.OK, 0, stdout=b"x" * 70000))
    assert all(not p.name.startswith(".") for p in tmp_path.iterdir())
    assert len(list(tmp_path.iterdir())) == 15


def test_hosts_differing_only_in_case_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="differ only in case"):
        OutdirWriter(tmp_path / "a", hosts=["web1", "WEB1"])
    assert not (tmp_path / "a").exists()  # refused before the directory is made
    with OutdirWriter(tmp_path / "b") as writer:
        writer(HostResult("web1", Status.OK, 0))
        with pytest.raises(ConfigError, match="differ only in case"):
            writer(HostResult("WEB1", Status.OK, 0))
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "web1.err", "web1.json", "web1.out"]


def test_ipv6_hosts_get_their_mapped_names(tmp_path: Path) -> None:
    with OutdirWriter(tmp_path) as writer:
        writer(HostResult("fe80::1%eth0", Status.OK, 0, stdout=b"a"))
        writer(HostResult("[::1]", Status.OK, 0, stdout=b"b"))
    assert (tmp_path / "fe80++1@eth0.out").read_bytes() == b"a"
    assert (tmp_path / "=++1=.out").read_bytes() == b"b"
    assert json.loads((tmp_path / "=++1=.json").read_text())["host"] == "[::1]"


def test_a_closed_writer_refuses(tmp_path: Path) -> None:
    writer = OutdirWriter(tmp_path)
    writer.close()
    writer.close()
    with pytest.raises(ConfigError, match="closed"):
        writer(OK)


def test_it_is_an_on_result_callback_for_the_api(tmp_path: Path) -> None:
    backend = ScriptedBackend({"web1": MockHost(replies={"deploy": Reply("done\n")}),
                               "web2": MockHost(fault=Fault.reject_auth())})
    with OutdirWriter(tmp_path / "out") as writer:
        fleetexec.run(["web1", "web2"], "deploy", backend=backend, on_result=writer)
    assert (tmp_path / "out" / "web1.out").read_bytes() == b"done\n"
    record = json.loads((tmp_path / "out" / "web2.json").read_text())
    assert record["status"] == "auth_failed" and record["exit_code"] is None


# --- output as it arrives ------------------------------------------------------------

def test_streamed_output_is_written_whole_beyond_what_results_keep(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleetexec.outdir, "OPEN_SPOOLS", 2)  # more hosts than open files
    out = tmp_path / "out"
    big = {f"h{i}": bytes([65 + i]) * (3 * SPOOL_IN_MEMORY + i) for i in range(5)}
    with OutdirWriter(out) as writer:
        for offset in range(0, max(map(len, big.values())), 10_000):  # interleaved
            for host, data in big.items():
                if data[offset:offset + 10_000]:
                    writer.on_output(Output(host, "stdout", data[offset:offset + 10_000]))
        writer.on_output(Output("h0", "stderr", b"small\n"))
        for host, data in big.items():
            writer(HostResult(host, Status.OK, 0, stdout=data[:100], stdout_truncated=True))
        writer(HostResult("quiet", Status.OK, 0))  # no chunk came: the result's bytes
    for host, data in big.items():
        assert (out / f"{host}.out").read_bytes() == data  # every byte, not the result's 100
        assert json.loads((out / f"{host}.json").read_text())["stdout_truncated"] is True
    assert (out / "h0.err").read_bytes() == b"small\n"
    assert (out / "h1.err").read_bytes() == b"" and (out / "quiet.out").read_bytes() == b""
    assert not [p.name for p in out.iterdir() if p.name.startswith(".tmp-")]
    assert all(mode(p) == 0o600 for p in out.iterdir())


def test_a_spool_file_replaced_during_the_run_fails_that_host_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleetexec.outdir, "OPEN_SPOOLS", 1)
    out = tmp_path / "out"
    chunk = b"x" * (SPOOL_IN_MEMORY + 1)
    with OutdirWriter(out) as writer:
        writer.on_output(Output("victim", "stdout", chunk))  # to its temporary file
        writer.on_output(Output("other", "stdout", chunk + b"z"))  # closes the victim's
        (temp,) = [p for p in out.iterdir() if p.stat().st_size == len(chunk)]
        temp.unlink()
        temp.write_bytes(b"planted")  # same name, another file (maybe the same inode)
        with pytest.raises(OSError, match="replaced"):
            writer.on_output(Output("victim", "stdout", b"more"))
        writer.on_output(Output("victim", "stdout", b"ignored after the failure"))
        with pytest.raises(OSError, match="replaced"):
            writer(HostResult("victim", Status.OK, 0))
        writer(HostResult("other", Status.OK, 0))
    assert not (out / "victim.out").exists() and not (out / "victim.json").exists()
    assert (out / "other.out").read_bytes() == chunk + b"z"


def test_close_drops_the_output_of_hosts_without_a_result(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with OutdirWriter(out) as writer:
        writer.on_output(Output("gone", "stdout", b"y" * (2 * SPOOL_IN_MEMORY)))
        writer.on_output(Output("gone", "stderr", b"partial"))
    assert list(out.iterdir()) == []


# --- the CLI -------------------------------------------------------------------------

def test_cli_outdir_with_the_mock_fleet_composes_with_json(mock_fleet_factory, tmp_path: Path):
    fleet = mock_fleet_factory([
        MockHost(replies={"check": Reply("fine\n")}),
        MockHost(replies={"check": Reply("", "broken\n", exit_code=4)}),
        MockHost(fault=Fault.reject_auth()),
    ])
    out, state = tmp_path / "out", tmp_path / "state"
    args = ["run", "-i", str(fleet.inventory_path), "--no-system-known-hosts", "-o", "json",
            "--outdir", str(out), "--", "check"]
    done = fleetexec_cli(*args, state=state)
    assert done.returncode == 3, done.stderr
    printed = {h["host"]: h for h in json.loads(done.stdout)["hosts"]}
    for name in ("host1", "host2", "host3"):
        assert json.loads((out / f"{name}.json").read_text()) == printed[name]
        assert mode(out / f"{name}.out") == 0o600
    assert (out / "host1.out").read_bytes() == b"fine\n"
    assert (out / "host2.err").read_bytes() == b"broken\n"
    assert (out / "host3.out").read_bytes() == b""

    again = fleetexec_cli(*args, state=state)
    assert again.returncode == 2 and again.stdout == ""
    assert "not empty" in again.stderr and "Traceback" not in again.stderr
    forced = fleetexec_cli(*args[:-2], "--force", "--", "echo forced", state=state)
    assert forced.returncode == 3, forced.stderr
    assert (out / "host1.out").read_bytes() == b"forced\n"


def test_cli_force_without_outdir_is_a_usage_error(tmp_path: Path):
    done = fleetexec_cli("run", "-H", "web1", "--force", "--", "true", state=tmp_path)
    assert done.returncode == 2 and "--force only applies to --outdir" in done.stderr


def test_cli_outdir_against_real_sshd(sshd, tmp_path: Path):
    inventory = sshd.write_inventory(tmp_path / "inv.yaml", ["127.0.7.1", "127.0.7.2"],
                                     names=["good", "bad"])
    command = ('case "$SSH_CONNECTION" in *" 127.0.7.2 "*) printf oops >&2; exit 6;; esac; '
               "printf 'line1\\nline2\\n'")
    out = tmp_path / "out"
    done = fleetexec_cli("run", "-i", str(inventory), "--no-system-known-hosts",
                         "--outdir", str(out), "--", command, state=tmp_path / "state")
    assert done.returncode == 1, done.stderr
    assert "good" in done.stdout and "bad" in done.stdout  # the table is still printed
    assert (out / "good.out").read_bytes() == b"line1\nline2\n"
    assert (out / "bad.err").read_bytes() == b"oops"
    bad = json.loads((out / "bad.json").read_text())
    assert bad["status"] == "failed" and bad["exit_code"] == 6
    assert sorted(mode(p) for p in out.iterdir()) == [0o600] * 6


def test_cli_outdir_gets_every_byte_and_stream_keeps_what_a_saved_run_keeps(
        sshd, tmp_path: Path) -> None:
    inventory = sshd.write_inventory(tmp_path / "inv.yaml", ["127.0.7.11", "127.0.7.12"])
    size = 200_000  # lines of 100 bytes: more than a saved run's 64 KiB, less than 1 MiB
    command = f"yes \"$(printf %099d 7)\" | head -c {size}"
    out = tmp_path / "out"
    done = fleetexec_cli("run", "-i", str(inventory), "--no-system-known-hosts", "-o", "stream",
                         "--outdir", str(out), "--", command, state=tmp_path / "state")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("0" * 98 + "7") == 2 * size // 100  # every line on the terminal
    for name in ("h1", "h2"):
        assert (out / f"{name}.out").read_bytes() == (b"0" * 98 + b"7\n") * (size // 100)
        record = json.loads((out / f"{name}.json").read_text())
        assert len(record["stdout"]) == 64 * 1024 and record["stdout_truncated"] is True
