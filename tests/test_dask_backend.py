"""DaskBackend on a LocalCluster over loopback: same results, streamed, at most once, cancel."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

distributed = pytest.importorskip(
    "distributed", reason="the Dask backend needs distributed: pip install -e '.[dask]'")

from click.testing import CliRunner  # noqa: E402

from fleetexec import ConfigError, FleetSession, Host, Status, load_inventory  # noqa: E402
from fleetexec.backends import Backend  # noqa: E402
from fleetexec.backends.dask import LOST, DaskBackend  # noqa: E402
from fleetexec.backends.process import ProcessBackend  # noqa: E402
from fleetexec.cli import main  # noqa: E402
from fleetexec.testing import Fault, MockFleet, MockHost, Reply  # noqa: E402
from fleetexec.testing.faults import closed_port  # noqa: E402

pytestmark = pytest.mark.timeout(60)
SLACK = 30  # connect deadline: a loaded CI machine must not turn a host unreachable


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                  ) as started:  # no fixed port: parallel runs collide
        yield started


@pytest.fixture
def client(cluster: distributed.LocalCluster) -> Iterator[distributed.Client]:
    with distributed.Client(cluster, set_as_default=False) as connected:
        connected.wait_for_workers(2)
        yield connected


def hosts_of(fleet: MockFleet) -> list[Host]:
    return load_inventory(fleet.inventory_path).select()


class Gate:
    """Replies that count how often each host ran the command and wait for `open()`."""

    def __init__(self, wait: float = 30) -> None:
        self.wait = wait
        self.runs: Counter[str] = Counter()
        self.lock, self.opened = threading.Lock(), threading.Event()

    def reply(self, name: str) -> Callable[[str], Reply]:
        def answer(command: str) -> Reply:
            with self.lock:
                self.runs[name] += 1
            self.opened.wait(self.wait)
            return Reply(f"{name} done\n")
        return answer

    def open(self) -> None:
        self.opened.set()

    def started(self, count: int) -> None:
        deadline = time.monotonic() + 30
        while sum(self.runs.values()) < count:
            assert time.monotonic() < deadline, self.runs
            time.sleep(0.02)


def test_dask_gives_the_same_results_as_the_local_backend(client):
    specs = [MockHost(replies={"deploy": Reply(f"done {i}\n")}) for i in range(9)] + [
        MockHost(replies={"deploy": Reply("oops\n", "no space\n", exit_code=28)}),
        MockHost(fault=Fault.reject_auth()),
        MockHost(replies={"deploy": Fault.signal("TERM")}),
    ]
    with MockFleet(specs, connect_timeout=SLACK) as fleet:
        results = {}
        for backend in (ProcessBackend(), DaskBackend(client, shard_size=5)):
            assert isinstance(backend, Backend)
            with FleetSession(hosts_of(fleet), backend=backend, system_known_hosts=False) as s:
                results[type(backend).__name__] = [s.run("deploy"), s.run("deploy")]
    fields = ("status", "exit_code", "signal", "stdout", "stderr", "error")
    local, dask = ([[tuple(getattr(r, f) for f in fields) for r in run.values()] for run in runs]
                   for runs in (results["ProcessBackend"], results["DaskBackend"]))
    assert dask == local
    assert [r.status for r in results["DaskBackend"][0].values()][-3:] == [
        Status.FAILED, Status.AUTH_FAILED, Status.KILLED]


def test_results_stream_back_before_the_shard_ends(client):
    # One shard; the slow host ends only after the caller has seen the fast one, so a
    # backend that sent results at the end of a shard would time the slow host out.
    gate = Gate()
    specs = [MockHost("slow", replies={"deploy": gate.reply("slow")}),
             MockHost("fast", replies={"deploy": Reply("quick\n")})]
    with MockFleet(specs, connect_timeout=SLACK) as fleet, FleetSession(
            hosts_of(fleet), backend=DaskBackend(client), system_known_hosts=False,
            command_timeout=20) as session:
        order = []
        for result in session.stream("deploy"):
            order.append((result.host, result.status, result.error))
            gate.open()
    assert order == [("fast", Status.OK, None), ("slow", Status.OK, None)]


def test_a_killed_worker_loses_its_shard_once_and_no_host_runs_twice(client):
    gate = Gate()
    names = [f"h{i}" for i in range(6)]
    with MockFleet([MockHost(n, replies={"deploy": gate.reply(n)}) for n in names],
                   connect_timeout=SLACK) as fleet:
        backend = DaskBackend(client, shard_size=3)
        with FleetSession(hosts_of(fleet), backend=backend, system_known_hosts=False,
                          command_timeout=30) as session:
            done = []
            runner = threading.Thread(target=lambda: done.append(session.run("deploy")))
            runner.start()
            gate.started(6)  # both shards hold their hosts, one shard per worker
            pids = client.run(os.getpid)
            victim = next(iter(client.processing()))  # a worker address, mid-shard
            os.kill(pids[victim], signal.SIGKILL)
            gate.open()
            runner.join(45)
    result = done[0]
    lost = [r.host for r in result.values() if r.status is Status.ERROR]
    assert lost in (names[:3], names[3:]), [(r.host, r.status, r.error) for r in result.values()]
    assert all(result[n].error == LOST for n in lost)
    assert all(result[n].ok for n in names if n not in lost)
    assert gate.runs == Counter(names)  # no host ran twice, even after Dask rescheduled


def test_cancel_stops_every_shard_and_the_cluster_is_free_again(client):
    # The held hosts have no deadline and the gate opens only at the end: the second
    # run gets the two workers (and this test ends) only if cancel stopped both shards.
    gate = Gate(wait=300)
    specs = [MockHost("fast", replies={"deploy": Reply("quick\n")})] + [
        MockHost(f"held{i}", replies={"deploy": gate.reply(f"held{i}")}) for i in range(3)]
    try:
        with MockFleet(specs, connect_timeout=SLACK) as fleet, FleetSession(
                hosts_of(fleet), backend=DaskBackend(client, shard_size=2),
                system_known_hosts=False, command_timeout=0) as session:
            for result in session.stream("deploy"):
                assert (result.host, result.error) == ("fast", None)
                break  # leaving the stream cancels the run
            again = session.run("true")
    finally:
        gate.open()
    assert [r.status for r in again.values()] == [Status.OK] * 4


def test_live_output_streams_and_secrets_stay_home_unless_tls(client, monkeypatch):
    shipped = []
    submit = client.submit
    monkeypatch.setattr(client, "submit", lambda f, shard, **kw: shipped.append(shard) or
                        submit(f, shard, **kw))
    backend = DaskBackend(client)
    with MockFleet(2, connect_timeout=SLACK) as fleet, FleetSession(
            hosts_of(fleet), backend=backend, system_known_hosts=False, password="hunter2") as s:
        chunks = []
        result = s.run("echo hi", on_output=chunks.append)
        with pytest.raises(ConfigError, match="TLS"):
            FleetSession(hosts_of(fleet), backend=DaskBackend(client, send_secrets=True),
                         system_known_hosts=False, password="hunter2").run("true")
    assert [(r.status, r.error) for r in result.values()] == [(Status.OK, None)] * 2
    assert sorted((c.host, c.data) for c in chunks) == [("host1", b"hi\n"), ("host2", b"hi\n")]
    assert "not sent" in backend.notes[0]
    assert shipped and all(not shard.job.options.secrets() for shard in shipped)


def test_an_unreachable_scheduler_is_a_usage_error(monkeypatch):
    address = f"tcp://127.0.0.1:{closed_port()}"
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler"):
        FleetSession(["web1"], backend=DaskBackend(address, timeout=1)).run("true")
    monkeypatch.setattr("fleetexec.backends.dask.CONNECT_TIMEOUT", 1.0)
    done = CliRunner().invoke(main, ["run", "-H", "web1", "--", "true"],
                              env={"FLEETEXEC_SCHEDULER": address})
    assert done.exit_code == 2 and "cannot reach the Dask scheduler" in done.output
