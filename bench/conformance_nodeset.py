"""How far fleetexec's host ranges agree with ClusterShell's own test vectors.

    python bench/conformance_nodeset.py [--verbose]

Reads ../shared/conformance/nodeset/clustershell-upstream-vectors.json (the
724 node-set literals of ClusterShell's test suite with what ClusterShell
1.10.1 expands and folds them to) and prints, for expansion:

- same hosts: fleetexec gives exactly ClusterShell's set
- both refuse: ClusterShell and fleetexec both call it an error
- refused here only: a clear error in fleetexec, a set in ClusterShell (safe)
- accepted here only: a set in fleetexec, an error in ClusterShell
- DIFFERENT HOSTS: both give a set, and the sets differ (must be 0)

and, for folding the cases with the same hosts: identical to `nodeset -f`,
no longer than it, and whether `expand` of the fold gives the set back.
tests/test_nodeset_conformance.py asserts these figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from fleetexec.hostrange import expand, fold, split  # noqa: E402

VECTORS = ROOT.parent / "shared" / "conformance" / "nodeset" / "clustershell-upstream-vectors.json"
EXPAND_KINDS = ("same hosts", "both refuse", "refused here only", "accepted here only",
                "DIFFERENT HOSTS")
FOLD_KINDS = ("folded", "identical to nodeset -f", "no longer than nodeset -f",
              "expands back to the same hosts")


def load(path: Path = VECTORS) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(path.read_text())["cases"]
    return cases


def names_of(pattern: str) -> set[str]:
    """What fleetexec makes of a comma list (an empty term is an error, as in a selection)."""
    names: set[str] = set()
    for term in split(pattern):
        if not term:
            raise ValueError(f"empty term in {pattern!r}")
        names.update(expand(term))
    return names


def _digest(names: set[str]) -> str:
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()


def classify(case: dict[str, Any]) -> tuple[str, set[str] | None]:
    """One of EXPAND_KINDS, and fleetexec's names when it gave some."""
    expect = case["expect"]
    try:
        ours: set[str] | None = names_of(case["ref_pattern"])
    except ValueError:
        ours = None
    if expect["kind"] == "error":
        return ("both refuse" if ours is None else "accepted here only"), ours
    if ours is None:
        return "refused here only", None
    same = len(ours) == expect["count"] and _digest(ours) == expect["sha256"]
    return ("same hosts" if same else "DIFFERENT HOSTS"), ours


def run(cases: list[dict[str, Any]]
        ) -> tuple[Counter[str], Counter[str], list[str], dict[int, str]]:
    """Counts of EXPAND_KINDS and FOLD_KINDS, a note per case that is not the
    same, and each case's kind by its id."""
    expanded: Counter[str] = Counter()
    folded: Counter[str] = Counter()
    notes: list[str] = []
    kinds: dict[int, str] = {}
    for case in cases:
        kind, ours = classify(case)
        expanded[kind] += 1
        kinds[case["id"]] = kind
        if kind != "same hosts":
            notes.append(f"{kind}: {case['ref_pattern']!r} ({case['source']})")
            continue
        assert ours is not None
        mine, theirs = fold(ours), case["expect"]["fold"]
        folded["folded"] += 1
        folded["identical to nodeset -f"] += mine == theirs
        folded["no longer than nodeset -f"] += len(mine) <= len(theirs)
        if names_of(mine) == ours:
            folded["expands back to the same hosts"] += 1
        else:
            notes.append(f"fold does not expand back: {mine!r}")
        if len(mine) > len(theirs):
            notes.append(f"longer fold: {mine!r} vs nodeset -f {theirs!r}")
    return expanded, folded, notes, kinds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--verbose", action="store_true", help="list every case that differs")
    args = parser.parse_args()
    if not VECTORS.exists():
        print(f"no conformance data at {VECTORS}", file=sys.stderr)
        return 2
    cases = load()
    expanded, folded, notes, _ = run(cases)
    print(f"{len(cases)} ClusterShell cases ({sum(c['expect']['kind'] == 'set' for c in cases)} "
          f"sets, {sum(c['expect']['kind'] == 'error' for c in cases)} errors)")
    print("expand:")
    for kind in EXPAND_KINDS:
        print(f"  {kind:<22} {expanded[kind]:>4}")
    agree = expanded["same hosts"] + expanded["both refuse"]
    print(f"  agreement              {agree}/{len(cases)} = {agree / len(cases):.1%}")
    print("fold (cases with the same hosts):")
    for kind in FOLD_KINDS:
        print(f"  {kind:<32} {folded[kind]:>4}")
    if args.verbose:
        print("\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
