"""Start-up time of `fleetexec --help` and `fleetexec hosts`, against `import paramiko` and Fabric.

The issue's target is 150 ms; `import paramiko` alone costs about that, so it
is the yardstick (measured here, in the same run), and Fabric's `fab --help`
is the peer CLI built on paramiko. Prints medians of repeated runs and ratios.

    python bench/startup.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(argv: list[str], repeats: int) -> tuple[float, float, float]:
    """Median, min and max wall seconds of running `argv` to completion."""
    samples = []
    for _ in range(repeats):
        begin = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        samples.append(time.perf_counter() - begin)
    return statistics.median(samples), min(samples), max(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    inventory = str(ROOT / "inventory.example.yaml")
    cases = {
        "fleetexec --help": [sys.executable, "-m", "fleetexec", "--help"],
        "fleetexec hosts -i inventory.example.yaml": [sys.executable, "-m", "fleetexec", "hosts",
                                                      "-i", inventory],
        "python -c 'import paramiko'": [sys.executable, "-c", "import paramiko"],
        "python -c pass": [sys.executable, "-c", "pass"],
    }
    if shutil.which("fab"):
        cases["fab --help (Fabric)"] = ["fab", "--help"]
    results = {name: timed(argv, args.repeats) for name, argv in cases.items()}
    yardstick = results["python -c 'import paramiko'"][0]
    print("| command | median ms [min-max] | ratio to `import paramiko` |")
    print("|---|---|---|")
    for name, (median, low, high) in results.items():
        print(f"| `{name}` | {median * 1000:.0f} [{low * 1000:.0f}-{high * 1000:.0f}] "
              f"| {median / yardstick:.2f} |")


if __name__ == "__main__":
    main()
