"""Client CPU per host of two fleetexec trees, A/B in alternating processes (same sshd setup).

    git archive HEAD~1 | tar -x -C /tmp/base     # the "before" tree
    python bench/ab_client.py --base /tmp/base/src --pairs 8 --n 200
    python bench/ab_client.py --base src --after-args '--switch-interval 0.05'   # an option

Each pair runs `profile_client.py --no-profile --runs 1` once with the base tree's `src`
first on PYTHONPATH and once with this tree's (order alternating from pair to pair, so a
drift in the machine's load hits both), in-process backend, `true` on N loopback hosts, one
real sshd per process. Prints each run, the medians and the median of the paired differences
(after − before): the figure to quote on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TREE = HERE.parent / "src"


def one(src: Path, n: int, extra: list[str]) -> dict[str, float]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = {**os.environ, "PYTHONPATH": str(src)}
        subprocess.run([sys.executable, str(HERE / "profile_client.py"), "--n", str(n), "--runs",
                        "1", "--no-profile", "--json", out.name, *extra], check=True, env=env,
                       stdout=subprocess.DEVNULL, cwd=HERE)
        run: dict[str, float] = json.loads(Path(out.name).read_text())[0]
        return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, type=Path, help="the 'before' tree's src dir")
    parser.add_argument("--after", type=Path, default=TREE,
                        help="the 'after' tree's src dir (default: this tree's)")
    parser.add_argument("--before-args", default="", help="more profile_client.py arguments")
    parser.add_argument("--after-args", default="", help="more profile_client.py arguments")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    trees = {"before": args.base.resolve(), "after": args.after.resolve()}
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    print("| pair | variant | client CPU ms/host | user | sys | vol. cs/host | sshd ms/conn "
          "| load |")
    print("|---|---|---|---|---|---|---|---|")
    for pair in range(args.pairs):
        order = ["before", "after"] if pair % 2 == 0 else ["after", "before"]
        for variant in order:
            extra = (args.before_args if variant == "before" else args.after_args).split()
            r = one(trees[variant], args.n, extra)
            runs[variant].append(r)
            print(f"| {pair + 1} | {variant} | {r['client_ms']:.2f} | {r['user_ms']:.2f} | "
                  f"{r['sys_ms']:.2f} | {r['voluntary_cs']:.0f} | {r['sshd_ms']:.2f} | "
                  f"{r['load']:.1f} |", flush=True)
    med = {v: statistics.median(r["client_ms"] for r in rs) for v, rs in runs.items()}
    diffs = [a["client_ms"] - b["client_ms"] for a, b in zip(runs["after"], runs["before"],
                                                               strict=True)]
    print(f"\nclient CPU ms/host, median of {args.pairs}: before {med['before']:.2f}, after "
          f"{med['after']:.2f}; paired difference after − before: median "
          f"{statistics.median(diffs):+.2f} (pairs: "
          + ", ".join(f"{d:+.2f}" for d in diffs) + ")")
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


if __name__ == "__main__":
    main()
