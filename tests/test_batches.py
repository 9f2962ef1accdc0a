"""Rolling batches: `--batch`, `--max-fail`, `--fail-fast` and the `skipped` status."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import fleetexec
from fleetexec import ConfigError, Options, Status
from fleetexec.testing import MockFleet, MockHost, Reply, ScriptedBackend

pytestmark = pytest.mark.timeout(120)

NAMES = [f"web{i}" for i in range(1, 7)]


def fleet(failing: set[str]) -> ScriptedBackend:
    return ScriptedBackend({name: MockHost(replies={"deploy": Reply(
        exit_code=1 if name in failing else 0)}) for name in NAMES})


def test_batches_run_one_after_another_and_stop_once_max_fail_is_exceeded():
    backend = fleet({"web2"})
    result = fleetexec.run(NAMES, "deploy", backend=backend, batch=2, max_fail=0)
    assert [r.status for r in result.values()] == [
        Status.OK, Status.FAILED, *[Status.SKIPPED] * 4]
    assert [host for host, _ in backend.commands] == ["web1", "web2"]  # never started
    assert "more than the --max-fail limit of 0" in result["web3"].error
    assert list(result.failed) == ["web2"] and len(result.skipped) == 4
    assert result.exit_code == 1  # skipped hosts do not count; the failure does


def test_max_fail_allows_that_many_failures_and_takes_percentages():
    result = fleetexec.run(NAMES, "deploy", backend=fleet({"web1", "web4"}), batch="34%",
                           max_fail=1)  # batches of 3: one failure each, 1 allowed after
    assert [r.status.value for r in result.values()] == [
        "failed", "ok", "ok", "failed", "ok", "ok"]
    result = fleetexec.run(NAMES, "deploy", backend=fleet({"web1", "web4"}), batch=3,
                           max_fail="10%")  # 10% of 6 rounds up to 1: the 2nd batch runs
    assert Status.SKIPPED not in result.counts()


def test_fail_fast_skips_every_batch_after_the_first_failure():
    result = fleetexec.run(NAMES, "deploy", backend=fleet({"web3"}), batch=1, fail_fast=True)
    assert [r.status.value for r in result.values()] == [
        "ok", "ok", "failed", "skipped", "skipped", "skipped"]
    assert "--fail-fast" in result["web6"].error


def test_without_a_batch_everything_starts_at_once():
    result = fleetexec.run(NAMES, "deploy", backend=fleet(set(NAMES)), fail_fast=True)
    assert all(r.status is Status.FAILED for r in result.values())


@pytest.mark.parametrize("bad", [{"batch": 0}, {"batch": "0%"}, {"batch": "150%"},
                                 {"max_fail": -1}, {"max_fail": "x%"}, {"batch": "5"}])
def test_bad_batch_settings_are_refused(bad):
    with pytest.raises(ConfigError):
        Options(**bad)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleetexec", *args], capture_output=True,
                          text=True, timeout=60)


def test_the_cli_reports_skipped_hosts_and_exits_with_the_failures_code():
    specs = [MockHost(replies={"*": Reply(exit_code=2)}), MockHost(), MockHost()]
    with MockFleet(specs) as mock:
        done = cli("run", "-i", str(mock.inventory_path), "--no-system-known-hosts",
                   "--batch", "1", "--fail-fast", "-o", "json", "--", "true")
    assert done.returncode == 1, done.stderr
    statuses = [h["status"] for h in json.loads(done.stdout)["hosts"]]
    assert statuses == ["failed", "skipped", "skipped"]
    bad = cli("run", "-H", "web1", "--batch", "zero", "--", "true")
    assert bad.returncode == 2 and "--batch" in bad.stderr


def test_batches_against_a_real_sshd_start_only_after_the_previous_one_ended(sshd, tmp_path):
    addresses = [f"127.0.14.{i}" for i in range(1, 7)]
    inventory = sshd.write_inventory(tmp_path / "inv.yaml", addresses)
    done = cli("run", "-i", str(inventory), "--no-system-known-hosts", "--batch", "50%",
               "-o", "json", "--", "sleep 0.3")
    assert done.returncode == 0, done.stderr
    hosts = json.loads(done.stdout)["hosts"]
    first, second = hosts[:3], hosts[3:]
    assert min(h["started"] for h in second) >= max(h["started"] + h["duration"]
                                                    for h in first)
