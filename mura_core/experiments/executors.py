"""Executors: who trains the runs a notebook asks for.

An executor takes a list of ``store.RunSpec`` and returns their ``store.Run`` in the same
order (``Executor``, the one interface). Runs are independent and stored by their settings,
so the order in which they are trained, and where, does not change any number.

- ``ProcessExecutor`` (the default on NumPy with more than one core): worker processes on
  this machine, one run each at a time, each run on one BLAS thread (``store.RUN_THREADS``).
- ``LocalExecutor``: in this process, one run after another.
- ``cluster.DaskExecutor``: each run not yet stored is one task on a Dask cluster.

Every NumPy run multiplies on one BLAS thread whichever executor trains it, so all three give
the same numbers. ``make_executor(scheduler)`` turns the ``scheduler`` parameter of the
notebooks and of ``python -m mura_core report --scheduler`` into an executor; Dask is
imported only when a Dask scheduler is given.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import platform
import re
import signal
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

from .cluster import DaskExecutor, check_address, connect, local_workers
from .store import RUN_THREADS, Run, run_threads, stored_run, train_in_worker, train_or_load

#: ``processes:N``: N worker processes on this machine, without Dask.
PROCESSES = re.compile(r"processes:(\d+)")
#: The most worker processes the default starts (each holds a network and its batches).
MAX_DEFAULT_WORKERS = 8
#: Seconds a stopped executor gives its training workers to stop on their own
#: (``stop_workers``): a step and a checkpoint, at the sizes a CPU trains.
STOP_GRACE_SECONDS = 5.0


@runtime_checkable
class Executor(Protocol):
    """Trains runs: ``run`` returns the ``Run`` of every spec, in spec order (a stored run is
    loaded, not trained again); ``describe`` says what the provenance keeps; ``close`` lets
    go of what it holds (a cluster). ``kind`` names it, ``workers`` counts who trains."""

    kind: str
    workers: int

    def run(self, specs, cache, runs_dir, *, backend: str = "numpy", log=print) -> list[Run]: ...

    def describe(self) -> dict: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Trains the runs in this process, one after another."""

    kind = "local"
    workers = 1

    def describe(self) -> dict:
        return {"executor": self.kind, "workers": self.workers, "address": None}

    def run(self, specs, cache, runs_dir, *, backend: str = "numpy", log=print) -> list[Run]:
        runs = []
        for spec in specs:
            run = train_or_load(spec, cache, runs_dir, backend=backend, log=log)
            if not run.reused:
                run.worker = f"local ({platform.node()})"
            runs.append(run)
        return runs

    def close(self) -> None:
        pass


def _ignore_sigint() -> None:
    # An idle worker ignores Ctrl+C; a training one handles it (the trainer's own handler),
    # and the executor passes a stop on to its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class ProcessExecutor:
    """Trains the runs not stored yet in ``workers`` processes on this machine, as many at a
    time; a process gets a run's settings and two folders (``store.train_in_worker``), and
    each run multiplies on ``store.RUN_THREADS`` BLAS thread(s). A Ctrl+C or SIGTERM stops
    the workers' runs at their next step (each checkpoints, as a run stopped in this process
    does) and no queued run starts."""

    kind = "processes"

    def __init__(self, workers: int):
        if workers < 1:
            raise ValueError(f"a process executor needs at least one worker, got {workers}")
        self.workers = int(workers)

    def describe(self) -> dict:
        return {"executor": self.kind, "workers": self.workers, "address": None,
                "blas_threads": RUN_THREADS}

    def run(self, specs, cache, runs_dir, *, backend: str = "numpy", log=print) -> list[Run]:
        runs = [stored_run(spec, cache, runs_dir, backend=backend, log=log) for spec in specs]
        todo = [i for i, run in enumerate(runs) if run is None]
        if not todo:
            return runs
        cache_dir, runs_dir = str(Path(cache.cache_dir).resolve()), str(Path(runs_dir).resolve())
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=min(self.workers, len(todo)), mp_context=context,
            initializer=_ignore_sigint)
        try:
            futures = {pool.submit(train_in_worker, specs[i], cache_dir, cache.key, runs_dir,
                                   backend): i for i in todo}
            for future in concurrent.futures.as_completed(futures):
                run, lines = future.result()
                for line in lines:
                    log(line)
                runs[futures[future]] = run
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            stop_workers(multiprocessing.active_children())
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return runs

    def close(self) -> None:
        pass


def stop_workers(children, grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop the worker processes ``children`` of a stopped executor: each gets ``grace``
    seconds to end on its own, then SIGTERM. A Ctrl+C in a terminal and a kernel's interrupt
    in JupyterLab signal the whole process group, so a training worker has the signal already
    and stops after its step with a checkpoint of that step; a second signal would stop it at
    once, keeping only its previous checkpoint. A signal sent to this process alone reaches no
    worker: SIGTERM then stops each run after its step, with its checkpoint."""
    alive = [child for child in children if child.pid is not None]
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        multiprocessing.connection.wait([c.sentinel for c in alive],
                                        timeout=max(0.0, deadline - time.monotonic()))
        alive = [child for child in alive if child.is_alive()]
    for child in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGTERM)


def default_workers() -> int:
    """The cores this process may use (its CPU affinity), at most MAX_DEFAULT_WORKERS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_WORKERS))


def process_workers(scheduler: str | None) -> int | None:
    """N for a ``processes:N`` setting (N >= 1), None for anything else; ValueError for
    ``processes:`` followed by anything but a positive count."""
    if scheduler is None or not scheduler.strip().startswith("processes:"):
        return None
    match = PROCESSES.fullmatch(scheduler.strip())
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"scheduler {scheduler.strip()!r}: write processes:N with N >= 1 worker "
                         "processes (e.g. processes:2)")
    return int(match.group(1))


def parse_scheduler(scheduler: str | None) -> str | None:
    """The Dask scheduler a ``scheduler`` setting names, or None when it names none.

    None, "" (the default executor), "local" (this process) and ``processes:N`` (N worker
    processes) name no Dask scheduler; ``local:N`` (N >= 1) starts a LocalCluster of N
    workers; anything else is the address of a running scheduler (``tcp://host:8786``, or
    ``host:8786``). ValueError for ``local:`` or ``processes:`` followed by anything but a
    positive count (for ``local:``, within ``cluster.local_worker_limit``), and for anything
    else not written as an address."""
    if scheduler is None or scheduler.strip() in ("", "local"):
        return None
    scheduler = scheduler.strip()
    if process_workers(scheduler) is not None:
        return None
    if local_workers(scheduler) is None:  # ValueError for a bad local:N
        check_address(scheduler)
    return scheduler


def make_executor(scheduler: str | None = None, *, backend: str = "numpy", log=print) -> Executor:
    """The executor for a ``scheduler`` setting (see ``parse_scheduler``): "local" trains in
    this process; ``processes:N`` in N worker processes; a Dask setting on a
    ``cluster.DaskExecutor`` connected to that scheduler (or to a LocalCluster it starts;
    ``backend`` decides whether local workers are pinned to GPUs). None or "": worker
    processes on NumPy, one per core (``default_workers``), where there is more than one
    core; this process otherwise (and on a GPU, whose runs are not parallel on one device)."""
    workers = process_workers(scheduler)
    if workers is not None:
        return ProcessExecutor(workers)
    address = parse_scheduler(scheduler)
    if address is not None:
        return DaskExecutor(connect(address, backend=backend, log=log))
    if (scheduler or "").strip() == "" and run_threads(backend) is not None \
            and default_workers() > 1:
        return ProcessExecutor(default_workers())
    return LocalExecutor()
