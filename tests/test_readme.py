"""The README's promises: its two opening commands, CI running the second, the example test."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
pytestmark = pytest.mark.timeout(120)


def opening_commands() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert block, "the README opens with a sh block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_the_demo_and_the_test_command():
    assert README.index("```sh") < README.index("##")  # before any section
    demo, tests = opening_commands()
    assert demo.endswith("fleetexec demo") and tests.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text()
    assert opening_commands()[1] in ci
    assert "FLEETEXEC_REQUIRE_SSHD=1" in ci and "apt-get install -y openssh-server" in ci


def test_the_readme_example_test_passes_in_a_fresh_project(tmp_path: Path):
    example = re.search(r"```python\n(# test_deploy\.py.*?)```", README, re.S)
    assert example
    (tmp_path / "test_deploy.py").write_text(example.group(1))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "test_deploy.py"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_the_demo_runs_the_real_pipeline_and_cleans_up():
    done = subprocess.run([sys.executable, "-m", "fleetexec", "demo", "-n", "3"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "3 hosts: 3 ok" in done.stdout
    inventory = re.search(r"inventory (\S+):", done.stderr)
    assert inventory and not Path(inventory.group(1)).exists()
