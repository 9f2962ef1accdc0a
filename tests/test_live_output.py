"""Live output (`-o stream`, `on_output`) and the progress display."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest

import fleetexec
from fleetexec import FleetSession, load_inventory
from fleetexec.backends import Output
from fleetexec.render import LiveLines
from fleetexec.testing import Fault, MockFleet, MockHost, Reply

pytestmark = pytest.mark.timeout(120)


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleetexec", *args], capture_output=True,
                          text=True, timeout=60, **kwargs)


# ---- the line assembler ------------------------------------------------------------------------


def test_live_lines_are_whole_sanitised_and_a_partial_line_waits_for_its_end():
    lines = LiveLines(width=5)
    assert lines.feed("web1", "stdout", b"one\ntw") == ["web1 : one"]
    assert lines.feed("web2", "stdout", b"other\n") == ["web2 : other"]  # never mixed in
    assert lines.feed("web1", "stdout", b"o\n") == ["web1 : two"]
    assert lines.feed("web1", "stderr", b"\x1b]0;title\x07oops\r\n") == [
        "web1 [err]: \\x1b]0;title\\x07oops"]
    assert lines.feed("web1", "stdout", b"no newline") == []
    assert lines.flush("web1") == ["web1 : no newline"]
    assert lines.flush("web1") == []


def test_host_names_are_coloured_only_when_asked():
    assert "\x1b[" in LiveLines(colour=True).feed("web1", "stdout", b"x\n")[0]
    assert "\x1b[" not in LiveLines().feed("web1", "stdout", b"\x1b[31mx\n")[0]


# ---- through the engine --------------------------------------------------------------------------


def test_output_chunks_come_from_every_worker_before_each_result():
    specs = [MockHost(replies={"go": Reply(f"host{i} says hi\n" * 50, stderr=b"warn\n")})
             for i in range(1, 7)]
    events: list[object] = []
    with MockFleet(specs) as fleet, FleetSession(
            load_inventory(fleet.inventory_path).select(), system_known_hosts=False,
            processes=2) as session:
        result = session.run("go", on_result=events.append, on_output=events.append)
    assert all(r.ok for r in result.values())
    for name, host_result in result.items():
        chunks = [e for e in events if isinstance(e, Output) and e.host == name]
        assert b"".join(c.data for c in chunks if c.stream == "stdout") == host_result.stdout
        assert b"".join(c.data for c in chunks if c.stream == "stderr") == b"warn\n"
        assert events.index(chunks[-1]) < events.index(host_result)


def test_stream_format_prints_lines_as_they_arrive_then_the_summary(tmp_path):
    specs = [MockHost("slow", fault=Fault.trickle(lines=3, interval=0.4)),
             MockHost("quick", replies={"*": Reply("fast\n", stderr="careful\n")})]
    with MockFleet(specs) as fleet:
        with subprocess.Popen(
            [sys.executable, "-m", "fleetexec", "run", "-i", str(fleet.inventory_path),
             "--no-system-known-hosts", "-o", "stream", "--", "go"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
            first = process.stdout.readline()
            still_running = process.poll() is None  # the slow host is still trickling
            # Not communicate(): it reads the raw pipe and would lose what readline() buffered.
            rest = process.stdout.read()
            stderr = process.stderr.read()
            process.wait(30)
    assert process.returncode == 0, stderr
    assert still_running and first.strip() in ("quick: fast", "slow : slow: trickle line 1",
                                                "quick [err]: careful")
    lines = [first.rstrip("\n"), *rest.splitlines()]
    assert "quick [err]: careful" in lines
    assert [line for line in lines if line.startswith("slow ")] == [
        f"slow : slow: trickle line {n}" for n in (1, 2, 3)]
    assert lines[-1].startswith("2 hosts: 2 ok")
    assert "\x1b[" not in rest  # not a terminal: no colour


def test_stream_lines_of_many_real_hosts_are_never_mixed(sshd, tmp_path):
    addresses = [f"127.0.13.{i}" for i in range(1, 13)]
    inventory = sshd.write_inventory(tmp_path / "inv.yaml", addresses)
    command = ('me=$(echo $SSH_CONNECTION | cut -d" " -f3); i=0; '
               'while [ $i -lt 400 ]; do echo "$me line $i"; i=$((i+1)); done; '
               'printf "$me partial"')
    done = cli("run", "-i", str(inventory), "--no-system-known-hosts", "-o", "stream",
               "--", command)
    assert done.returncode == 0, done.stderr
    by_name = {f"h{i}": address for i, address in enumerate(addresses, 1)}
    seen: dict[str, list[str]] = {name: [] for name in by_name}
    for line in done.stdout.splitlines()[:-1]:
        name, _, text = line.partition(": ")
        name = name.strip()
        assert text.startswith(by_name[name] + " "), line  # a whole line of that host
        seen[name].append(text)
    for name, address in by_name.items():
        assert seen[name] == [f"{address} line {i}" for i in range(400)] + [f"{address} partial"]


def test_stream_marks_stderr_and_keeps_failures_in_the_summary(sshd, tmp_path):
    inventory = sshd.write_inventory(tmp_path / "inv.yaml", ["127.0.13.21"])
    done = cli("run", "-i", str(inventory), "--no-system-known-hosts", "-o", "stream",
               "--", "echo out; printf '\\033[2Jbad\\n' >&2; exit 3")
    assert done.returncode == 1
    assert "h1: out" in done.stdout and "h1 [err]: \\x1b[2Jbad" in done.stdout
    assert "h1  failed  exit 3" in done.stdout and "1 host: 1 failed" in done.stdout


# ---- on a terminal: colour, NO_COLOR, the progress bar --------------------------------------


def run_on_a_terminal(argv: list[str], env: dict[str, str]) -> str:
    """Run `argv` with stdout and stderr on a pseudo-terminal; return what it wrote."""
    primary, secondary = pty.openpty()
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=secondary,
                               stderr=secondary, env=env)
    os.close(secondary)
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal closed: the program is done
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    process.wait(10)
    os.close(primary)
    return output.decode(errors="replace")


@pytest.mark.parametrize("no_color", [False, True])
def test_host_names_are_coloured_on_a_terminal_unless_no_color(no_color):
    with MockFleet(2) as fleet:
        env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
        if no_color:
            env["NO_COLOR"] = "1"
        shown = run_on_a_terminal([sys.executable, "-m", "fleetexec", "run", "-i",
                                   str(fleet.inventory_path), "--no-system-known-hosts",
                                   "-o", "stream", "--", "hostname"], env)
    coloured = re.search(r"\x1b\[\d+mhost1", shown) is not None
    assert coloured is not no_color, shown
    assert "host1" in shown


def test_a_run_longer_than_a_second_shows_a_progress_bar_on_a_terminal():
    specs = [MockHost(replies={"*": Reply("done\n")}),
             MockHost("slow", replies={"*": Reply("done\n", delay=2.5)})]
    with MockFleet(specs) as fleet:
        argv = [sys.executable, "-m", "fleetexec", "run", "-i", str(fleet.inventory_path),
                "--no-system-known-hosts", "--", "work"]
        shown = run_on_a_terminal(argv, dict(os.environ))
        quiet = run_on_a_terminal([*argv[:-2], "--quiet", "--", "work"], dict(os.environ))
    assert "1/2" in shown and "waiting for slow" in shown and "1 ok" in shown
    assert "2 hosts: 2 ok" in shown
    assert "waiting for" not in quiet and "2 hosts: 2 ok" in quiet


def test_progress_lines_when_stderr_is_not_a_terminal():
    with MockFleet(2) as fleet:
        done = cli("run", "-i", str(fleet.inventory_path), "--no-system-known-hosts",
                   "--progress", "--", "hostname")
    assert re.search(r"\[1/2\] host\d\s+ok", done.stderr) and "[2/2]" in done.stderr


def test_the_api_streams_output_through_the_agent_too(sshd, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    from fleetexec.agent import AgentBackend, stop_agent

    inventory = sshd.write_inventory(tmp_path / "inv.yaml", ["127.0.13.31"])
    chunks: list[Output] = []
    try:
        with FleetSession(load_inventory(inventory).select(), system_known_hosts=False,
                          backend=AgentBackend()) as session:
            result = session.run("echo via agent", on_output=chunks.append)
    finally:
        stop_agent()
    assert result["h1"].ok and b"".join(c.data for c in chunks) == b"via agent\n"


def test_on_output_is_optional_and_run_is_unchanged_without_it():
    result = fleetexec.run(["web1"], "x", backend=fleetexec.testing.ScriptedBackend(
        {}, default=MockHost(replies={"x": Reply("y\n")})))
    assert result["web1"].stdout == b"y\n"


def test_stream_is_documented_in_help():
    assert "stream" in cli("run", "--help").stdout
