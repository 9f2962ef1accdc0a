"""Saved runs: `fleetexec last`, `run --rerun`, and the records behind them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fleetexec import ConfigError, Host, Status, history
from fleetexec.results import FleetResult, HostResult, exit_code_for
from fleetexec.testing import Fault, MockHost, Reply

pytestmark = pytest.mark.timeout(90)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def fleet_result(*results: HostResult, wall_time: float = 1.5) -> FleetResult:
    return FleetResult({r.host: r for r in results}, wall_time=wall_time)


def hosts_for(result: FleetResult) -> list[Host]:
    return [Host(name, address=f"10.0.0.{i}", port=2200 + i, user="deploy",
                 key_files=("/keys/id_ed25519",), connect_timeout=5.0, command_timeout=30.0,
                 known_hosts_file="/kh/known_hosts", groups=("web",),
                 explicit=frozenset({"port"}))
            for i, name in enumerate(result, 1)]


EVERY_STATUS = fleet_result(*[
    HostResult(f"h-{status.value.replace('_', '-')}", status,
               0 if status is Status.OK else (1 if status is Status.FAILED else None),
               signal="KILL" if status is Status.KILLED else None,
               stdout=b"same\n", error=None if status is Status.OK else "why")
    for status in Status
])


# --- where and how runs are saved -----------------------------------------------------

def test_runs_dir_follows_xdg_state_home_when_absolute() -> None:
    assert history.runs_dir({"XDG_STATE_HOME": "/s", "HOME": "/h"}) == Path(
        "/s/fleetexec/runs")
    assert history.runs_dir({"XDG_STATE_HOME": "rel/s", "HOME": "/h"}) == Path(
        "/h/.local/state/fleetexec/runs")
    assert history.runs_dir({"HOME": "/h"}) == Path("/h/.local/state/fleetexec/runs")


def test_default_location_is_created_0700_and_files_are_0600(isolated_home: Path) -> None:
    path = history.save(EVERY_STATUS, hosts_for(EVERY_STATUS), "uptime")
    runs = isolated_home / ".local" / "state" / "fleetexec" / "runs"
    assert path.parent == runs
    assert mode(runs) == 0o700 and mode(runs.parent) == 0o700 and mode(path) == 0o600
    assert [p.name for p in runs.iterdir()] == [path.name]  # no temporary file left


def test_a_loose_runs_dir_is_tightened_and_a_symlink_refused(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    history.save(EVERY_STATUS, hosts_for(EVERY_STATUS), "true", directory=loose)
    assert mode(loose) == 0o700
    (tmp_path / "link").symlink_to(loose, target_is_directory=True)
    with pytest.raises(ConfigError, match="symlink"):
        history.save(EVERY_STATUS, hosts_for(EVERY_STATUS), "true", directory=tmp_path / "link")


def test_a_run_round_trips_exactly(tmp_path: Path) -> None:
    result = fleet_result(
        HostResult("web1", Status.OK, 0, stdout=b"ok\n", stderr=b"", started=1.25,
                   duration=0.5),
        HostResult("web2", Status.KILLED, signal="TERM", stdout=b"\xff\xfe raw \x1b[2J",
                   stderr="ünïcode\n".encode(), stdout_truncated=True, started=2.0,
                   duration=1.0, error="killed by signal TERM"),
        HostResult("web3", Status.UNREACHABLE, error="connection refused"),
        wall_time=3.25)
    hosts = hosts_for(result)
    path = history.save(result, hosts, "df -h /", known_hosts=["/kh/extra"], directory=tmp_path)
    record = history.load(path)
    assert record.command == "df -h /" and record.path == str(path)
    assert dict(record.result) == dict(result)
    assert record.result.wall_time == 3.25 and not record.result.interrupted
    assert list(record.hosts) == hosts
    assert [h.groups for h in record.hosts] == [("web",)] * 3
    assert [h.explicit for h in record.hosts] == [frozenset({"port"})] * 3
    assert record.known_hosts == ("/kh/extra",)
    assert "3 hosts: df -h /" in record.describe()


def test_identical_outputs_are_stored_once(tmp_path: Path) -> None:
    big = b"x" * 60_000 + b"\n"  # under SAVED_OUTPUT: kept whole
    result = fleet_result(*[HostResult(f"h{i}", Status.OK, 0, stdout=big) for i in range(50)])
    path = history.save(result, [Host(n) for n in result], "cat big", directory=tmp_path)
    assert path.stat().st_size < 2 * len(big)
    assert history.load(path).result["h49"].stdout == big


def test_only_the_newest_twenty_are_kept_and_last_is_the_newest(tmp_path: Path) -> None:
    hosts = hosts_for(EVERY_STATUS)
    paths = [history.save(EVERY_STATUS, hosts, f"cmd {i}", directory=tmp_path) for i in range(23)]
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == sorted(p.name for p in paths[3:])
    assert history.load_last(tmp_path).command == "cmd 22"


def test_nothing_saved_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no saved run"):
        history.load_last(tmp_path / "none")


def test_every_host_needs_its_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no connection settings for host 'h-ok'"):
        history.save(EVERY_STATUS, [], "true", directory=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("text", "message"), [
    ("not json", "not a fleetexec run record"),
    ('{"fleetexec_run": 99}', "not a fleetexec run record"),
    ('{"fleetexec_run": 1, "command": "x", "saved": 1, "wall_time": 1, "interrupted": false,'
     ' "outputs": [], "results": [], "hosts": [{"name": "-oProxyCommand=x", "address": "a",'
     ' "port": 22, "user": null, "key_files": [], "connect_timeout": null,'
     ' "command_timeout": null, "known_hosts_file": null}]}', "not a valid host name"),
])
def test_a_bad_record_is_one_config_error_naming_the_file(tmp_path: Path, text: str,
                                                          message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        history.load(path)
    assert str(path) in str(caught.value)


# --- what --rerun selects -------------------------------------------------------------

def test_each_selection_is_exactly_its_statuses(tmp_path: Path) -> None:
    record = history.load(history.save(EVERY_STATUS, hosts_for(EVERY_STATUS), "x",
                                       directory=tmp_path))

    def chosen(which: str) -> set[Status]:
        return {record.result[name].status for name in history.select(record, which)}

    assert chosen("failed") == {s for s in Status if s.ran and s is not Status.OK}
    assert chosen("failed") == {Status.FAILED, Status.KILLED, Status.NO_EXIT_STATUS}
    assert chosen("unreachable") == {s for s in Status if exit_code_for([s]) == 3}
    assert chosen("timeout") == {Status.TIMEOUT}
    assert chosen("not-ok") == set(Status) - {Status.OK}
    assert Status.INTERRUPTED in chosen("not-ok")
    names = history.select(record, "not-ok")
    assert names == [n for n in EVERY_STATUS if n != "h-ok"]  # in the run's order
    with pytest.raises(ConfigError, match="use one of"):
        history.select(record, "ok")


# --- the CLI: rerun and last (mock fleet) ----------------------------------------------

def cli(*args: str, state: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "XDG_STATE_HOME": str(state), **env}
    return subprocess.run([sys.executable, "-m", "fleetexec", *args], capture_output=True,
                          text=True, timeout=60, env=environ)


def hosts_of(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return {h["host"]: h["status"] for h in json.loads(done.stdout)["hosts"]}


@pytest.fixture
def mixed(mock_fleet_factory):
    """host1 ok, host2 fails (exit 3), host3 refuses our key, host4 ok."""
    return mock_fleet_factory([
        MockHost(replies={"check": Reply("fine\n")}),
        MockHost(replies={"check": Reply("bad\n", exit_code=3)}),
        MockHost(fault=Fault.reject_auth()),
        MockHost(replies={"check": Reply("fine\n")}),
    ])


def test_rerun_selects_from_the_last_run_without_the_inventory(mixed, tmp_path: Path):
    state = tmp_path / "state"
    first = cli("run", "-i", str(mixed.inventory_path), "--no-system-known-hosts", "-o", "json",
                "--", "check", state=state)
    assert first.returncode == 3, first.stderr
    runs = state / "fleetexec" / "runs"
    assert mode(runs) == 0o700 and [mode(p) for p in runs.iterdir()] == [0o600]

    failed = cli("run", "--rerun", "failed", "-o", "json", "--", "check", state=state)
    assert failed.returncode == 1, failed.stderr
    assert hosts_of(failed) == {"host2": "failed"}

    # each run is saved: "the last run" is now the rerun, which had nothing unreachable
    nothing = cli("run", "--rerun", "unreachable", "--", "check", state=state)
    assert nothing.returncode == 2 and nothing.stdout == ""
    assert "the last run had no unreachable hosts" in nothing.stderr
    assert "Traceback" not in nothing.stderr

    oldest = min(runs.iterdir())
    unreachable = cli("run", "--rerun", "unreachable", "--from", str(oldest), "-o", "json",
                      "--", "check", state=state)
    assert unreachable.returncode == 3 and hosts_of(unreachable) == {"host3": "auth_failed"}
    everything = cli("run", "--rerun", "not-ok", "--from", str(oldest), "-o", "json", "--",
                     "echo again", state=state)
    assert hosts_of(everything) == {"host2": "ok", "host3": "auth_failed"}


def test_rerun_is_narrowed_by_a_selection(mixed, tmp_path: Path):
    state = tmp_path / "state"
    inventory = str(mixed.inventory_path)
    cli("run", "-i", inventory, "--no-system-known-hosts", "--", "check", state=state)
    narrowed = cli("run", "--rerun", "not-ok", "-H", "host3,host4", "-o", "json", "--no-save",
                   "--", "check", state=state)
    assert hosts_of(narrowed) == {"host3": "auth_failed"}
    excluded = cli("run", "--rerun", "not-ok", "-x", "host3", "-o", "json", "--no-save",
                   "--", "check", state=state)
    assert hosts_of(excluded) == {"host2": "failed"}
    mistyped = cli("run", "--rerun", "not-ok", "-x", "hots3", "--no-save", "--", "check",
                   state=state)
    assert mistyped.returncode == 2 and "-x 'hots3' matches no host" in mistyped.stderr
    by_inventory = cli("run", "--rerun", "not-ok", "-i", inventory, "host2", "-o", "json",
                       "--no-save", "--", "check", state=state)
    assert hosts_of(by_inventory) == {"host2": "failed"}
    empty = cli("run", "--rerun", "failed", "-H", "host1", "--no-save", "--", "check",
                state=state)
    assert empty.returncode == 2 and "none of the failed hosts" in empty.stderr


def test_rerun_usage_errors(tmp_path: Path):
    state = tmp_path / "state"
    none = cli("run", "--rerun", "failed", "--", "true", state=state)
    assert none.returncode == 2 and "no saved run" in none.stderr
    bad = cli("run", "--rerun", "sometimes", "--", "true", state=state)
    assert bad.returncode == 2
    lonely = cli("run", "-H", "web1", "--from", str(tmp_path / "x.json"), "--", "true",
                 state=state)
    assert lonely.returncode == 2 and "--from needs --rerun" in lonely.stderr
    assert "Traceback" not in none.stderr + bad.stderr + lonely.stderr


def test_last_shows_the_run_again_in_every_format(mixed, tmp_path: Path):
    state = tmp_path / "state"
    base = ["run", "-i", str(mixed.inventory_path), "--no-system-known-hosts", "--", "check"]
    original = cli(*base[:-2], "-o", "json", "--", "check", state=state)
    assert original.returncode == 3
    shown = cli("last", "-o", "json", state=state)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == original.stdout  # byte for byte
    assert "4 hosts: check" in shown.stderr
    table = cli("last", state=state)
    assert "4 hosts: 2 ok, 1 failed, 1 auth_failed" in table.stdout
    assert "host2" in table.stdout and "bad" in table.stdout
    diff = cli("last", "-o", "diff", state=state)
    assert "--- host[1,4] (2)\n+++ host2 (1)\n" in diff.stdout and "+  bad" in diff.stdout
    gathered = cli("last", "-o", "gathered", state=state)
    assert "host[1,4] (2)" in gathered.stdout
    lines = cli("last", "-o", "jsonl", state=state)
    assert [json.loads(line)["host"] for line in lines.stdout.splitlines()] == [
        "host1", "host2", "host3", "host4"]
    assert "4 hosts:" in lines.stderr
    nothing = cli("last", state=tmp_path / "empty")
    assert nothing.returncode == 2 and "no saved run" in nothing.stderr


def test_no_save_and_a_failed_save_leave_the_run_alone(mock_fleet, tmp_path: Path):
    inventory = str(mock_fleet.inventory_path)
    state = tmp_path / "state"
    done = cli("run", "-i", inventory, "--no-save", "--", "true", state=state)
    assert done.returncode == 0 and not state.exists()
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    unsaved = cli("run", "-i", inventory, "-o", "json", "--", "true", state=blocker)
    assert unsaved.returncode == 0
    assert json.loads(unsaved.stdout)["summary"]["exit_code"] == 0
    warnings = [line for line in unsaved.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "could not save this run" in warnings[0]


def test_the_record_never_holds_a_secret(mock_fleet, tmp_path: Path):
    state = tmp_path / "state"
    secret = "hunter2-correct-horse"
    done = cli("run", "-i", str(mock_fleet.inventory_path), "--", "true", state=state,
               FLEETEXEC_PASSWORD=secret)
    assert done.returncode == 0, done.stderr
    (record,) = (state / "fleetexec" / "runs").iterdir()
    text = record.read_text()
    assert secret not in text and "password" not in text and "passphrase" not in text
    saved = json.loads(text)["hosts"][0]
    assert set(saved) == {"name", "address", "port", "user", "key_files", "connect_timeout",
                          "command_timeout", "known_hosts_file", "groups", "explicit"}
    assert saved["port"] == mock_fleet["host1"].port and saved["connect_timeout"] == 5


# --- against a real sshd ---------------------------------------------------------------

def test_rerun_failed_and_last_against_real_sshd(sshd, tmp_path: Path):
    inventory = sshd.write_inventory(tmp_path / "inv.yaml", ["127.0.8.1", "127.0.8.2"],
                                     names=["good", "bad"])
    command = 'case "$SSH_CONNECTION" in *" 127.0.8.2 "*) echo no >&2; exit 7;; esac; echo yes'
    state = tmp_path / "state"
    first = cli("run", "-i", str(inventory), "--no-system-known-hosts", "--", command,
                state=state)
    assert first.returncode == 1, first.stderr
    inventory.unlink()  # a rerun needs no inventory
    rerun = cli("run", "--rerun", "failed", "--no-system-known-hosts", "-o", "json", "--",
                "echo fixed", state=state)
    assert rerun.returncode == 0, rerun.stderr
    assert hosts_of(rerun) == {"bad": "ok"}
    shown = cli("last", "-o", "json", state=state)
    assert json.loads(shown.stdout)["hosts"][0]["stdout"] == "fixed\n"


def test_a_record_keeps_a_bounded_share_of_each_output(tmp_path):
    from fleetexec import FleetResult, Host, HostResult, Status
    from fleetexec.history import SAVED_OUTPUT, load, save

    big = b"x" * (SAVED_OUTPUT + 10)
    result = FleetResult({"h1": HostResult("h1", Status.OK, 0, stdout=big)})
    path = save(result, [Host("h1")], "cat big", directory=tmp_path)
    again = load(path)
    shown = again.result["h1"]
    assert shown.stdout == big[:SAVED_OUTPUT] and shown.stdout_truncated and shown.truncated
    assert path.stat().st_size < SAVED_OUTPUT * 2
