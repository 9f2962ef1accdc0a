"""Selection never reaches a host the user did not mean (issue 7).

A term is a host, a group, a glob or a range, and a range is never read as an
fnmatch character class; a term that selects nothing or cannot be parsed is an
`InventoryError` naming it, whether included or excluded (`!x`, `-x x`).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleetexec.exceptions import InventoryError
from fleetexec.inventory import Inventory, parse_inventory

WEB = [f"web{i}" for i in range(1, 13)]  # web1..web12, not zero-padded
INVENTORY = """\
groups:
  web: {hosts: ["web[1-12]"]}
  letters: {hosts: [weba, webb]}
hosts:
  db1:
"""


@pytest.fixture(scope="module")
def inv() -> Inventory:
    return parse_inventory(INVENTORY, "inv.yaml")


def names(inv: Inventory, *patterns: str) -> list[str]:
    return [h.name for h in inv.select(*patterns)]


def error(inv: Inventory, *patterns: str) -> str:
    with pytest.raises(InventoryError) as info:
        inv.select(*patterns)
    return str(info.value)


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        # steps, as ClusterShell and pdsh write them: never an fnmatch class
        (("web*", "!web[1-12/2]"), [f"web{i}" for i in range(2, 13, 2)] + ["weba", "webb"]),
        (("web[1-12/2]",), [f"web{i}" for i in range(1, 13, 2)]),
        (("web,!web[2-12/2]",), [f"web{i}" for i in range(1, 13, 2)]),
        (("web[1-12/5]",), ["web1", "web6", "web11"]),
        # brackets in a glob are a range too: web10*, web11* (a class would add web1, web12)
        (("web[10-11]*",), ["web10", "web11"]),
        (("web[1-2]?",), ["web10", "web11", "web12"]),
        (("web?",), [f"web{i}" for i in range(1, 10)] + ["weba", "webb"]),
        # exclusions may name hosts that do not exist, as long as they name some
        (("web", "!web[10-20]"), [f"web{i}" for i in range(1, 10)]),
    ],
)
def test_select(inv: Inventory, patterns: tuple[str, ...], expected: list[str]) -> None:
    assert names(inv, *patterns) == expected


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        # zero-padded ranges over unpadded hosts: web01 is not web1; was read as a class
        (("web[01-03]",), "inv.yaml: no host or group matches 'web[01-03]'"),
        (("web*", "!web[01-03]"), "inv.yaml: no host or group matches '!web[01-03]'"),
        # a character class is not a range: refused, not matched as weba, webb
        (("web[ab]",), "inv.yaml: bad term 'web[ab]': bad range '[ab]' in 'web[ab]': "
                       "use [1-5], [01-20], [1,3,7-9] or [1-9/2]"),
        (("web*", "!web[ab]"), "inv.yaml: bad term '!web[ab]': bad range '[ab]' in 'web[ab]': "
                               "use [1-5], [01-20], [1,3,7-9] or [1-9/2]"),
        (("web[a-b]*",), "inv.yaml: bad term 'web[a-b]*': bad range '[a-b]' in 'web[a-b]*': "
                         "use [1-5], [01-20], [1,3,7-9] or [1-9/2]"),
        (("!web[1-12/0]",), "inv.yaml: bad term '!web[1-12/0]': bad range '[1-12/0]' in "
                            "'web[1-12/0]': the step must be 1 or more"),
        (("web[1-3",), "inv.yaml: bad term 'web[1-3': unbalanced bracket in 'web[1-3'"),
        (("web[11-13]",), "inv.yaml: 'web[11-13]' names hosts not in the inventory: web13"),
        (("web1[3-4]",), "inv.yaml: no host or group matches 'web1[3-4]'"),  # web13, web14
        (("web[9-14/2]",), "inv.yaml: 'web[9-14/2]' names hosts not in the inventory: web13"),
        (("db9*",), "inv.yaml: no host or group matches 'db9*'"),
        (("!db9*",), "inv.yaml: no host or group matches '!db9*'"),
        (("web[1-3]x*",), "inv.yaml: no host or group matches 'web[1-3]x*'"),
    ],
)
def test_select_errors(inv: Inventory, patterns: tuple[str, ...], message: str) -> None:
    assert error(inv, *patterns) == message


def test_n1_0_20_is_clustershells_n10_to_n120() -> None:
    inv = parse_inventory('groups:\n  n: {hosts: ["n[10-120]"]}\n', "inv.yaml")
    assert names(inv, "n1[0-20]") == [f"n{i}" for i in range(10, 121)]


def test_a_deep_pattern_is_an_error_naming_the_term(inv: Inventory) -> None:
    # Was a RecursionError, one level per bracket group.
    message = error(inv, "h" + "[1]" * 1000)
    assert message.startswith("inv.yaml: bad term 'h[1][1]") and "more than 16 ranges" in message
    assert len(message) < 300
    assert len(error(inv, "nope" * 10_000)) < 200


def test_an_empty_selection_is_named_briefly(inv: Inventory) -> None:
    pattern = ",".join(["web", "!web"] * 10_000)
    assert error(inv, pattern) == f"inv.yaml: the selection {pattern[:80] + '…'!r} leaves no hosts"


def test_a_glob_over_a_huge_range_is_refused(inv: Inventory) -> None:
    assert error(inv, "web[1-5000]*") == (
        "inv.yaml: 'web[1-5000]*' expands to more than 1000 globs")


def test_a_60000_term_selection_is_linear() -> None:
    inv = parse_inventory('groups:\n  h: {hosts: ["h[1-60000]"]}\n', "inv.yaml")
    pattern = ",".join(f"h{i}" for i in range(1, 60_001)) + ",!h[1-59999/2]"
    start = time.perf_counter()
    chosen = inv.select(pattern)
    assert time.perf_counter() - start < 5  # a guard: the old comma split took 9.5 s
    assert len(chosen) == 30_000 and chosen[0].name == "h2"


def test_the_cli_exits_2_naming_the_term(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text(INVENTORY)
    for args, term in [(["web*", "-x", "web[01-03]"], "'!web[01-03]'"),
                       (["web*", "!web[1-12/0]"], "'!web[1-12/0]'"),
                       (["web[ab]"], "'web[ab]'")]:
        done = subprocess.run([sys.executable, "-m", "fleetexec", "hosts", "-i", str(path), *args],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stdout
        assert done.stderr.startswith("fleetexec: error: ") and term in done.stderr
    done = subprocess.run([sys.executable, "-m", "fleetexec", "hosts", "-i", str(path), "web*",
                           "-x", "web[1-12/2]"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("8 hosts")  # web2, web4, ..., web12, weba, webb
