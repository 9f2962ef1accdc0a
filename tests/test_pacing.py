"""Handshake slots are held while a connection may sit in a server's accept queue (until the
server's banner), not while the handshake merely waits on the network, nor between retries.

Each test takes the worker's only slot from the outside and checks, by the order of
events rather than by a clock, that it became free while the host's connect was still
going on (the connect cannot end before the slot is given back in the retry case, and
the fault server keeps the other case waiting until it is stopped).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from fleetexec import Host
from fleetexec.options import Options
from fleetexec.resolve import resolve
from fleetexec.results import HostResult, Status
from fleetexec.ssh.pacing import Turn
from fleetexec.ssh.session import WorkerContext, run_on_host
from fleetexec.testing import FaultServer

WAIT = 20.0  # only bounds a failing test: the passing ones never wait that long


def _start(host: Host, context: WorkerContext) -> tuple[threading.Thread, threading.Event,
                                                        list[HostResult]]:
    done, results = threading.Event(), []

    def go() -> None:
        results.append(run_on_host(host, "true", context))
        done.set()

    thread = threading.Thread(target=go)
    thread.start()
    return thread, done, results


def _connected(server: FaultServer) -> None:
    """Until the session's connection reached the server (it holds its slot by then)."""
    deadline = time.monotonic() + WAIT
    while not server.accepted:
        assert time.monotonic() < deadline, "the session never connected"
        time.sleep(0.005)


def _host(server: FaultServer, tmp_path: Path, timeout: float) -> tuple[Host, Options]:
    options = Options(known_hosts=(str(tmp_path / "known_hosts"),), system_known_hosts=False,
                      use_agent=False, use_ssh_config=False, connect_timeout=timeout)
    (tmp_path / "known_hosts").write_text("")
    host, = resolve([Host("h", address=server.address, port=server.port, user="u")], options)
    return host, options


def test_the_slot_is_given_back_once_the_banner_came(tmp_path: Path) -> None:
    with FaultServer("banner-silence", "127.5.3.1") as server:  # a banner, then nothing
        host, options = _host(server, tmp_path, 60)
        context = WorkerContext(options, handshakes=1)
        thread, done, results = _start(host, context)
        _connected(server)
        assert context.handshakes.acquire(timeout=WAIT)  # free while the kex waits...
        assert not done.is_set()  # ...on a server that never answers
        context.handshakes.release()
    thread.join(WAIT)  # stopping the server ended the connection
    assert results and results[0].status is Status.CONNECTION_LOST, results


def test_the_slot_is_free_between_retries(tmp_path: Path) -> None:
    with FaultServer("accept-close", "127.5.3.2") as server:  # hangs up before any banner
        host, options = _host(server, tmp_path, 60)
        context = WorkerContext(options, handshakes=1)
        thread, done, results = _start(host, context)
        _connected(server)
        assert context.handshakes.acquire(timeout=WAIT)  # taken during a pause...
        assert not done.is_set()  # ...the retry cannot go on without it
        context.handshakes.release()
    thread.join(WAIT)  # the next attempt finds the port closed
    assert results and results[0].status in (Status.CONNECTION_LOST, Status.UNREACHABLE)


def test_a_turn_is_released_once_from_any_thread() -> None:
    slots = threading.BoundedSemaphore(1)
    turn = Turn(slots, lambda: None)
    assert not turn.idle
    threads = [threading.Thread(target=turn.release) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    turn.release()
    assert turn.idle
    assert slots.acquire(blocking=False)  # one slot, given back exactly once (bounded)
    assert not slots.acquire(blocking=False)


def test_pause_gives_the_slot_up_and_takes_it_back() -> None:
    slots = threading.BoundedSemaphore(1)
    turn = Turn(slots, lambda: None)
    taken = threading.Event()

    def other() -> None:
        assert slots.acquire(timeout=WAIT)
        taken.set()
        slots.release()

    thread = threading.Thread(target=other)
    thread.start()
    assert turn.pause(0.2, time.monotonic() + WAIT)
    thread.join(WAIT)
    assert taken.is_set() and not turn.idle
    turn.release()
    assert turn.idle
