"""The threads a worker keeps for its sessions and connections (`fleetexec.crew`)."""

from __future__ import annotations

import gc
import threading
import weakref

from fleetexec.crew import Crew


def _ran_on(crew: Crew, gate: threading.Event | None = None) -> threading.Event:
    """Hand a job that records its thread's name (after `gate`, if given) in `.thread`."""
    done = threading.Event()

    def job() -> None:
        if gate is not None:
            gate.wait(10)
        done.thread = threading.current_thread().name  # type: ignore[attr-defined]
        done.set()

    crew.hand(job)
    return done


def test_a_thread_whose_job_ended_takes_the_next_job() -> None:
    crew = Crew("test")
    first = _ran_on(crew)
    assert first.wait(10)
    for _ in range(1000):  # it counts itself idle just after its job returned
        if crew.idle() == 1:
            break
        threading.Event().wait(0.01)
    second = _ran_on(crew)
    assert second.wait(10)
    assert crew.size() == 1 and second.thread == first.thread  # type: ignore[attr-defined]
    crew.stop()


def test_jobs_at_once_get_threads_of_their_own_and_stop_waits_for_them() -> None:
    crew = Crew("test")
    gate = threading.Event()
    busy = [_ran_on(crew, gate) for _ in range(3)]
    assert crew.size() == 3
    threading.Timer(0.2, gate.set).start()
    crew.stop()  # returns once every job has ended
    assert all(done.is_set() for done in busy)
    assert len({done.thread for done in busy}) == 3  # type: ignore[attr-defined]
    late = _ran_on(crew)  # after stop: still run, on a thread of its own
    assert late.wait(10) and late.thread == "test-late"  # type: ignore[attr-defined]


def test_an_idle_thread_keeps_nothing_of_its_last_job_alive() -> None:
    crew = Crew("test")

    class Output:
        pass

    output = Output()
    kept = weakref.ref(output)
    done = threading.Event()

    def job(output: Output = output) -> None:
        done.set()

    crew.hand(job)
    del job, output
    assert done.wait(10)
    for _ in range(100):
        gc.collect()
        if kept() is None:
            break
        threading.Event().wait(0.01)
    assert kept() is None
    crew.stop()
