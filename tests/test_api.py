"""The public namespace and the result types (pure: no SSH)."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

import fleetexec
from fleetexec import ConfigError, FleetFailure, FleetResult, HostResult, Status
from fleetexec.results import Collector, exit_code_for


def test_public_names_are_pinned_and_sorted():
    assert fleetexec.__all__ == sorted(fleetexec.__all__)
    assert fleetexec.__all__ == [
        "ConfigError", "FleetError", "FleetFailure", "FleetResult", "FleetSession", "Host",
        "HostKeyPolicy", "HostResult", "Inventory", "InventoryError", "Options", "Secret",
        "Status", "load_inventory", "run", "run_one",
    ]


def test_every_public_name_has_a_docstring():
    for name in fleetexec.__all__:
        if name != "HostKeyPolicy":  # a Literal alias has no docstring of its own
            assert getattr(fleetexec, name).__doc__, name


def test_importing_fleetexec_does_not_import_paramiko():
    code = "import sys, fleetexec, fleetexec.cli; print('paramiko' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize(("statuses", "code"), [
    ([], 0),
    ([Status.OK, Status.OK], 0),
    ([Status.OK, Status.FAILED], 1),
    ([Status.KILLED], 1),
    ([Status.NO_EXIT_STATUS], 1),
    ([Status.FAILED, Status.TIMEOUT], 4),
    ([Status.TIMEOUT, Status.UNREACHABLE], 3),
    ([Status.HOSTKEY_CHANGED], 3),
    ([Status.AUTH_FAILED], 3),
    ([Status.PROTOCOL_ERROR], 3),
    ([Status.CONNECTION_LOST], 3),
    ([Status.ERROR], 3),
    ([Status.UNREACHABLE, Status.INTERRUPTED], 130),
])
def test_exit_code_precedence(statuses, code):
    assert exit_code_for(statuses) == code


def result_of(*results: HostResult) -> FleetResult:
    return FleetResult({r.host: r for r in results}, wall_time=1.5)


def test_fleet_result_is_an_ordered_mapping_with_succeeded_and_failed():
    fleet = result_of(HostResult("b", Status.OK, 0), HostResult("a", Status.FAILED, 2),
                      HostResult("c", Status.TIMEOUT))
    assert list(fleet) == ["b", "a", "c"]
    assert list(fleet.succeeded) == ["b"] and list(fleet.failed) == ["a", "c"]
    assert fleet.counts() == {Status.OK: 1, Status.FAILED: 1, Status.TIMEOUT: 1}
    with pytest.raises(FleetFailure, match="2 of 3 hosts did not succeed: a, c"):
        fleet.raise_on_failure()
    assert result_of(HostResult("b", Status.OK, 0)).raise_on_failure().ok


def test_gathered_groups_identical_outcomes_largest_first():
    fleet = result_of(HostResult("x", Status.OK, 0, stdout=b"B"),
                      HostResult("y", Status.OK, 0, stdout=b"A"),
                      HostResult("z", Status.OK, 0, stdout=b"A"))
    assert [(names, r.stdout) for names, r in fleet.gathered()] == [(["y", "z"], b"A"),
                                                                   (["x"], b"B")]


def test_host_results_pickle_round_trip():
    result = HostResult("h", Status.KILLED, signal="KILL", stdout=b"\xff\x00", error="killed")
    assert pickle.loads(pickle.dumps(result)) == result


def test_collector_ignores_duplicates_and_unknown_hosts_and_guards_callbacks(capsys):
    calls = []

    def callback(result):
        calls.append(result.host)
        raise ValueError("user bug")

    collector = Collector(["a", "b"], callback)
    assert collector.add(HostResult("a", Status.OK, 0))
    assert not collector.add(HostResult("a", Status.FAILED, 1))
    assert not collector.add(HostResult("zzz", Status.OK, 0))
    assert collector.add(HostResult("b", Status.OK, 0))
    assert calls == ["a"]  # reported once, then no longer called
    assert "user bug" in capsys.readouterr().err
    assert list(collector.result(1.0)) == ["a", "b"]


def test_collector_keeps_one_copy_of_equal_outputs_small_or_large():
    names = [f"h{i}" for i in range(6)]
    collector = Collector(names)
    large = b"x" * 100_000
    outputs = [b"same\n", b"same\n", bytes(large), bytes(large),
               large[:-1] + b"y", b"x" + large[1:]]  # the last: equal to large
    for name, output in zip(names, outputs, strict=True):
        collector.add(HostResult(name, Status.OK, 0, stdout=output))
    kept = [r.stdout for r in collector.result(1.0).values()]
    assert kept == outputs
    assert kept[0] is kept[1] and kept[2] is kept[3] is kept[5] and kept[4] is not kept[2]


@pytest.mark.parametrize("kwargs", [
    {"command": ""}, {"command": "true", "host_key_policy": "yes"},
    {"command": "true", "command_timeout": -1}, {"command": "true", "connect_timeout": 0},
])
def test_run_refuses_bad_arguments_before_connecting(kwargs):
    with pytest.raises(ConfigError):
        fleetexec.run(["127.0.0.1"], **kwargs)


def test_run_with_no_hosts_returns_an_empty_result():
    assert len(fleetexec.run([], "true")) == 0


def test_secrets_never_show_in_repr_or_json():
    options = fleetexec.Options(password="hunter2", passphrase="sesame")
    assert "hunter2" not in repr(options) and "sesame" not in repr(options)
    assert "hunter2" not in str(options.to_json()) and "sesame" not in str(options.to_json())
    assert pickle.loads(pickle.dumps(options)).password.reveal() == "hunter2"
    assert "hunter2" not in options.fingerprint(b"k")
