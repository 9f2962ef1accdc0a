"""Static checks that belong to the suite, so CI runs them: ruff (with bandit), mypy strict."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(300)


def test_ruff_with_bandit_rules_is_clean():
    if shutil.which("ruff") is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    done = subprocess.run(["ruff", "check", "src", "tests", "bench"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_strict_on_src_is_clean():
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


FORBIDDEN = re.compile(r"(AutoAddPolicy|WarningPolicy)\s*\(|yaml\.(load|unsafe_load|full_load)\(|"
                       r"Loader=yaml\.(Full|Unsafe)?Loader\b")


def test_no_silent_host_key_acceptance_or_unsafe_yaml_anywhere():
    offenders = []
    for path in [*ROOT.glob("src/**/*.py"), *ROOT.glob("bench/**/*.py"), *ROOT.glob("tests/*.py")]:
        if path.name == "test_static.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if FORBIDDEN.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_each_third_party_library_is_imported_in_one_place():
    # click belongs to the CLI package alone (checked below, by path).
    owners = {"yaml": {"inventory/loader.py", "inventory/parser.py",
                       "ansible/yaml_reader.py"}, "tabulate": {"render/text.py"}}
    for library, allowed in owners.items():
        found = {
            str(path.relative_to(ROOT / "src/fleetexec"))
            for path in ROOT.glob("src/fleetexec/**/*.py")
            if re.search(rf"^\s*(import|from) {library}\b", path.read_text(), re.M)
        }
        assert found <= allowed, (library, found)
    paramiko_users = {
        str(path.relative_to(ROOT / "src/fleetexec"))
        for path in ROOT.glob("src/fleetexec/**/*.py")
        if re.search(r"^\s*(import|from) paramiko\b", path.read_text(), re.M)
    }
    assert all(p.startswith(("ssh/", "testing/")) for p in paramiko_users), paramiko_users
    click_users = {
        str(path.relative_to(ROOT / "src/fleetexec"))
        for path in ROOT.glob("src/fleetexec/**/*.py")
        if re.search(r"^\s*(import|from) click\b", path.read_text(), re.M)
    }
    assert click_users and all(p.startswith("cli/") for p in click_users), click_users
