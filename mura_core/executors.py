"""Executors: who trains the runs a notebook asks for.

An executor takes a list of ``experiments.RunSpec`` and returns their ``experiments.Run`` in
the same order. Runs are independent and stored by their settings, so the order in which
they are trained, and where, does not change any number.

- ``LocalExecutor`` (the default): in this process, one run after another.
- ``cluster.DaskExecutor``: each run not yet stored is one task on a Dask cluster.

``make_executor(scheduler)`` turns the ``scheduler`` parameter of the notebooks and of
``python -m mura_core report --scheduler`` into an executor (None: local). Dask is imported
only when a scheduler is given.
"""
from __future__ import annotations

import platform
import re

#: ``local:N``: a LocalCluster of N worker processes on this machine.
_LOCAL_CLUSTER = re.compile(r"local:(\d+)")


class LocalExecutor:
    """Trains the runs in this process, one after another."""

    kind = "local"
    workers = 1

    def describe(self) -> dict:
        return {"executor": self.kind, "workers": self.workers, "address": None}

    def run(self, specs, cache, runs_dir, *, backend: str = "numpy", log=print) -> list:
        from .experiments import train_or_load  # noqa: PLC0415

        runs = []
        for spec in specs:
            run = train_or_load(spec, cache, runs_dir, backend=backend, log=log)
            if not run.reused:
                run.worker = f"local ({platform.node()})"
            runs.append(run)
        return runs


def parse_scheduler(scheduler: str | None) -> str | None:
    """The Dask scheduler a ``scheduler`` setting names, or None for this process.

    None, "" and "local" train in this process; ``local:N`` (N >= 1) starts a LocalCluster of
    N workers; anything else is the address of a running scheduler (``tcp://host:8786``, or
    ``host:8786``). ValueError for ``local:`` followed by anything but a positive count."""
    if scheduler is None or scheduler.strip() in ("", "local"):
        return None
    scheduler = scheduler.strip()
    if scheduler.startswith("local:"):
        match = _LOCAL_CLUSTER.fullmatch(scheduler)
        if match is None or int(match.group(1)) < 1:
            raise ValueError(f"scheduler {scheduler!r}: write local:N with N >= 1 worker "
                             "processes (e.g. local:2), or an address such as tcp://host:8786")
    return scheduler


def make_executor(scheduler: str | None = None, *, backend: str = "numpy", log=print):
    """The executor for a ``scheduler`` setting (see ``parse_scheduler``): ``LocalExecutor``
    for None or "local", else a ``cluster.DaskExecutor`` connected to that scheduler (or to
    a LocalCluster it starts); ``backend`` decides whether local workers are pinned to GPUs."""
    address = parse_scheduler(scheduler)
    if address is None:
        return LocalExecutor()
    from .cluster import DaskExecutor, connect  # noqa: PLC0415  (Dask only when asked for)

    return DaskExecutor(connect(address, backend=backend, log=log))
