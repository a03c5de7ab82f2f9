"""Training checkpoints: everything a run needs to continue exactly where it stopped, and
the checks that a run may continue from one (same settings, model and data).

A checkpoint is a model file (``nn.serialization``: ``__model__`` header and ``param/*``
weights, so ``mc.load_model`` reads it as a model) plus:

    __trainer__           JSON: format tag, the trainer's state (step, learning rate, plateau
                          and best-so-far bookkeeping, config, history), the dropout stream's
                          state and the optimizer's hyper-parameters
    opt/velocity/<name>   the momentum buffer of every parameter

written atomically, so a crash leaves the previous checkpoint or the new one, never half.
"""
from __future__ import annotations

import dataclasses
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..nn.serialization import (
    ModelFileError,
    atomic_save_npz,
    json_array,
    load_weights,
    model_arrays,
    read_npz,
)
from .config import RESUMABLE_CHANGES, TrainConfig

CHECKPOINT_FORMAT = "mura_core.checkpoint/1"
VELOCITY = "opt/velocity/"
PARAM = "param/"


@dataclass
class Checkpoint:
    """A checkpoint read back: ``state`` (the trainer's JSON state, with ``rng`` and
    ``optimizer``), ``header`` (the model file header: spec, metadata), weights and
    velocities (name -> NumPy array)."""

    path: Path
    state: dict
    header: dict
    weights: dict
    velocity: dict

    @property
    def spec(self) -> dict:
        return self.header["spec"]


def save_checkpoint(path, model, optimizer, state: dict) -> None:
    """Write ``model`` (weights, spec, metadata), the optimizer's velocities and hyper-
    parameters, the dropout stream and the trainer's ``state`` (JSON-able) to ``path``."""
    opt = optimizer.state_dict()
    meta = {"format": CHECKPOINT_FORMAT, **state, "rng": model.rng_state(),
            "optimizer": {k: opt[k] for k in ("lr", "momentum", "weight_decay")}}
    arrays = model_arrays(model)
    arrays["__trainer__"] = json_array(meta)
    arrays.update({VELOCITY + name: v for name, v in opt["velocity"].items()})
    atomic_save_npz(path, arrays)


def read_checkpoint(path) -> Checkpoint:
    """Read a checkpoint; ValueError (ModelFileError for a damaged one) naming the file."""
    path = Path(path)
    arrays = read_npz(path)
    if "__trainer__" not in arrays:
        raise ValueError(f"{path} is a model file, not a training checkpoint")
    try:
        state = json.loads(str(arrays["__trainer__"]))
        header = json.loads(str(arrays["__model__"]))
    except (KeyError, ValueError) as exc:
        raise ModelFileError(f"{path}: a damaged checkpoint ({exc.__class__.__name__}: {exc})") from None
    weights = {k[len(PARAM):]: v for k, v in arrays.items() if k.startswith(PARAM)}
    velocity = {k[len(VELOCITY):]: v for k, v in arrays.items() if k.startswith(VELOCITY)}
    return Checkpoint(path, state, header, weights, velocity)


def checkpoint_step(path) -> int:
    """The step a checkpoint was written at, read from its trainer state alone (the weights
    stay on disk); ValueError (naming the file) for a model file or a damaged one."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            state = str(f["__trainer__"]) if "__trainer__" in f.files else None
        step = None if state is None else int(json.loads(state)["step"])
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable checkpoint ({exc.__class__.__name__}: "
                         f"{exc}); was it truncated?") from None
    if step is None:
        raise ValueError(f"{path} is a model file, not a training checkpoint")
    return step


def check_steps_left(path, step: int, total_steps: int) -> None:
    """ValueError unless a run whose checkpoint ``path`` is at ``step`` may go on to
    ``total_steps``: a run never ends before the steps it has already taken."""
    if total_steps < step:
        raise ValueError(f"cannot resume {path} for {total_steps} steps in all: the run has "
                         f"done {step} already; give --steps above {step} to train on (or "
                         "start afresh with --overwrite)")


def check_same_model(checkpoint: Checkpoint, model) -> None:
    """ValueError unless ``model`` has the checkpoint's architecture (its own seed only chose
    the initial weights, which the checkpoint replaces)."""
    spec = checkpoint.spec
    if {**spec, "seed": None} != {**model.spec, "seed": None}:
        raise ValueError(f"{checkpoint.path} was written for another model ({spec['arch']}, input "
                         f"{spec['input_size']}, width {spec['width']}); build the same model to "
                         "resume, or train into another out_dir")


def restore_checkpoint(checkpoint: Checkpoint, model, optimizer) -> None:
    """Put the checkpoint's weights, metadata, dropout stream and momentum into ``model`` and
    ``optimizer``; the model must have the checkpoint's architecture (``check_same_model``)."""
    check_same_model(checkpoint, model)
    spec = checkpoint.spec
    model.spec["seed"] = spec["seed"]
    load_weights(model, checkpoint.weights, checkpoint.path)
    model.metadata = dict(checkpoint.header.get("metadata") or {})
    optimizer.load_state_dict({**checkpoint.state["optimizer"], "velocity": checkpoint.velocity})
    model.set_rng_state(checkpoint.state["rng"])


def check_same_settings(checkpoint: Checkpoint, config: TrainConfig) -> None:
    """ValueError naming every setting of ``config`` that differs from the checkpoint's but
    those a resumed run may change (``RESUMABLE_CHANGES``)."""
    # A setting added after the checkpoint was written ran at its default.
    saved = {**dataclasses.asdict(TrainConfig()), **checkpoint.state["config"]}
    mine = dataclasses.asdict(config)
    changed = [k for k in mine if k not in RESUMABLE_CHANGES + ("resume", "overwrite")
               and saved.get(k) != mine[k]]
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {mine[k]!r}" for k in changed)
        raise ValueError(f"cannot resume {checkpoint.path} with other settings ({detail}): they "
                         "change the data order or the updates; resume with the run's settings "
                         "or use another out_dir")


def _shown(before, after) -> str:
    """The text 'before -> after'; numbers to 6 digits unless that hides their difference."""
    if isinstance(before, float) and isinstance(after, float) and f"{before:.6g}" != f"{after:.6g}":
        return f"{before:.6g} -> {after:.6g}"
    return f"{before} -> {after}"


def check_same_data(checkpoint: Checkpoint, mine: dict) -> None:
    """Refuse to resume on other data than the checkpoint's: another folder, other files
    (the cache key) or other statistics would continue the run on another problem. ``mine``:
    this run's {"root", "cache_key", "mean", "std"}."""
    saved = checkpoint.state["history"].get("data") or {}
    labels = {"root": "data root", "cache_key": "cache key", "mean": "train mean", "std": "train std"}
    shown = {**mine, "cache_key": str(mine["cache_key"])[:12]}  # a hash: its start will do
    saved_shown = {**saved, "cache_key": str(saved.get("cache_key"))[:12]}
    changed = [f"{label} {_shown(saved_shown[k], shown[k])}" for k, label in labels.items()
               if saved.get(k) is not None and saved[k] != mine[k]]
    if changed:
        raise ValueError(
            f"cannot resume {checkpoint.path}: it was trained on other data ({'; '.join(changed)}); "
            f"resume with the run's data (--data {saved.get('root')}), or start afresh with "
            "--overwrite (overwrite=True) or in another out_dir")
