"""fleetexec's ranges against ClusterShell's own test vectors (../shared/conformance/nodeset/).

The corpus is other projects' data and stays outside the repository: these tests
read it where it lies and skip when it is absent. `bench/conformance_nodeset.py`
prints the same figures.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT.parent / "shared" / "conformance" / "nodeset" / "clustershell-upstream-vectors.json"

pytestmark = pytest.mark.skipif(
    not VECTORS.exists(), reason=f"no ClusterShell conformance vectors at {VECTORS}")


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("conformance_nodeset",
                                                  ROOT / "bench" / "conformance_nodeset.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return _bench()


@pytest.fixture(scope="module")
def cases(bench: ModuleType) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = bench.load(VECTORS)
    assert len(cases) == 724
    return cases


@pytest.fixture(scope="module")
def report(bench: ModuleType, cases: list[dict[str, Any]]) -> Any:
    """(expand counts, fold counts, notes, kind by case id): one pass over the corpus."""
    return bench.run(cases)


def test_never_different_hosts_and_never_accepting_what_clustershell_refuses(
    report: Any
) -> None:
    expanded, _, notes, _ = report
    assert expanded["DIFFERENT HOSTS"] == 0, [n for n in notes if n.startswith("DIFF")]
    assert expanded["accepted here only"] == 0, [n for n in notes if n.startswith("accepted")]
    assert expanded["both refuse"] == 120  # every ClusterShell error is an error here too
    assert expanded["same hosts"] + expanded["both refuse"] >= 708  # 97.8%


def test_what_only_fleetexec_refuses_is_negative_or_over_100000_names(
    report: Any, cases: list[dict[str, Any]]
) -> None:
    refused = [c for c in cases if report[3][c["id"]] == "refused here only"]
    for case in refused:
        negative = re.search(r"[\[,]\s*-\d", case["ref_pattern"])
        assert negative or case["expect"]["count"] > 100_000, case["ref_pattern"]
    assert len(refused) <= 16


def test_folds_expand_back_and_are_as_compact_as_nodeset(report: Any) -> None:
    _, folded, notes, _ = report
    assert folded["expands back to the same hosts"] == folded["folded"], notes
    assert folded["no longer than nodeset -f"] == folded["folded"], notes
    assert folded["identical to nodeset -f"] >= 580  # of 588; the rest differ in order only


def test_the_bench_script_prints_the_figures(bench: ModuleType, cases: list[dict[str, Any]],
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(bench, "load", lambda: cases[:40])
    monkeypatch.setattr("sys.argv", ["conformance_nodeset.py"])
    assert bench.main() == 0
    out = capsys.readouterr().out
    assert "agreement" in out and "DIFFERENT HOSTS           0" in out
