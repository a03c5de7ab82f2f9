"""Executors: who trains the runs a notebook asks for.

An executor takes a list of ``experiments.RunSpec`` and returns their ``experiments.Run`` in
the same order. Runs are independent and stored by their settings, so the order in which
they are trained does not change any number.

- ``LocalExecutor`` (the default): in this process, one run after another.

``make_executor(scheduler)`` turns the ``scheduler`` parameter of the notebooks and of
``python -m mura_core report --scheduler`` into an executor (None: local).
"""
from __future__ import annotations

import platform


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
            run.worker = f"local ({platform.node()})"
            runs.append(run)
        return runs


def make_executor(scheduler: str | None = None):
    """The executor for a ``scheduler`` setting: None or "local" runs in this process."""
    if scheduler in (None, "", "local"):
        return LocalExecutor()
    raise ValueError(f"unknown scheduler {scheduler!r}: leave it out (or 'local') to train in "
                     "this process")
