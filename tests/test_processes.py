"""data.processes.map_in_processes: results in task order, inline or in workers; a worker
that dies breaks the map instead of hanging it; the initializer runs where the tasks run."""
import os
import signal
from concurrent.futures.process import BrokenProcessPool

import pytest

from mura_core.data.processes import map_in_processes

_state = {}


def _remember(value):
    _state["value"] = value


def _square_plus_state(x):
    return x * x + _state.get("value", 0), os.getpid()


def _die_on_five(x):
    if x == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


@pytest.mark.parametrize("workers", [1, 2])
def test_results_come_back_in_task_order_with_the_initializer_applied(workers):
    tasks = list(range(100))
    out = list(map_in_processes(_square_plus_state, tasks, workers, initializer=_remember,
                                initargs=(7,), progress=False, inline_below=10))
    assert [value for value, _ in out] == [x * x + 7 for x in tasks]
    pids = {pid for _, pid in out}
    assert (pids == {os.getpid()}) == (workers == 1)


def test_few_tasks_run_in_this_process():
    out = list(map_in_processes(_square_plus_state, [1, 2, 3], 2, progress=False))
    assert {pid for _, pid in out} == {os.getpid()}


def test_a_worker_that_dies_breaks_the_map_instead_of_hanging_it():
    with pytest.raises(BrokenProcessPool):
        list(map_in_processes(_die_on_five, list(range(200)), 2, progress=False,
                              inline_below=10))


def _slow(x):
    import time
    time.sleep(0.01)
    return x, os.getpid()


def test_a_map_stopped_early_kills_its_workers_and_no_thread_fails(monkeypatch):
    import threading
    import time

    failures = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    for _ in range(5):  # the race with the pool's own thread was one stop in a few
        results = map_in_processes(_slow, list(range(2000)), 2, progress=False,
                                   inline_below=10)
        pids = {next(results)[1] for _ in range(40)}
        results.close()  # what a signal's exception or an error in the caller does
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in pids), "the workers were killed"
    assert failures == [], [f.exc_value for f in failures]


def _alive(pid):
    """Running, not a zombie waiting for its parent."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
