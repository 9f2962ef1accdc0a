"""put / get over SFTP: against a real OpenSSH sshd (loopback), the mock fleet, and units.

The sshd's "remote" file system is this machine's, so the tests look at remote
files directly. Root runs these (sshd needs it), so a permission error comes
from a second sshd whose one host gets a read-only SFTP server
(`ForceCommand internal-sftp -R` for that local address).
"""

from __future__ import annotations

import os
import re
import signal
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from fleetexec import ConfigError, FleetSession, Host, Status
from fleetexec.backends.inprocess import InProcessBackend
from fleetexec.cli import main
from fleetexec.inventory import load_inventory
from fleetexec.ssh import sftp_common
from fleetexec.testing import MockFleet, ScriptedBackend
from fleetexec.testing.sshd import OpenSSHServer, addresses, require_sshd
from fleetexec.transfer import (
    Transfer,
    check_remote_name,
    get_transfer,
    put_transfer,
    summary,
)

# ---- units: no sshd -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", ".", "..", "../etc", "a/b", "/abs", "x\x00y"])
def test_a_remote_name_that_would_leave_its_directory_is_refused(name):
    with pytest.raises(ValueError, match="unsafe name"):
        check_remote_name(name)


def test_a_remote_name_keeps_its_text_but_not_its_control_characters():
    assert check_remote_name("app.conf") == "app.conf"
    assert check_remote_name("..hidden") == "..hidden"
    assert check_remote_name("a\x1b[31mred\x07\x9b") == "a?[31mred??"
    assert check_remote_name("naïve ünïcode") == "naïve ünïcode"


def test_transfers_are_checked_locally_before_anything_connects(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="No such file"):
        put_transfer([tmp_path / "missing"], "/tmp/")
    with pytest.raises(ConfigError, match="is a directory .use -r"):
        put_transfer([tmp_path / "dir"], "/tmp/")
    with pytest.raises(ConfigError, match="same name"):
        put_transfer([tmp_path / "f", tmp_path / "dir" / ".." / "f"], "/tmp/")
    with pytest.raises(ConfigError, match="not a directory"):
        get_transfer("/etc/hosts", tmp_path / "f")
    with pytest.raises(ConfigError, match="does not exist"):
        get_transfer("/etc/hosts", tmp_path / "no" / "such")
    with pytest.raises(ConfigError, match="get takes one remote path"):
        Transfer("get", ("/a", "/b"), str(tmp_path))
    put = put_transfer(os.path.relpath(tmp_path / "f"), "/tmp/", checksum=True)
    assert put.sources == (str(tmp_path / "f"),)  # absolute: workers run from /
    assert put.describe() == f"put --checksum {tmp_path / 'f'} -> /tmp/"


def test_the_summary_line_gives_files_bytes_seconds_and_throughput():
    assert summary("put", 3, 30 * 2**20, 1.2) == "put 3 files, 30.0 MiB in 1.20s, 25.0 MiB/s"
    assert summary("get", 1, 10, 0.5, skipped=2, checksum=True) == (
        "get 1 file, 10 B in 0.50s, 20 B/s, 2 skipped, sha256 verified")


def test_backends_that_cannot_transfer_refuse_instead_of_running_a_command(tmp_path):
    (tmp_path / "f").write_text("x")
    backend = ScriptedBackend({})
    with FleetSession(["web1"], backend=backend) as fleet, \
            pytest.raises(ConfigError, match="does not do file transfers"):
        fleet.put([tmp_path / "f"], "/tmp/")
    assert backend.commands == []
    with FleetSession(["web1"], backend=backend, sudo=True) as fleet, \
            pytest.raises(ConfigError, match="sudo"):
        fleet.put([tmp_path / "f"], "/tmp/")


def test_the_mock_fleet_has_no_sftp_and_a_transfer_says_so(tmp_path):
    # MockFleet leaves out mockssh's SFTP subsystem on purpose (it would serve this
    # machine's real files): a transfer there is a clean protocol_error, exit 3.
    (tmp_path / "f").write_text("x")
    with MockFleet(2) as fleet:
        hosts = load_inventory(fleet.inventory_path).select()
        with FleetSession(hosts, system_known_hosts=False) as session:
            result = session.put([tmp_path / "f"], "/tmp/")
    assert {r.status for r in result.values()} == {Status.PROTOCOL_ERROR}
    assert "refused the SFTP subsystem" in (result["host1"].error or "")
    assert result.exit_code == 3


# ---- against a real sshd --------------------------------------------------------------------


def _fleet(sshd: OpenSSHServer, tmp_path: Path, count: int, first: str) -> list[Host]:
    addrs = addresses(count, base=first)
    known = tmp_path / f"known_hosts-{first}"
    sshd.write_known_hosts(known, addrs)
    return [Host(f"h{i}", address=a, port=sshd.port, user=sshd.user,
                 key_files=(str(sshd.client_key_path),), known_hosts_file=str(known))
            for i, a in enumerate(addrs, 1)]


OPTS = {"system_known_hosts": False, "connect_timeout": 10.0, "command_timeout": 30.0}


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def _source_tree(root: Path) -> Path:
    src = root / "app"
    (src / "conf" / "deep").mkdir(parents=True)
    (src / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (src / "conf" / "app.conf").write_bytes(b"port = 80\n")
    (src / "conf" / "deep" / "blob.bin").write_bytes(os.urandom(300_000))
    (src / "empty").write_bytes(b"")
    (src / "link-to-file").symlink_to("run.sh")  # copied as the file it points to
    (src / "link-to-dir").symlink_to("conf")  # skipped: never followed into
    (src / "dangling").symlink_to("nowhere")  # skipped
    os.mkfifo(src / "fifo")  # skipped
    return src


def test_put_and_get_directories_recursively_through_worker_processes(sshd, tmp_path):
    src = _source_tree(tmp_path)
    remote = tmp_path / "remote"
    remote.mkdir()
    hosts = _fleet(sshd, tmp_path, 2, "127.0.8.1")
    with FleetSession(hosts, **OPTS) as fleet:  # the default ProcessBackend
        put = fleet.put([src], f"{remote}/", recursive=True, checksum=True)
        assert put.ok, {n: r.error for n, r in put.items()}
        text = put["h1"].stdout_text
        assert re.fullmatch(r"put 5 files, 293\.0 KiB in \d+\.\d\ds, [\d.]+ [KM]iB/s, "
                            r"3 skipped, sha256 verified\n", text), text
        assert put["h1"].exit_code is None
        copied = _tree(remote / "app")
        assert copied == {
            "conf": None, "conf/app.conf": b"port = 80\n", "conf/deep": None,
            "conf/deep/blob.bin": (src / "conf/deep/blob.bin").read_bytes(),
            "empty": b"", "link-to-file": b"#!/bin/sh\necho hi\n",
            "run.sh": b"#!/bin/sh\necho hi\n"}
        assert not (remote / "app" / "link-to-file").is_symlink()
        assert not list(remote.rglob("*.part"))  # every temporary name was renamed

        got = fleet.get(str(remote / "app"), tmp_path / "out", recursive=True, checksum=True)
        assert got.ok, {n: r.error for n, r in got.items()}
        assert got["h2"].stdout_text.startswith("get 5 files, 293.0 KiB in ")
        for name in ("h1", "h2"):
            assert _tree(tmp_path / "out" / name / "app") == copied
        assert not list((tmp_path / "out").rglob("*.part"))

        one = fleet.get(str(remote / "app" / "run.sh"), tmp_path / "one")
        assert one.ok
        assert (tmp_path / "one" / "h1" / "run.sh").read_bytes() == b"#!/bin/sh\necho hi\n"
        # A directory without -r, several sources into a non-directory: failed, named.
        nodir = fleet.get(str(remote / "app"), tmp_path / "two")
        assert nodir["h1"].status is Status.FAILED
        assert nodir["h1"].error == f"get {remote}/app: is a directory (use -r)"
        several = fleet.put([src / "run.sh", src / "empty"], f"{remote}/app/run.sh")
        assert several["h1"].error == (f"put {remote}/app/run.sh: not a directory "
                                       "(several sources need a directory)")
        missing = fleet.put([src / "run.sh"], f"{remote}/nowhere/")
        assert missing["h1"].error == f"put {remote}/nowhere/: no such directory"
        assert missing.exit_code == 1


def test_preserve_keeps_modes_and_mtimes_both_ways_and_plain_copies_do_not(sshd, tmp_path):
    src = tmp_path / "script.sh"
    src.write_bytes(b"#!/bin/sh\n")
    src.chmod(0o741)
    os.utime(src, (1_600_000_000, 1_500_000_000))
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_bytes(b"f")
    tree.chmod(0o710)
    os.utime(tree, (1_600_000_000, 1_400_000_000))
    remote = tmp_path / "remote"
    remote.mkdir()
    hosts = _fleet(sshd, tmp_path, 1, "127.0.8.10")
    with FleetSession(hosts, backend=InProcessBackend(), **OPTS) as fleet:
        assert fleet.put([src, tree], f"{remote}/", recursive=True, preserve=True).ok
        info = (remote / "script.sh").stat()
        assert stat.S_IMODE(info.st_mode) == 0o741 and info.st_mtime == 1_500_000_000
        info = (remote / "tree").stat()
        assert stat.S_IMODE(info.st_mode) == 0o710 and info.st_mtime == 1_400_000_000

        assert fleet.get(str(remote / "script.sh"), tmp_path / "back", preserve=True).ok
        info = (tmp_path / "back" / "h1" / "script.sh").stat()
        assert stat.S_IMODE(info.st_mode) == 0o741 and info.st_mtime == 1_500_000_000
        assert fleet.get(str(remote / "tree"), tmp_path / "back", recursive=True,
                         preserve=True).ok
        info = (tmp_path / "back" / "h1" / "tree").stat()
        assert stat.S_IMODE(info.st_mode) == 0o710 and info.st_mtime == 1_400_000_000

        # Without --preserve: a new file gets the source's bits less group/other write,
        # a replaced one keeps its mode; mtimes are now.
        (remote / "script.sh").chmod(0o600)
        src.chmod(0o777)
        assert fleet.put([src], f"{remote}/script.sh").ok
        assert stat.S_IMODE((remote / "script.sh").stat().st_mode) == 0o600
        assert fleet.put([src], f"{remote}/new.sh").ok
        info = (remote / "new.sh").stat()
        assert stat.S_IMODE(info.st_mode) == 0o755 and info.st_mtime > 1_600_000_000


def test_checksum_passes_and_a_corrupted_copy_never_lands_under_the_real_name(
        sshd, tmp_path, monkeypatch):
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(100_000))
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "data.bin").write_bytes(b"old")
    hosts = _fleet(sshd, tmp_path, 1, "127.0.8.20")
    with FleetSession(hosts, backend=InProcessBackend(), **OPTS) as fleet:
        good = fleet.put([src], f"{remote}/", checksum=True)
        assert good.ok and good["h1"].stdout_text.rstrip().endswith("sha256 verified")
        assert (remote / "data.bin").read_bytes() == src.read_bytes()
        (remote / "data.bin").write_bytes(b"old")

        real = sftp_common.Mover._sha256

        def corrupting(self, path):  # the file changes on the host after the size check
            Path(path).write_bytes(b"X" * 100_000)
            return real(self, path)

        monkeypatch.setattr(sftp_common.Mover, "_sha256", corrupting)
        bad = fleet.put([src], f"{remote}/", checksum=True)
        assert bad["h1"].status is Status.FAILED and bad["h1"].exit_code is None
        assert bad["h1"].error == (f"put {remote}/data.bin: checksum mismatch: the host's "
                                   "SHA-256 of the transferred file differs from the local file's")
        assert (remote / "data.bin").read_bytes() == b"old"
        assert sorted(p.name for p in remote.iterdir()) == ["data.bin"]  # temp removed

        bad_get = fleet.get(str(remote / "data.bin"), tmp_path / "out", checksum=True)
        assert bad_get["h1"].status is Status.FAILED
        assert "checksum mismatch" in (bad_get["h1"].error or "")
        assert list((tmp_path / "out" / "h1").iterdir()) == []  # nothing local, no temp


def test_remote_paths_are_data_never_shell(sshd, tmp_path):
    hostile = "x; touch PWNED; echo $(id) `id` 'q\" -n"
    src = tmp_path / "f"
    src.write_bytes(b"data")
    remote = tmp_path / "remote"
    remote.mkdir()
    hosts = _fleet(sshd, tmp_path, 1, "127.0.8.25")
    with FleetSession(hosts, backend=InProcessBackend(), **OPTS) as fleet:
        assert fleet.put([src], f"{remote}/{hostile}", checksum=True).ok
        assert fleet.get(f"{remote}/{hostile}", tmp_path / "out", checksum=True).ok
    assert (remote / hostile).read_bytes() == b"data"
    assert (tmp_path / "out" / "h1" / hostile).read_bytes() == b"data"
    assert not any(p.name == "PWNED" for p in Path(os.environ["HOME"]).rglob("*"))
    assert not (Path("/") / "PWNED").exists()


def test_a_transfer_cut_by_the_deadline_leaves_no_half_file_under_the_real_name(
        sshd, tmp_path):
    big = tmp_path / "big"
    with big.open("wb") as file:  # sparse: costs no disk here, seconds on the wire
        file.truncate(2 * 1024**3)
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "big").write_bytes(b"old")
    hosts = _fleet(sshd, tmp_path, 1, "127.0.8.30")
    try:
        with FleetSession(hosts, backend=InProcessBackend(),
                          **{**OPTS, "command_timeout": 0.5}) as fleet:
            cut = fleet.put([big], f"{remote}/")
        result = cut["h1"]
        assert result.status is Status.TIMEOUT and cut.exit_code == 4
        assert result.error == ("put did not finish within 0.5s (no file done; a partial "
                                ".fleetexec-*.part file may remain)")
        assert (remote / "big").read_bytes() == b"old"  # the real name is untouched
        leftovers = [p for p in remote.iterdir() if p.name != "big"]
        assert all(p.name.startswith(".big.fleetexec-") and p.name.endswith(".part")
                   for p in leftovers)
        assert all(p.stat().st_size < big.stat().st_size for p in leftovers)
    finally:
        for p in remote.iterdir():
            p.unlink()
    with (remote / "big").open("wb") as file:  # sparse on the "host" too
        file.truncate(2 * 1024**3)
    with FleetSession(hosts, backend=InProcessBackend(),
                      **{**OPTS, "command_timeout": 0.5}) as fleet:
        cut = fleet.get(str(remote / "big"), tmp_path / "out")
    assert cut["h1"].status is Status.TIMEOUT
    assert list((tmp_path / "out" / "h1").iterdir()) == []  # no file, no temporary


def test_get_refuses_to_overwrite_and_never_follows_a_planted_symlink(sshd, tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "motd").write_bytes(b"new\n")
    out = tmp_path / "out"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "motd").write_bytes(b"precious\n")
    hosts = _fleet(sshd, tmp_path, 3, "127.0.8.40")
    (out / "h1").mkdir(parents=True)
    (out / "h1" / "motd").write_bytes(b"mine\n")  # an existing local file
    (out / "h2").mkdir()
    (out / "h2" / "motd").symlink_to(victim / "motd")  # a planted file symlink
    (out / "h3").symlink_to(victim)  # a planted directory symlink
    with FleetSession(hosts, backend=InProcessBackend(), **OPTS) as fleet:
        first = fleet.get(str(remote / "motd"), out)
        assert first["h1"].error == f"get: {out}/h1/motd exists (use --force to replace it)"
        assert first["h2"].error == f"get: {out}/h2/motd exists (use --force to replace it)"
        assert first["h3"].error == (f"get: {out}/h3 exists and is not a directory (a symlink "
                                     "is never followed)")
        assert first.exit_code == 1
        assert (out / "h1" / "motd").read_bytes() == b"mine\n"
        forced = fleet.get(str(remote / "motd"), out, force=True)
        assert forced["h1"].ok and forced["h2"].ok and not forced["h3"].ok
    assert (out / "h1" / "motd").read_bytes() == b"new\n"
    assert not (out / "h2" / "motd").is_symlink()  # replaced, not followed
    assert (out / "h2" / "motd").read_bytes() == b"new\n"
    assert (victim / "motd").read_bytes() == b"precious\n"
    assert sorted(p.name for p in victim.iterdir()) == ["motd"]
    assert not list(out.rglob("*.part"))


def test_put_and_get_reuse_a_session_s_kept_connections(sshd, tmp_path):
    (tmp_path / "f").write_bytes(b"f")
    hosts = _fleet(sshd, tmp_path, 2, "127.0.8.50")
    with FleetSession(hosts, **OPTS) as fleet:
        before = fleet.run("echo $SSH_CONNECTION")
        assert fleet.put([tmp_path / "f"], str(tmp_path / "g")).ok
        assert fleet.get(str(tmp_path / "g"), tmp_path / "out").ok
        after = fleet.run("echo $SSH_CONNECTION")
    assert {n: r.stdout for n, r in before.items()} == {n: r.stdout for n, r in after.items()}


@pytest.fixture(scope="module")
def read_only_sshd() -> Iterator[OpenSSHServer]:
    """An sshd whose host 127.0.9.2 gets a read-only SFTP server (all others read-write)."""
    require_sshd()
    with OpenSSHServer(extra_config=["Match LocalAddress 127.0.9.2",
                                     "ForceCommand internal-sftp -R"]) as server:
        yield server


def test_a_permission_error_fails_that_host_alone_and_names_the_path(read_only_sshd, tmp_path):
    src = tmp_path / "app.conf"
    src.write_bytes(b"conf")
    remote = tmp_path / "remote"
    remote.mkdir()
    hosts = _fleet(read_only_sshd, tmp_path, 3, "127.0.9.1")
    with FleetSession(hosts, **OPTS) as fleet:
        result = fleet.put([src], f"{remote}/")
    assert [result[n].status for n in ("h1", "h2", "h3")] == [Status.OK, Status.FAILED,
                                                              Status.OK]
    assert result["h2"].error == f"put {remote}/app.conf: permission denied"
    assert result["h2"].exit_code is None and result["h2"].stdout == b""
    assert result.exit_code == 1
    assert (remote / "app.conf").read_bytes() == b"conf"


def test_cli_put_and_get_across_an_inventory(sshd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inventory = sshd.write_inventory(tmp_path / "inv.yaml", addresses(2, base="127.0.8.60"))
    Path("app.conf").write_bytes(b"port = 80\n")
    remote = tmp_path / "remote"
    remote.mkdir()
    runner = CliRunner()
    common = ["-i", str(inventory), "--no-system-known-hosts", "--no-save"]
    put = runner.invoke(main, ["put", *common, "--checksum", "app.conf", f"{remote}/"])
    assert put.exit_code == 0, put.output
    assert "put 1 file, 10 B in " in put.output and "2 hosts: 2 ok" in put.output
    assert (remote / "app.conf").read_bytes() == b"port = 80\n"

    get = runner.invoke(main, ["get", *common, f"{remote}/app.conf", "confs"])
    assert get.exit_code == 0, get.output
    assert (tmp_path / "confs" / "h2" / "app.conf").read_bytes() == b"port = 80\n"
    again = runner.invoke(main, ["get", *common, "-o", "json", f"{remote}/app.conf", "confs"])
    assert again.exit_code == 1
    assert "exists (use --force to replace it)" in again.output

    for args, words in [
        (["put", *common, "app.conf"], "put needs LOCAL... REMOTE"),
        (["put", *common, "missing.conf", "/tmp/"], "missing.conf: No such file"),
        (["put", *common, ".", "/tmp/"], "is a directory (use -r"),
    ]:
        refused = runner.invoke(main, args)
        assert refused.exit_code == 2 and words in refused.output, refused.output


def _sshd_sessions(sshd: OpenSSHServer) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{sshd.pid}/task").glob("*/children"):
        found.update(int(x) for x in task.read_text().split())
    return found


def test_a_connection_lost_mid_transfer_is_connection_lost_and_leaves_the_real_name(
        sshd, tmp_path):
    big = tmp_path / "big"
    with big.open("wb") as file:
        file.truncate(2 * 1024**3)
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "big").write_bytes(b"old")
    hosts = _fleet(sshd, tmp_path, 1, "127.0.8.70")
    before = _sshd_sessions(sshd)

    def kill_the_session(result_seen: list[bool]) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not result_seen:
            fresh = _sshd_sessions(sshd) - before
            if fresh and any(p.name.startswith(".big.") for p in remote.iterdir()):
                for pid in fresh:  # our connection's sshd processes, nobody else's
                    os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.02)

    done: list[bool] = []
    killer = threading.Thread(target=kill_the_session, args=(done,))
    killer.start()
    try:
        with FleetSession(hosts, backend=InProcessBackend(), **OPTS) as fleet:
            result = fleet.put([big], f"{remote}/")["h1"]
    finally:
        done.append(True)
        killer.join()
        leftovers = sorted(p.name for p in remote.iterdir())
        for p in remote.iterdir():
            if p.name != "big":
                p.unlink()
    assert result.status is Status.CONNECTION_LOST, result
    assert result.error == ("connection lost during the put (no file done; a partial "
                            ".fleetexec-*.part file may remain)")
    assert (remote / "big").read_bytes() == b"old"
    assert "big" in leftovers and all(n == "big" or n.endswith(".part") for n in leftovers)


def test_a_write_finding_the_connection_dead_first_is_connection_lost() -> None:
    # Under load the session's write can fail (EOFError) before the transport's own thread
    # has seen the connection end; that is still a lost connection, not a failed put.
    from fleetexec.ssh.transfer import _Attempt

    class StillActive:
        def is_active(self) -> bool:
            return True

    attempt = _Attempt(Host("h1"), Transfer("put", ("f",), "/tmp/"), None,  # type: ignore[arg-type]
                       0.0, time.monotonic())
    result = attempt._failed(EOFError(), StillActive(), None, 0.0)  # type: ignore[arg-type]
    assert result.status is Status.CONNECTION_LOST, result
