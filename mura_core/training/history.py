"""A run's history (``history.json``): its layout, the clock of its steps, and reading it.

History layout (``evals[i]["train"|"valid"]`` are ``metrics.metric_table`` dicts)::

    {"format": "mura_core.history/1",
     "status": "running|completed|interrupted|diverged|failed",
     "error": null | str, "config": {...TrainConfig...},
     "process": {"pid", "host", "started"} (only while "running"),
     "model": {"arch", "spec", "num_parameters", "backend", "device"},
     "data": {"root", "cache_key", "size", "mode", "mean", "std", "n_train", "n_valid",
              "train_eval_images", "train_eval_patients", "majority_class",
              "class_weights": null | {body part: {"abnormal", "normal", "n_abnormal",
                                                   "n_normal"}}},
     "steps_per_epoch": int, "total_steps": int, "step": int (steps done), "epoch": float,
     "loss": [float per step], "lr": [float per step],
     "start_loss": float | null (the loss of fixed train images before the first step: the
                   level a good checkpoint's loss stays near, ``divergence.is_good``),
     "lr_changes": [{"step", "lr_from", "lr_to"}, ...] (learning rates changed on resume),
     "evals": [{"step", "epoch" (float, step / steps_per_epoch), "epoch_end": bool, "lr",
                "train": table, "valid": table}, ...],
     "best": null | {"step", "epoch", "valid_study_kappa", "valid_image_accuracy",
                     "file" (in out_dir)} (the best evaluation by valid study kappa),
     "timing": {"wall_s", "train_s", "eval_s", "steps_timed", "time_per_step_s",
                "images_per_s", "median_step_s", "first_step_s"},
     "versions": {"python", "numpy", "mura_core"}}

Everything except ``timing`` is identical between two runs with the same seed on NumPy.
``timing.time_per_step_s`` counts from asking for a step's batch to the end of its update
(any wait for data included; evaluations are ``eval_s``, checkpoints are not timed), averaged
over every step, the first included: that one pays what a process does once (on a GPU, the
kernels' compilation or loading, the memory pool's growth), up to seconds. The steady pace is
``median_step_s`` (this session's steps; ``first_step_s`` is its first).
``load_history`` reads a "running" history whose process is gone as "killed".
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import socket
import time
from pathlib import Path

import numpy as np

from ..files import atomic_write_text
from ..locks import process_alive
from ..nn.backend import device_name
from .runfolder import HISTORY_NAME

HISTORY_FORMAT = "mura_core.history/1"


def versions() -> dict:
    from .. import __version__  # the package imports this module lazily

    return {"python": platform.python_version(), "numpy": np.__version__, "mura_core": __version__}


def this_process() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def new_history(config, model, data: dict, steps_per_epoch: int, total_steps: int) -> dict:
    """The history of a run starting now (layout above); ``data``: its "data" entry."""
    return {
        "format": HISTORY_FORMAT,
        "status": "running",
        "error": None,
        "config": dataclasses.asdict(config),
        "model": {"arch": model.spec["arch"], "spec": model.spec,
                  "num_parameters": int(model.num_parameters()), "backend": model.backend,
                  "device": device_name(model.backend)},
        "data": data,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "step": 0,
        "epoch": 0.0,
        "loss": [],
        "lr": [],
        "lr_changes": [],
        "evals": [],
        "best": None,
        "timing": {},
        "versions": versions(),
    }


def end_history(history: dict, status: str, error: str | None = None) -> dict:
    """Mark ``history`` ended with ``status``: no process runs it any more."""
    history["status"], history["error"] = status, error
    history.pop("process", None)
    return history


def write_history(path, history: dict) -> None:
    """Write ``history`` to ``path`` atomically, as strict JSON (no NaN)."""
    atomic_write_text(path, json.dumps(history, indent=1, allow_nan=False))


def mark_history_on_disk(path, status: str) -> None:
    """Set the status of the history.json at ``path``, leaving the rest as it was written
    (nothing when there is none)."""
    if path is None or not Path(path).exists():
        return
    history = json.loads(Path(path).read_text())
    history["status"] = status
    history.pop("process", None)
    write_history(path, history)


class StepClock:
    """The seconds of this session's steps and evaluations; ``timing(prior)`` adds what it
    measured since the last call to a run's earlier ``timing`` (a resumed run's)."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.step_seconds: list[float] = []  # every step of this session
        self._train_s = self._eval_s = 0.0
        self._steps = 0

    def step(self, seconds: float) -> None:
        self._train_s += seconds
        self._steps += 1
        self.step_seconds.append(seconds)

    def evaluation(self, seconds: float) -> None:
        self._eval_s += seconds

    def timing(self, prior: dict) -> dict:
        prior = prior or {}
        train_s = prior.get("train_s", 0.0) + self._train_s
        eval_s = prior.get("eval_s", 0.0) + self._eval_s
        steps = prior.get("steps_timed", 0) + self._steps
        self._train_s = self._eval_s = 0.0
        self._steps = 0
        per_step = train_s / steps if steps else None
        seconds = self.step_seconds
        return {
            "wall_s": train_s + eval_s,
            "train_s": train_s,
            "eval_s": eval_s,
            "steps_timed": steps,
            "time_per_step_s": per_step,
            "images_per_s": self.batch_size / per_step if per_step else None,
            "median_step_s": float(np.median(seconds)) if seconds else prior.get("median_step_s"),
            "first_step_s": seconds[0] if seconds else prior.get("first_step_s"),
        }


def load_history(path) -> dict:
    """Read a history.json (a path to the file or to its run folder).

    A history still "running" whose process is gone (same host, pid not running) comes back
    with status "killed" and an error saying so: that process ended without a word (SIGKILL,
    out of memory, power loss), and its checkpoint, if any, is where to resume. The file
    itself is left as it is."""
    path = Path(path)
    if path.is_dir():
        path = path / HISTORY_NAME
    with open(path) as fh:
        history = json.load(fh)
    process = history.get("process") or {}
    if history.get("status") == "running" and "pid" in process \
            and process_alive(process["pid"], process.get("host")) is False:
        history["status"] = "killed"
        history["error"] = (f"the process that ran it (pid {process['pid']} on {process.get('host')}, "
                            f"started {process.get('started')}) ended without updating its history "
                            "(killed?); resume from its checkpoint, if any")
    return history
