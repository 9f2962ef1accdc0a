"""Rows 44-49 of the fault catalogue (research/faults.md §2): the pool, not the host.

One hung host among good ones, a worker that stops answering, a worker killed
mid-run, exceptions that cannot be pickled, many large results at once, a low
open-files limit with 1000 hosts, and paramiko staying out of the parent.
Ctrl-C and SIGTERM during a run (row 47) are covered end to end in
tests/test_cli.py::test_interrupt_prints_partial_results_exits_130_and_leaves_no_process.

The real sshd hosts here are 127.0.12.x, and 127.0.8.1 on for the 1000-host run.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import fleetexec
from fleetexec import Host, Status
from fleetexec.testing import Fault, MockFleet, MockHost
from fleetexec.testing.sshd import OpenSSHServer, addresses

pytestmark = pytest.mark.timeout(60)

GRACE = 3.0


def sshd_hosts(server: OpenSSHServer, tmp_path: Path, count: int, first: str
               ) -> tuple[list[Host], dict[str, object]]:
    """`count` hosts of `server` from address `first` on, and the run options for them."""
    chosen = addresses(count, base=first)
    known = server.write_known_hosts(tmp_path / "known_hosts", chosen)
    hosts = [Host(f"h{i + 1}", address=a, port=server.port, user=server.user,
                  key_files=(str(server.client_key_path),)) for i, a in enumerate(chosen)]
    return hosts, {"known_hosts": [str(known)], "system_known_hosts": False}


# ---- finding our own worker processes -----------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def worker_pids() -> list[int]:
    """This test process's workers: the child running fleetexec.backends and its forks."""
    workers = []
    for child in _children(os.getpid()):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"fleetexec.backends" in cmdline.split(b"\0"):
            workers += [child, *_children(child)]
    return workers


def _tcp_peers() -> dict[int, tuple[str, int]]:
    """socket inode -> remote (address, port) of every established IPv4 TCP socket."""
    peers = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] != "01":  # ESTABLISHED
            continue
        address, port = fields[2].split(":")
        peers[int(fields[9])] = (socket.inet_ntoa(struct.pack("<I", int(address, 16))),
                                 int(port, 16))
    return peers


def connected_to(pid: int, port: int) -> set[str]:
    """The addresses process `pid` holds an established connection to, on `port`."""
    peers = _tcp_peers()
    found = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            peer = peers.get(int(link[8:-1]))
            if peer is not None and peer[1] == port:
                found.add(peer[0])
    return found


def wait_for_busy_workers(port: int, want: int, timeout: float = 20) -> dict[int, set[str]]:
    """Poll until `want` workers each hold a connection to `port`: pid -> addresses."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = {pid: connected_to(pid, port) for pid in worker_pids()}
        busy = {pid: peers for pid, peers in busy.items() if peers}
        if len(busy) >= want:
            return busy
        time.sleep(0.05)
    raise AssertionError(f"fewer than {want} workers connected to port {port} in {timeout}s")


class Background:
    """`fleetexec.run(...)` on a thread, so the test can act on the pool meanwhile."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.result: fleetexec.FleetResult | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=args, kwargs=kwargs, daemon=True)
        self.thread.start()

    def _run(self, *args: object, **kwargs: object) -> None:
        try:
            self.result = fleetexec.run(*args, **kwargs)  # type: ignore[arg-type]
        except BaseException as error:  # re-raised in the test's own thread by join()
            self.error = error

    def join(self, timeout: float) -> fleetexec.FleetResult:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the run did not end within {timeout}s"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


# ---- row 44: hung hosts and hung workers ---------------------------------------------------


def test_one_hung_host_does_not_hold_up_the_good_ones(sshd: OpenSSHServer,
                                                         tmp_path: Path) -> None:
    hosts, options = sshd_hosts(sshd, tmp_path, 20, "127.0.12.1")
    command = ('case "$SSH_CONNECTION" in *" 127.0.12.3 "*) echo started; exec sleep 60;; esac; '
               "echo fine")
    began = time.monotonic()
    result = fleetexec.run(hosts, command, connect_timeout=10, command_timeout=1.5, **options)
    wall = time.monotonic() - began
    hung = result["h3"]
    assert hung.status is Status.TIMEOUT and hung.stdout == b"started\n"
    assert hung.duration < 1.5 + GRACE
    others = [r for name, r in result.items() if name != "h3"]
    assert all((r.status, r.stdout) == (Status.OK, b"fine\n") for r in others)
    assert wall < 10 + 1.5 + GRACE  # the run ends by the deadline, not by `sleep 60`


def test_a_worker_that_stops_answering_is_given_up_at_deadline_plus_grace(
    sshd: OpenSSHServer, tmp_path: Path
) -> None:
    # SIGSTOP freezes one worker with its sessions in flight: no session deadline can
    # fire inside it, so only the parent's own budget (connect + command + 5 s) ends them.
    hosts, options = sshd_hosts(sshd, tmp_path, 8, "127.0.12.101")
    frozen: list[int] = []

    def thaw(r: fleetexec.HostResult) -> None:
        # Let the frozen worker go as soon as the parent gave up on it: a stopped
        # process ignores the pool's SIGTERM and the pool would wait for it forever.
        if r.status is Status.TIMEOUT and frozen:
            os.kill(frozen.pop(), signal.SIGCONT)

    run = Background(hosts, "sleep 1; echo fine", processes=2, connect_timeout=1, command_timeout=2,
                     on_result=thaw, **options)
    try:
        busy = wait_for_busy_workers(sshd.port, want=2)
        victim = sorted(busy)[0]
        os.kill(victim, signal.SIGSTOP)
        frozen.append(victim)
        result = run.join(timeout=1 + 2 + 5 + 2 * GRACE)
    finally:
        for pid in frozen:  # never leave a stopped process behind
            os.kill(pid, signal.SIGCONT)
    stuck = {h.name for h in hosts if h.address in busy[victim]}
    assert stuck
    for name, r in result.items():
        if name in stuck:
            assert r.status is Status.TIMEOUT, (name, r.status, r.error)
            assert "abandoned" in (r.error or "")
        elif r.status is not Status.TIMEOUT:  # not taken yet when the worker froze
            assert (r.status, r.stdout) == (Status.OK, b"fine\n"), (name, r.status, r.error)
    assert len(result) == 8
    assert any(r.ok for r in result.values())  # the other worker's hosts completed


# ---- row 45: exceptions that do not pickle --------------------------------------------------


def test_bad_host_key_exceptions_become_plain_results_in_every_worker() -> None:
    specs = [MockHost(f"changed{i}", fault=Fault.fresh_host_key()) for i in range(6)]
    specs += [MockHost(f"good{i}") for i in range(6)]
    with MockFleet(specs, connect_timeout=20) as fleet:
        result = fleet.run("echo alive", processes=2, command_timeout=20)
    for i in range(6):
        changed, good = result[f"changed{i}"], result[f"good{i}"]
        assert changed.status is Status.HOSTKEY_CHANGED
        assert (good.status, good.stdout) == (Status.OK, b"alive\n")
    assert pickle.loads(pickle.dumps(result)) == result  # plain records only


# ---- row 46: a worker dies mid-run ----------------------------------------------------------


def test_a_worker_killed_mid_run_fails_only_its_hosts(sshd: OpenSSHServer,
                                                         tmp_path: Path) -> None:
    hosts, options = sshd_hosts(sshd, tmp_path, 8, "127.0.12.201")
    run = Background(hosts, "sleep 2; echo fine", processes=2, connect_timeout=10,
                     command_timeout=20, **options)
    busy = wait_for_busy_workers(sshd.port, want=2)
    victim = sorted(busy)[0]
    os.kill(victim, signal.SIGKILL)  # found above as a worker of this test's own pool
    began = time.monotonic()
    result = run.join(timeout=30)
    assert time.monotonic() - began < 2 + 5  # no deadline was waited for
    assert len(result) == 8  # every host accounted for
    lost = {h.name for h in hosts if h.address in busy[victim]}
    assert lost
    for name, r in result.items():
        if name in lost:
            assert r.status is Status.ERROR, (name, r.status, r.error)
            assert "worker" in (r.error or "")
        else:
            assert r.status in (Status.OK, Status.ERROR), (name, r.status, r.error)
    survivors = [r for name, r in result.items() if name not in lost and r.ok]
    assert survivors and all(r.stdout == b"fine\n" for r in survivors)
    # The pool replaced the dead worker: the next run is whole again.
    again = fleetexec.run(hosts, "echo fine", processes=2, connect_timeout=10, command_timeout=20,
                          **options)
    assert again.ok


def test_a_host_lost_with_its_worker_still_says_when_it_started_and_how_long_it_ran(
    sshd: OpenSSHServer, tmp_path: Path
) -> None:
    hosts, options = sshd_hosts(sshd, tmp_path, 4, "127.0.12.211")
    began = time.time()
    run = Background(hosts, "sleep 2; echo fine", processes=2, connect_timeout=10,
                     command_timeout=20, **options)
    busy = wait_for_busy_workers(sshd.port, want=2)
    time.sleep(0.3)
    victim = sorted(busy)[0]
    os.kill(victim, signal.SIGKILL)
    result = run.join(timeout=30)
    lost = [result[h.name] for h in hosts if h.address in busy[victim]]
    assert lost
    for r in lost:
        assert r.status is Status.ERROR
        assert r.started >= began
        assert r.duration >= 0.3


@pytest.mark.parametrize("how", ["script", "python -c", "stdin"])
def test_an_unguarded_script_runs_without_a_main_guard(sshd: OpenSSHServer, tmp_path: Path,
                                                       how: str) -> None:
    # No `if __name__ == "__main__":`: workers never re-import the caller's main module.
    addresses = [f"127.0.12.{i}" for i in range(100, 120)]
    known_hosts = tmp_path / "known_hosts"
    sshd.write_known_hosts(str(known_hosts), addresses)
    code = (
        "import fleetexec\n"
        f"key = {str(sshd.client_key_path)!r}\n"
        f"hosts = [fleetexec.Host(f'h{{i}}', address=a, port={sshd.port}, user={sshd.user!r},\n"
        f"         key_files=(key,)) for i, a in enumerate({addresses!r})]\n"
        f"result = fleetexec.run(hosts, 'echo ran', known_hosts=[{str(known_hosts)!r}],\n"
        "                       system_known_hosts=False)\n"
        "print(sum(r.stdout == b'ran\\n' for r in result.values()), result.exit_code)\n")
    script = tmp_path / "unguarded.py"
    script.write_text(code)
    argv = {"script": [sys.executable, str(script)], "python -c": [sys.executable, "-c", code],
            "stdin": [sys.executable, "-"]}[how]
    done = subprocess.run(argv, input=code if how == "stdin" else None, capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)
    assert done.stdout.split() == ["20", "0"], done.stderr


# ---- rows 37/44: many large results arriving at once ---------------------------------------


def test_many_large_results_finishing_together_all_arrive(sshd: OpenSSHServer,
                                                            tmp_path: Path) -> None:
    # Each worker's last results are megabytes still in the queue when its threads are
    # done; none of them may be reported lost.
    hosts, options = sshd_hosts(sshd, tmp_path, 40, "127.0.12.51")
    size = 8_000_000
    for _ in range(2):
        result = fleetexec.run(hosts, f"sleep 1; head -c {size} /dev/zero", max_output=size,
                               connect_timeout=10, command_timeout=20, **options)
        assert result.counts() == {Status.OK: 40}, {r.error for r in result.values()}
        assert all(len(r.stdout) == size and not r.truncated for r in result.values())
        del result


def test_more_worker_processes_than_two_all_serve(sshd: OpenSSHServer, tmp_path: Path) -> None:
    # The first worker forks the others; each fork must close only the sockets still open
    # (a third worker once crashed on one its parent had already closed, losing its hosts).
    hosts, options = sshd_hosts(sshd, tmp_path, 12, "127.0.16.1")
    result = fleetexec.run(hosts, "echo up", processes=4, connect_timeout=10,
                           command_timeout=20, **options)
    assert result.counts() == {Status.OK: 12}, {r.error for r in result.values()}


# ---- row 48: few file descriptors, many hosts ----------------------------------------------


@pytest.mark.timeout(300)
def test_a_thousand_hosts_under_an_open_files_limit_of_256(sshd: OpenSSHServer,
                                                              tmp_path: Path) -> None:
    chosen = addresses(1000, base="127.0.8.1")
    assert chosen[-1].startswith("127.0.11.")  # clear of the other tests' 127.0.1-7.x
    inventory = sshd.write_inventory(tmp_path / "inv.yaml", chosen)

    def low_limit() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    done = subprocess.run(
        [sys.executable, "-m", "fleetexec", "run", "-i", str(inventory), "--no-system-known-hosts",
         "--connect-timeout", "60", "-o", "json", "--", "true"],
        capture_output=True, text=True, timeout=280, preexec_fn=low_limit)
    assert "Too many open files" not in done.stdout + done.stderr
    assert "EMFILE" not in done.stdout + done.stderr and "Traceback" not in done.stderr
    document = json.loads(done.stdout)
    statuses = {h["host"]: h["status"] for h in document["hosts"]}
    assert len(statuses) == 1000
    assert document["summary"]["counts"] == {"ok": 1000}, [
        (h["host"], h["status"], h["error"]) for h in document["hosts"] if h["status"] != "ok"][:5]
    assert done.returncode == 0


def test_sessions_in_flight_are_capped_by_the_open_files_limit_not_the_host_count(
) -> None:
    script = textwrap.dedent("""
        import json, resource
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        from fleetexec import Options
        from fleetexec.backends import plan
        print(json.dumps([[p.processes, p.threads_per_process] for p in
                          (plan(10_000, Options()), plan(10_000, Options(parallel=50)),
                           plan(3, Options()))]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    (procs, threads), capped, small = json.loads(done.stdout)
    assert threads < 256  # every worker stays under its own limit, whatever the host count
    assert capped[0] * capped[1] <= 50 + capped[0]  # --parallel is honoured
    assert small[0] * small[1] <= 3


def test_workers_raise_their_own_open_files_limit_and_never_the_callers(
        sshd: OpenSSHServer, tmp_path: Path) -> None:
    hosts, options = sshd_hosts(sshd, tmp_path, 2, "127.0.16.21")
    script = textwrap.dedent(f"""
        import json, resource
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        import fleetexec
        from fleetexec.backends import Plan, plan, raisable_open_files
        from fleetexec.backends.process import ProcessBackend
        hosts = [fleetexec.Host(h, address=a, port={sshd.port}, user={sshd.user!r},
                                key_files=({str(sshd.client_key_path)!r},))
                 for h, a in {[(h.name, h.address) for h in hosts]!r}]
        backend = ProcessBackend(Plan(1, 600, 64))
        with fleetexec.FleetSession(hosts, backend=backend, **{options!r}) as session:
            ok = len(session.run("true").succeeded)
            (worker,) = backend._workers.values()
            limits = open(f"/proc/{{worker.pid}}/limits").read()
        line = next(l for l in limits.splitlines() if l.startswith("Max open files"))
        print(json.dumps({{"ok": ok, "worker_soft": int(line.split()[3]), "hard": hard,
                          "mine": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                          "planned": plan(10_000, fleetexec.Options(),
                                          open_files=raisable_open_files()).threads_per_process}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    found = json.loads(done.stdout)
    assert found["ok"] == 2 and found["mine"] == 256  # the caller's limit is untouched
    if found["hard"] >= 600 + 64:
        assert found["worker_soft"] == 600 + 64  # a socket per session thread, plus a reserve
        assert found["planned"] > 256 - 64


# ---- row 49: paramiko never crosses a fork --------------------------------------------------


def test_the_parent_never_imports_paramiko(
    sshd: OpenSSHServer, tmp_path: Path
) -> None:
    hosts, options = sshd_hosts(sshd, tmp_path, 2, "127.0.12.31")
    script = textwrap.dedent(f"""
        import json, multiprocessing, sys
        import fleetexec
        hosts = [fleetexec.Host(h, address=a, port={sshd.port}, user={sshd.user!r},
                                key_files=({str(sshd.client_key_path)!r},))
                 for h, a in (("h1", "127.0.12.31"), ("h2", "127.0.12.32"))]
        result = fleetexec.run(hosts, "echo fine", known_hosts={options["known_hosts"]!r},
                               system_known_hosts=False)
        print(json.dumps({{"ok": result.ok, "paramiko": "paramiko" in sys.modules}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert json.loads(done.stdout) == {"ok": True, "paramiko": False}, done.stderr
