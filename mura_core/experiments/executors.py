"""Executors: who trains the runs a notebook asks for.

An executor takes a list of ``store.RunSpec`` and returns their ``store.Run`` in the same
order (``Executor``, the one interface). Runs are independent and stored by their settings,
so the order in which they are trained, and where, does not change any number.

- ``LocalExecutor`` (the default): in this process, one run after another.
- ``cluster.DaskExecutor``: each run not yet stored is one task on a Dask cluster.

``make_executor(scheduler)`` turns the ``scheduler`` parameter of the notebooks and of
``python -m mura_core report --scheduler`` into an executor (None: local). Dask is imported
only when a scheduler is given.
"""
from __future__ import annotations

import platform
from typing import Protocol, runtime_checkable

from .cluster import DaskExecutor, connect, local_workers
from .store import Run, train_or_load


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


def parse_scheduler(scheduler: str | None) -> str | None:
    """The Dask scheduler a ``scheduler`` setting names, or None for this process.

    None, "" and "local" train in this process; ``local:N`` (N >= 1) starts a LocalCluster of
    N workers; anything else is the address of a running scheduler (``tcp://host:8786``, or
    ``host:8786``). ValueError for ``local:`` followed by anything but a positive count."""
    if scheduler is None or scheduler.strip() in ("", "local"):
        return None
    scheduler = scheduler.strip()
    local_workers(scheduler)  # ValueError for a bad local:N
    return scheduler


def make_executor(scheduler: str | None = None, *, backend: str = "numpy", log=print) -> Executor:
    """The executor for a ``scheduler`` setting (see ``parse_scheduler``): ``LocalExecutor``
    for None or "local", else a ``cluster.DaskExecutor`` connected to that scheduler (or to
    a LocalCluster it starts); ``backend`` decides whether local workers are pinned to GPUs."""
    address = parse_scheduler(scheduler)
    if address is None:
        return LocalExecutor()
    return DaskExecutor(connect(address, backend=backend, log=log))
