"""Training loop: SGD with momentum, a history, atomic checkpoints, resume, guard rails.

``train(model, cache, config)`` trains ``model`` on ``cache.split("train")`` and evaluates on
a fixed subset of train and on all of ``cache.split("valid")`` after every epoch and every
``eval_every`` steps. Files in ``config.out_dir`` (all written atomically):

    history.json     the history (layout below), rewritten at every evaluation/checkpoint
    checkpoint.npz   model + optimizer (momentum) + step + random state + history, every
                     ``checkpoint_every`` steps, at the end of every epoch, on Ctrl+C or
                     SIGTERM and at the end; ``mc.load_model`` reads it as a model file too
    best.npz         the model with the best valid per-image accuracy so far
    last.npz         the model at the end of training
    predictions.npz  ``valid``: P(normal) of every valid image (split order) by the final
                     model, and ``step``; what the paired statistics of the report compare
    .lock            while a process trains there (``locks``): a second one is refused

The run folder: a run goes into an empty (or new) folder, resumes the run in it
(``resume``: same settings and data, checked against its checkpoint; only the length, the
learning rate and bookkeeping may change), or replaces it (``overwrite``: the earlier run's
files are removed before the first step, so old and new files never mix). Anything else is
refused before any work (``check_run_folder``).

Determinism: the data order depends only on (seed, epoch), augmentation on (seed, epoch,
batch), dropout on a counter-based stream, so the same seed on NumPy gives the same history
run after run, and a resumed run (``resume=True``) continues with the very batches, masks and
weights the uninterrupted run would have used. Batches are read and standardized one step
ahead in a background thread (``data.prefetch``), which changes when they are read, not which.
``timing.time_per_step_s`` counts from asking for a step's batch to the end of its update
(any wait for data included; evaluations are ``eval_s``, checkpoints are not timed), averaged
over every step, the first included: that one pays what a process does once (on a GPU, the
kernels' compilation or loading, the memory pool's growth), up to seconds. The steady pace is
``median_step_s`` (this session's steps; ``first_step_s`` is its first).

History layout (``history.json``; ``evals[i]["train"|"valid"]`` are ``metrics.metric_table``
dicts)::

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
     "lr_changes": [{"step", "lr_from", "lr_to"}, ...] (learning rates changed on resume),
     "evals": [{"step", "epoch" (float, step / steps_per_epoch), "epoch_end": bool, "lr",
                "train": table, "valid": table}, ...],
     "best": null | {"step", "epoch", "valid_image_accuracy", "file" (in out_dir)},
     "timing": {"wall_s", "train_s", "eval_s", "steps_timed", "time_per_step_s",
                "images_per_s", "median_step_s", "first_step_s"},
     "versions": {"python", "numpy", "mura_core"}}

Everything except ``timing`` is identical between two runs with the same seed on NumPy.
``load_history`` reads a "running" history whose process is gone as "killed".
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import metrics
from .checkpoint import (check_same_model, read_checkpoint, restore_checkpoint,
                         save_checkpoint)
from .data.batches import iterate_batches, num_batches
from .data.prefetch import Prefetcher
from .evaluation import predict_split, score_split, split_rows, train_eval_indices
from .files import atomic_write_text, check_writable_folder, remove_stale_temp_files
from .locks import hold_folder, process_alive
from .nn.backend import device_name, shared_buffer, to_numpy
from .nn.models import loss_and_grads_deferred
from .nn.optim import SGD
from .nn.serialization import atomic_save_npz, read_model_header, save_model
from .signals import StopDeferral, Stopped

HISTORY_FORMAT = "mura_core.history/1"
SCHEDULES = ("none", "step", "plateau", "cosine")
CLASS_WEIGHTS = ("none", "mura")
HISTORY_NAME, CHECKPOINT_NAME, BEST_NAME, LAST_NAME = "history.json", "checkpoint.npz", "best.npz", "last.npz"
PREDICTIONS_NAME = "predictions.npz"
#: The files a run leaves in its folder (``diverged.json``: ``experiments``' record of a
#: diverged run). Any of them means the folder holds a run.
RUN_FILES = (HISTORY_NAME, CHECKPOINT_NAME, BEST_NAME, LAST_NAME, PREDICTIONS_NAME,
             "diverged.json")

#: Batches read ahead of the step that uses them (one waits in the queue, one is being read).
PREFETCH_DEPTH = 1

#: Config fields a resumed run may change; every other one must match the checkpoint, since
#: it decides the data order or the updates. The learning rate may change on purpose (e.g.
#: lower, after a divergence): from the checkpoint's step on, recorded in ``lr_changes``.
RESUMABLE_CHANGES = ("epochs", "steps", "progress", "checkpoint_every", "out_dir", "eval_batch_size",
                     "lr")


class TrainingDiverged(FloatingPointError):
    """The loss, a gradient, a weight or an evaluated probability became NaN or infinite; the
    message names the step and lr."""

    def __init__(self, message: str, step: int, lr: float):
        super().__init__(message)
        self.step = step
        self.lr = lr


def _option(default, help: str, **extra):
    """A config field with the help text its command-line option shows."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    """Settings of one training run (also the ``train`` command's options, with this help).

    Learning-rate schedules: "step" multiplies lr by ``lr_gamma`` every ``lr_step_size``
    steps (default one epoch); "plateau" multiplies it by ``lr_gamma`` when the valid per-image
    accuracy has not improved for more than ``plateau_patience`` evaluations; "cosine" follows
    half a cosine from lr down to ``min_lr`` over the steps after the warm-up; never below
    ``min_lr``. A warm-up (``warmup_steps``) scales the first steps' rate by
    (step + 1) / warmup_steps, so the first updates of a fresh network stay small.
    Evaluation always follows each epoch and the last step. ``seed`` decides the data order,
    augmentation and the train-eval subset (the model has its own seed).
    ``class_weights="mura"`` weighs each train image's loss by MURA's per-body-part class
    weight (``mura_class_weights``); only the training loss changes, the evaluated loss stays
    the plain BCE.
    """

    epochs: int = _option(1, "passes over train (ignored when --steps is given)")
    steps: int | None = _option(None, "total SGD steps (overrides --epochs)")
    batch_size: int = _option(32, "images per SGD step")
    lr: float = _option(0.002, "learning rate")
    momentum: float = _option(0.9, "SGD momentum, in [0, 1)")
    weight_decay: float = _option(0.0, "L2 weight decay")
    schedule: str = _option("none", "learning-rate schedule: step (lr x gamma every "
                            "--lr-step-size steps, default one epoch), plateau (lr x gamma when "
                            "valid accuracy stalls for more than --plateau-patience evaluations) "
                            "or cosine (half a cosine down to --min-lr)", choices=SCHEDULES)
    lr_gamma: float = _option(0.1, "factor of a schedule's learning-rate drop")
    lr_step_size: int | None = _option(None, "steps between drops of the step schedule")
    plateau_patience: int = _option(2, "evaluations without improvement before a plateau drop")
    min_lr: float = _option(0.0, "the schedules' lowest learning rate")
    warmup_steps: int = _option(0, "linear learning-rate warm-up over the first N steps")
    eval_every: int | None = _option(None, "also evaluate every N steps")
    train_eval_size: int | None = _option(2000, "train images (whole patients) scored at each "
                                          "evaluation; none or 0: all of train")
    eval_batch_size: int = _option(64, "images per evaluation batch")
    checkpoint_every: int | None = _option(None, "also checkpoint every N steps")
    out_dir: str | None = _option(None, "run folder for history.json, checkpoint.npz, best.npz "
                                  "and last.npz, e.g. runs/baseline")
    seed: int = _option(0, "data order, augmentation and the train-eval subset")
    augment: bool = _option(False, "random flips and rotations in training")
    class_weights: str = _option("none", "loss weights: none (plain BCE) or mura (per body part, "
                                 "abnormal images weigh N/(A+N) and normal ones A/(A+N), with A and "
                                 "N its abnormal and normal train images)", choices=CLASS_WEIGHTS)
    progress: bool = _option(True, "show a progress bar")
    resume: bool = _option(False, "continue the run in --out from its checkpoint (with the same "
                           "settings and data; --lr may change)")
    overwrite: bool = _option(False, "start afresh even though --out holds a run (its files "
                              "are removed first)")

    def __post_init__(self):
        if self.train_eval_size == 0:
            self.train_eval_size = None

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        def positive_int(name, value, allow_none=False):
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

        positive_int("batch_size", self.batch_size)
        if self.steps is None:
            positive_int("epochs", self.epochs)
        positive_int("steps", self.steps, allow_none=True)
        positive_int("eval_every", self.eval_every, allow_none=True)
        positive_int("checkpoint_every", self.checkpoint_every, allow_none=True)
        positive_int("train_eval_size", self.train_eval_size, allow_none=True)
        positive_int("eval_batch_size", self.eval_batch_size)
        positive_int("lr_step_size", self.lr_step_size, allow_none=True)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"learning rate must be a positive number, got {self.lr!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not self.weight_decay >= 0.0:
            raise ValueError(f"weight decay must be >= 0, got {self.weight_decay!r}")
        if self.class_weights not in CLASS_WEIGHTS:
            raise ValueError(f"class_weights must be one of {', '.join(CLASS_WEIGHTS)}, "
                             f"got {self.class_weights!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0.0 < self.lr_gamma <= 1.0:
            raise ValueError(f"lr_gamma must be in (0, 1], got {self.lr_gamma!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, (int, np.integer)) \
                or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a whole number >= 0, got {self.warmup_steps!r}")
        if self.plateau_patience < 0:
            raise ValueError(f"plateau_patience must be >= 0, got {self.plateau_patience!r}")
        if (self.resume or self.checkpoint_every) and self.out_dir is None:
            raise ValueError("resume and checkpoint_every need an out_dir")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other: continue the run in "
                             "out_dir, or replace it")


def mura_class_weights(labels, body_parts) -> tuple[np.ndarray, dict]:
    """MURA's loss weights (Rajpurkar et al., 2017), one per train image.

    For each body part T with A_T abnormal and N_T normal images (labels: 1 normal, 0
    abnormal), an abnormal image weighs w(abnormal) = N_T / (A_T + N_T) and a normal one
    w(normal) = A_T / (A_T + N_T): the two classes of a body part carry the same total weight
    (a body part with images of one class only gives them weight 0, as the formula says).
    Returns (weights (N,) float32, {body part: {"abnormal": w, "normal": w, "n_abnormal": A_T,
    "n_normal": N_T}}).
    """
    labels = np.asarray(labels).reshape(-1)
    parts = np.asarray(body_parts).reshape(-1)
    if labels.shape != parts.shape:
        raise ValueError(f"{len(labels)} labels for {len(parts)} body parts")
    weights = np.zeros(len(labels), dtype=np.float32)
    table = {}
    for part in np.unique(parts).tolist():
        rows = parts == part
        normal = rows & (labels == 1)
        n_normal, n_abnormal = int(normal.sum()), int(rows.sum() - normal.sum())
        total = n_normal + n_abnormal
        table[part] = {"abnormal": n_normal / total, "normal": n_abnormal / total,
                       "n_abnormal": n_abnormal, "n_normal": n_normal}
        weights[normal] = table[part]["normal"]
        weights[rows & ~normal] = table[part]["abnormal"]
    return weights, table


@dataclass
class TrainResult:
    """What ``train`` returns: the history (also in out_dir/history.json) and the paths."""

    history: dict
    model: object
    out_dir: Path | None
    checkpoint_path: Path | None = None
    best_path: Path | None = None
    last_path: Path | None = None

    @property
    def last_eval(self) -> dict | None:
        return self.history["evals"][-1] if self.history["evals"] else None


@dataclass
class _State:
    """Everything that changes during training and goes into a checkpoint."""

    step: int = 0
    lr: float = 0.0
    plateau_best: float = -1.0
    plateau_bad: int = 0
    best_accuracy: float = -1.0
    history: dict = field(default_factory=dict)


def _versions() -> dict:
    from . import __version__
    return {"python": platform.python_version(), "numpy": np.__version__, "mura_core": __version__}


def _grads_total(grads: dict, xp):
    """The sum of every gradient entry, as a 0-d array: non-finite when any entry is NaN or
    inf. Gradients packed in one buffer (``Layer.pack``; the gaps are zero) are summed in
    one reduction."""
    packed = shared_buffer(list(grads.values()))
    if packed is not None:
        return xp.sum(packed[0])
    return sum(xp.sum(g) for g in grads.values())


def _params_finite(params: dict, xp) -> bool:
    return all(bool(xp.isfinite(p).all()) for p in params.values())


def _shown(before, after) -> str:
    """The text 'before -> after'; numbers to 6 digits unless that hides their difference."""
    if isinstance(before, float) and isinstance(after, float) and f"{before:.6g}" != f"{after:.6g}":
        return f"{before:.6g} -> {after:.6g}"
    return f"{before} -> {after}"


def _this_process() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def earlier_run_files(out_dir) -> list[str]:
    """The RUN_FILES present in ``out_dir`` (none when it does not exist)."""
    folder = Path(out_dir)
    return [name for name in RUN_FILES if (folder / name).exists()]


def check_run_folder(out_dir, resume: bool = False, overwrite: bool = False) -> list[str]:
    """Refuse a run folder this run may not use; return the earlier run's files in it.

    Allowed: a new or empty folder; a folder holding a run, with ``resume`` (its checkpoint
    continues) or ``overwrite`` (its files go). Refused with FileExistsError saying what to
    do: an earlier run's files without either option, ``resume`` of a run that has no
    checkpoint, and a fresh run beside files that are not a run's (a run never writes beside
    a user's files; hidden files such as the lock are ignored)."""
    folder = Path(out_dir)
    if not folder.exists():
        return []
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file, not a run folder; choose another out_dir")
    found = earlier_run_files(folder)
    listed = ", ".join(found)
    if resume and CHECKPOINT_NAME in found:
        return found
    if resume and found:
        raise FileExistsError(
            f"{folder} holds a run with no checkpoint to resume from ({listed}): it stopped before "
            "its first checkpoint; start it afresh (--overwrite, overwrite=True) or use another out_dir")
    if found and not overwrite:
        raise FileExistsError(
            f"{folder} already holds a run ({listed}); resume it (--resume, resume=True), start "
            "afresh (--overwrite, overwrite=True) or choose another out_dir")
    foreign = sorted(p.name for p in folder.iterdir()
                     if not p.name.startswith(".") and p.name not in RUN_FILES)
    if foreign:
        more = ", ..." if len(foreign) > 3 else ""
        raise FileExistsError(
            f"{folder} holds files that are not a run's ({', '.join(foreign[:3])}{more}); a run "
            "goes into a new or empty folder: choose another out_dir")
    return found


class Trainer:
    """One training run; ``train()`` is the usual entry point. See the module docstring.

    ``run`` is the loop; each of its steps is a method: ``_start`` (resume or refuse, new
    history), ``_train_step`` (one SGD update), ``_after_step`` (bookkeeping), ``_evaluate``,
    ``_save_checkpoint``, and on the way out ``_on_interrupt``, ``_on_divergence``,
    ``_on_failure``, ``_finish``. ``run`` holds the run folder's lock throughout.
    """

    def __init__(self, model, cache, config: TrainConfig,
                 on_step: Callable[[int, float], None] | None = None):
        config.validate()
        self.model, self.cache, self.config, self.on_step = model, cache, config, on_step
        self.train_split = cache.split("train")
        self.valid_split = cache.split("valid")
        n_train = len(self.train_split.labels)
        if config.batch_size > n_train:
            raise ValueError(f"batch size {config.batch_size} is larger than the {n_train} train "
                             "images; use a batch size of at most that")
        if len(self.valid_split.labels) == 0:
            raise ValueError("the valid split is empty; training needs it for evaluation")
        size = model.spec["input_size"]
        if int(cache.size) != int(size):
            raise ValueError(f"the cache holds {cache.size}x{cache.size} images but the model "
                             f"expects {size}x{size}; build the cache with size={size}")
        self.mean, self.std = float(cache.mean), float(cache.std)
        self.steps_per_epoch = num_batches(n_train, config.batch_size, drop_last=True)
        self.total_steps = config.steps if config.steps is not None else config.epochs * self.steps_per_epoch
        self.eval_rows = train_eval_indices(self.train_split, config.train_eval_size, config.seed)
        self.majority = metrics.majority_class(self.train_split.labels)
        self.example_weights, self.class_weight_table = None, None
        if config.class_weights == "mura":
            self.example_weights, self.class_weight_table = mura_class_weights(
                self.train_split.labels, self.train_split.body_parts)
        self.out_dir = Path(config.out_dir) if config.out_dir is not None else None
        self.opt = SGD(model.parameters(), config.lr, config.momentum, config.weight_decay)
        self.state = _State(lr=float(config.lr))
        self._train_s = self._eval_s = 0.0
        self._steps_timed = 0
        self._step_seconds: list[float] = []  # every step of this session
        self._checkpoint_step = None
        self._smooth_loss = None
        self._valid_probs = None  # of the latest evaluation

    # --- files ---------------------------------------------------------------------------
    def _path(self, name: str) -> Path | None:
        return None if self.out_dir is None else self.out_dir / name

    def _new_history(self) -> dict:
        m, c = self.model, self.cache
        return {
            "format": HISTORY_FORMAT,
            "status": "running",
            "error": None,
            "config": dataclasses.asdict(self.config),
            "model": {"arch": m.spec["arch"], "spec": m.spec, "num_parameters": int(m.num_parameters()),
                      "backend": m.backend, "device": device_name(m.backend)},
            "data": {**self._data_identity(), "size": int(c.size), "mode": str(c.mode),
                     "n_train": len(self.train_split.labels),
                     "n_valid": len(self.valid_split.labels),
                     "train_eval_images": int(len(self.eval_rows)),
                     "train_eval_patients": int(len(np.unique(np.asarray(self.train_split.patient_ids)[self.eval_rows]))),
                     "majority_class": self.majority,
                     "class_weights": self.class_weight_table},
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "step": 0,
            "epoch": 0.0,
            "loss": [],
            "lr": [],
            "lr_changes": [],
            "evals": [],
            "best": None,
            "timing": {},
            "versions": _versions(),
        }

    def _data_identity(self) -> dict:
        """What a resumed run's data must match: the folder, the cache's content key (file
        list with sizes and mtimes, preprocessing) and the train mean/std."""
        c = self.cache
        key = getattr(c, "key", None)
        return {"root": str(getattr(c, "root", "")), "cache_key": None if key is None else str(key),
                "mean": self.mean, "std": self.std}

    def _update_timing(self) -> None:
        h = self.state.history
        prior = h.get("timing") or {}
        train_s = prior.get("train_s", 0.0) + self._train_s
        eval_s = prior.get("eval_s", 0.0) + self._eval_s
        steps = prior.get("steps_timed", 0) + self._steps_timed
        self._train_s = self._eval_s = 0.0
        self._steps_timed = 0
        per_step = train_s / steps if steps else None
        h["timing"] = {
            "wall_s": train_s + eval_s,
            "train_s": train_s,
            "eval_s": eval_s,
            "steps_timed": steps,
            "time_per_step_s": per_step,
            "images_per_s": self.config.batch_size / per_step if per_step else None,
            "median_step_s": (float(np.median(self._step_seconds)) if self._step_seconds
                              else prior.get("median_step_s")),
            "first_step_s": (self._step_seconds[0] if self._step_seconds
                             else prior.get("first_step_s")),
        }

    def _write_history(self) -> None:
        self._update_timing()
        path = self._path(HISTORY_NAME)
        if path is not None:
            atomic_write_text(path, json.dumps(self.state.history, indent=1, allow_nan=False))

    def _stamp_metadata(self) -> None:
        meta = self.model.metadata
        meta["preprocessing"] = {"size": int(self.cache.size), "mode": str(self.cache.mode),
                                 "mean": self.mean, "std": self.std}
        meta["output"] = "P(normal): 1 normal, 0 abnormal; normal when >= 0.5"
        meta["trained"] = {"step": self.state.step, "epoch": self.state.step / self.steps_per_epoch,
                           "seed": self.config.seed, "data_root": str(getattr(self.cache, "root", ""))}

    def _save_checkpoint(self) -> None:
        path = self._path(CHECKPOINT_NAME)
        if path is None:
            return
        if not _params_finite(self.model.parameters(), self.model.xp):
            raise self._diverged("a weight", "non-finite", self.state.step)
        self._stamp_metadata()
        s = self.state
        s.history["step"] = s.step
        s.history["epoch"] = s.step / self.steps_per_epoch
        self._write_history()
        save_checkpoint(path, self.model, self.opt, {
            "step": s.step, "lr": s.lr, "plateau_best": s.plateau_best,
            "plateau_bad": s.plateau_bad, "best_accuracy": s.best_accuracy,
            "config": dataclasses.asdict(self.config), "history": s.history})
        self._checkpoint_step = s.step

    def _restore(self, path: Path) -> None:
        """Continue from the checkpoint ``path``: same settings (but RESUMABLE_CHANGES), same
        model, same data; ValueError naming the difference otherwise, before any state moves."""
        checkpoint = read_checkpoint(path)
        # A setting added after the checkpoint was written ran at its default.
        saved = {**dataclasses.asdict(TrainConfig()), **checkpoint.state["config"]}
        mine = dataclasses.asdict(self.config)
        changed = [k for k in mine if k not in RESUMABLE_CHANGES + ("resume", "overwrite")
                   and saved.get(k) != mine[k]]
        if changed:
            detail = ", ".join(f"{k}: {saved.get(k)!r} -> {mine[k]!r}" for k in changed)
            raise ValueError(f"cannot resume {path} with other settings ({detail}): they change the "
                             "data order or the updates; resume with the run's settings or use another out_dir")
        check_same_model(checkpoint, self.model)
        self._check_same_data(path, checkpoint.state["history"].get("data") or {})
        restore_checkpoint(checkpoint, self.model, self.opt)
        meta, s = checkpoint.state, self.state
        s.step, s.lr = int(meta["step"]), float(meta["lr"])
        s.plateau_best, s.plateau_bad = float(meta["plateau_best"]), int(meta["plateau_bad"])
        s.best_accuracy = float(meta["best_accuracy"])
        s.history = meta["history"]
        s.history["config"] = mine
        s.history["total_steps"] = self.total_steps
        s.history["status"], s.history["error"] = "running", None
        s.history["data"].update(self._data_identity())  # adds the cache key to older runs
        self._checkpoint_step = s.step
        if float(saved["lr"]) != float(self.config.lr):
            self._change_lr(float(self.config.lr))

    def _check_same_data(self, path: Path, saved: dict) -> None:
        """Refuse to resume on other data than the checkpoint's: another folder, other files
        (the cache key) or other statistics would continue the run on another problem."""
        mine = self._data_identity()
        labels = {"root": "data root", "cache_key": "cache key", "mean": "train mean", "std": "train std"}
        shown = {**mine, "cache_key": str(mine["cache_key"])[:12]}  # a hash: its start will do
        saved_shown = {**saved, "cache_key": str(saved.get("cache_key"))[:12]}
        changed = [f"{label} {_shown(saved_shown[k], shown[k])}" for k, label in labels.items()
                   if saved.get(k) is not None and saved[k] != mine[k]]
        if changed:
            raise ValueError(
                f"cannot resume {path}: it was trained on other data ({'; '.join(changed)}); resume "
                f"with the run's data (--data {saved.get('root')}), or start afresh with --overwrite "
                "(overwrite=True) or in another out_dir")

    def _change_lr(self, lr: float) -> None:
        """Resume at learning rate ``lr`` instead of the checkpoint's (a schedule goes on from
        it); recorded in the history. A best.npz saved after the checkpoint's step comes from
        the steps now retaken at another rate: it goes, and the best is tracked afresh."""
        s = self.state
        s.history.setdefault("lr_changes", []).append({"step": s.step, "lr_from": s.lr, "lr_to": lr})
        s.lr = lr
        best = self._path(BEST_NAME)
        saved_at = _trained_step(best) if best.exists() else None
        if best.exists() and (saved_at is None or saved_at > s.step):
            best.unlink()
            s.best_accuracy, s.history["best"] = -1.0, None
            print(f"note: removed {best}: it was saved after step {s.step}, on the steps now "
                  f"retaken at learning rate {lr:g}")

    # --- pieces of a step ----------------------------------------------------------------
    def _scheduled_lr(self) -> float:
        """The learning rate of the step about to run: the schedule's, times the warm-up."""
        c, s = self.config, self.state
        if c.schedule == "step":
            every = c.lr_step_size or self.steps_per_epoch
            lr = max(c.lr * c.lr_gamma ** (s.step // every), c.min_lr)
        elif c.schedule == "cosine":
            span = max(1, self.total_steps - c.warmup_steps)
            done = min(1.0, max(0, s.step - c.warmup_steps) / span)
            lr = c.min_lr + (c.lr - c.min_lr) * 0.5 * (1.0 + math.cos(math.pi * done))
        else:
            lr = s.lr  # "none" keeps the configured rate; "plateau" lowers it at evaluations
        if s.step < c.warmup_steps:
            lr *= (s.step + 1) / c.warmup_steps
        return lr

    def _diverged(self, what: str, value, step: int) -> TrainingDiverged:
        lr = self.opt.lr
        ckpt = self._path(CHECKPOINT_NAME)
        if ckpt is not None and self._checkpoint_step is not None:
            kept = f"the last good checkpoint, {ckpt} (step {self._checkpoint_step}), is kept"
            how = f"resume from it at that rate (--resume --lr {lr / 10:g}) or train afresh (--overwrite)"
        else:
            kept = "no checkpoint had been written yet"
            how = "train afresh (--overwrite)"
        return TrainingDiverged(
            f"training diverged: {what} is {value} at step {step} (learning rate {lr:g}); training "
            f"stopped and {kept}. Lower the learning rate (e.g. {lr / 10:g}): {how}.", step, lr)

    def _evaluate_split(self, split, indices: np.ndarray | None) -> tuple[np.ndarray, dict]:
        rows = split_rows(split, indices)
        # An update can blow the weights up after its own loss was computed, so the evaluation
        # right after it is the first to see them: stop here with the loss guard's message.
        with np.errstate(over="ignore", invalid="ignore"):
            probs = predict_split(self.model, split, self.mean, self.std, self.config.eval_batch_size, rows)
        if not np.isfinite(probs).all():
            raise self._diverged(f"the predicted probability on {split.name}", "non-finite", self.state.step)
        return probs, score_split(probs, split, rows, self.majority)

    def _evaluate(self, epoch_end: bool) -> None:
        start = time.perf_counter()
        c, s = self.config, self.state
        if not _params_finite(self.model.parameters(), self.model.xp):
            raise self._diverged("a weight", "non-finite", s.step)
        _, train_table = self._evaluate_split(self.train_split, self.eval_rows)
        self._valid_probs, valid_table = self._evaluate_split(self.valid_split, None)
        point = {"step": s.step, "epoch": s.step / self.steps_per_epoch, "epoch_end": epoch_end,
                 "lr": self.opt.lr, "train": train_table, "valid": valid_table}
        s.history["evals"].append(point)
        accuracy = valid_table["image_accuracy"]
        if accuracy > s.best_accuracy:
            self._save_best(point, valid_table)
        if c.schedule == "plateau":
            if accuracy > s.plateau_best:
                s.plateau_best, s.plateau_bad = accuracy, 0
            else:
                s.plateau_bad += 1
                if s.plateau_bad > c.plateau_patience:
                    s.lr = max(s.lr * c.lr_gamma, c.min_lr)
                    s.plateau_bad = 0
        self._eval_s += time.perf_counter() - start

    def _save_best(self, point: dict, valid_table: dict) -> None:
        s = self.state
        s.best_accuracy = valid_table["image_accuracy"]
        best = self._path(BEST_NAME)
        s.history["best"] = {"step": s.step, "epoch": point["epoch"],
                             "valid_image_accuracy": s.best_accuracy,
                             "file": None if best is None else best.name}
        if best is not None:
            self._stamp_metadata()
            self.model.metadata["valid"] = {k: valid_table[k] for k in (
                "image_accuracy", "patient_accuracy", "study_accuracy", "study_kappa")}
            save_model(self.model, best)
            self.model.metadata.pop("valid")

    def _save_predictions(self) -> None:
        """predictions.npz: the final model's P(normal) for every valid image."""
        if self._valid_probs is None:  # resumed after the last evaluation: predict again
            self._valid_probs, _ = self._evaluate_split(self.valid_split, None)
        atomic_save_npz(self._path(PREDICTIONS_NAME), {
            "valid": self._valid_probs.astype(np.float32), "step": np.int64(self.state.step)})

    def _train_step(self, batch) -> float:
        """One SGD update on ``batch``; the loss. Raises TrainingDiverged on a non-finite loss
        or gradient, before the update touches the weights."""
        s = self.state
        self.opt.lr = self._scheduled_lr()
        # Overflow is caught below, with a message that says what to do.
        with np.errstate(over="ignore", invalid="ignore"):
            weights = None if self.example_weights is None else self.example_weights[batch.index]
            loss, grads = loss_and_grads_deferred(self.model, batch.x, batch.t, training=True,
                                                  weights=weights)
            # the loss and the gradients' total read at once: on a GPU, one wait per step
            xp = self.model.xp
            loss, grads_total = (float(v) for v in to_numpy(
                xp.stack([loss, _grads_total(grads, xp)])))
        if not math.isfinite(loss):
            raise self._diverged("the loss", loss, s.step + 1)
        if not math.isfinite(grads_total):
            raise self._diverged("a gradient", "non-finite", s.step + 1)
        self.opt.step(grads)
        s.step += 1
        s.history["loss"].append(float(loss))
        s.history["lr"].append(self.opt.lr)
        return float(loss)

    def _after_step(self, loss: float, seconds: float, bar) -> None:
        self._train_s += seconds
        self._steps_timed += 1
        self._step_seconds.append(seconds)
        self._smooth_loss = loss if self._smooth_loss is None else 0.9 * self._smooth_loss + 0.1 * loss
        bar.set_postfix(loss=f"{self._smooth_loss:.4f}", lr=f"{self.opt.lr:.3g}",
                        img_s=f"{self.config.batch_size / max(seconds, 1e-9):.1f}", refresh=False)
        bar.update(1)
        if self.on_step is not None:
            self.on_step(self.state.step, loss)

    def _batches(self):
        """The batches of the remaining steps, epoch after epoch (a resumed run starts
        mid-epoch). Where to start is read here, in the caller's thread; the generator
        returned runs in the prefetch thread and reads nothing the loop changes."""
        c = self.config
        epoch, first = divmod(self.state.step, self.steps_per_epoch)
        remaining = self.total_steps - self.state.step
        to_device = self._batch_mover()

        def batches(epoch, first, remaining):
            while remaining > 0:
                for batch in iterate_batches(self.train_split, c.batch_size, mean=self.mean,
                                             std=self.std, shuffle=True, seed=c.seed,
                                             epoch=epoch, augment=c.augment, drop_last=True,
                                             start_batch=first):
                    yield to_device(batch)
                    remaining -= 1
                    if remaining == 0:
                        return
                epoch, first = epoch + 1, 0

        return batches(epoch, first, remaining)

    def _batch_mover(self):
        """What moves a batch to the model's device, run in the prefetch thread, so that the
        copy (6.6 MB at 227 and batch 32) overlaps the current step. On a GPU the copy runs
        on a stream of its own, which the steps' kernels do not wait behind, and the batch is
        handed over only once it has arrived. Its memory comes from CuPy's pool for that
        stream, which may hand it out again once the trainer drops the batch; the trainer
        drops a batch only after the step that reads it has been waited for (its loss is
        read), so a later copy never overwrites data in use. The device is read here, in the
        caller's thread."""
        xp = self.model.xp
        if xp is np:
            return lambda batch: batch
        device = xp.cuda.Device()
        with device:
            stream = xp.cuda.Stream(non_blocking=True)

        def move(batch):
            with device, stream:
                moved = batch._replace(x=xp.asarray(batch.x), t=xp.asarray(batch.t))
            stream.synchronize()
            return moved

        return move

    def _due(self, every: int | None) -> bool:
        """True after the last step, at an epoch end, or every ``every`` steps."""
        step = self.state.step
        return (step == self.total_steps or step % self.steps_per_epoch == 0
                or bool(every and step % every == 0))

    # --- the loop ------------------------------------------------------------------------
    def _hold_run_folder(self):
        """The run folder's lock for the whole run (nothing when there is no out_dir); the
        folder is checked for writability first, so a read-only one fails before any step."""
        if self.out_dir is None:
            return contextlib.nullcontext()
        check_writable_folder(self.out_dir, "run folder")
        return hold_folder(self.out_dir, "run folder")

    def _start(self) -> None:
        """In the locked run folder: remove what a killed writer left, then resume the run
        there, or replace it, or start afresh; refuse anything else (``check_run_folder``)."""
        c, s = self.config, self.state
        if self.out_dir is not None:
            remove_stale_temp_files(self.out_dir)
            found = check_run_folder(self.out_dir, c.resume, c.overwrite)
            if c.resume and found:
                self._restore(self._path(CHECKPOINT_NAME))
            elif found:
                self._remove_earlier_run(found)
        if not s.history:
            s.history = self._new_history()
        s.history["process"] = _this_process()

    def _remove_earlier_run(self, names: list[str]) -> None:
        # Before the first step, so no file of the earlier run is left beside the new run's,
        # even if the new run diverges or is killed at once.
        for name in names:
            self._path(name).unlink(missing_ok=True)
        print(f"overwrite: removed the earlier run's {', '.join(names)} from {self.out_dir}")

    def run(self) -> TrainResult:
        with self._hold_run_folder():
            return self._run_locked()

    def _run_locked(self) -> TrainResult:
        from tqdm.auto import tqdm  # noqa: PLC0415

        s = self.state
        bar = None
        stop = StopDeferral()  # before _start: a signal during it stops after one step
        try:
            with stop:
                self._start()
                bar = tqdm(total=self.total_steps, initial=s.step, desc=f"train {self.model.spec['arch']}",
                           unit="step", disable=not self.config.progress, dynamic_ncols=True)
                # The next batch is read and standardized in a background thread during each
                # step.
                with Prefetcher(self._batches(), depth=PREFETCH_DEPTH) as batches:
                    # A step's time runs from asking for its batch to the end of its update,
                    # so any wait for data counts; evaluations are timed apart, checkpoints not.
                    start = time.perf_counter()
                    for batch in batches:
                        loss = self._train_step(batch)
                        self._after_step(loss, time.perf_counter() - start, bar)
                        if self._due(self.config.eval_every):
                            self._evaluate(epoch_end=s.step % self.steps_per_epoch == 0)
                            self._write_history()
                        if self._due(self.config.checkpoint_every):
                            self._save_checkpoint()
                        if stop.requested is not None:
                            raise Stopped(stop.requested)
                        start = time.perf_counter()
        except KeyboardInterrupt:
            if bar is not None:
                bar.close()
            self._on_interrupt(forced=stop.forced)
            raise
        except TrainingDiverged as exc:
            self._on_divergence(exc)
            raise
        except Exception as exc:
            self._on_failure(exc)
            raise
        finally:
            if bar is not None:
                bar.close()
        return self._finish()

    def _end_history(self, status: str, error: str | None = None) -> dict:
        """Mark the history ended with ``status``: no process runs it any more."""
        h = self.state.history
        h["status"], h["error"] = status, error
        h.pop("process", None)
        return h

    def _on_interrupt(self, forced: bool) -> None:
        """Ctrl+C or SIGTERM: checkpoint the step just finished (unless ``forced``: a second
        signal may have cut an update in half, so the last checkpoint stays the one to resume
        from) and mark the history "interrupted"."""
        s = self.state
        if not s.history or (s.step == 0 and self._checkpoint_step is None):
            print("interrupted before the first step; nothing was written")
            return
        self._end_history("interrupted")
        if forced:
            # Stopped at once, maybe in the middle of an update: keep the last checkpoint, and
            # the history on disk, which was written with it or at an evaluation since.
            kept = f"; the checkpoint of step {self._checkpoint_step} is kept" if self._checkpoint_step else ""
            print(f"stopped at once during step {s.step + 1}{kept}")
            self._mark_history_on_disk("interrupted")
        elif self._checkpoint_step != s.step:
            self._save_checkpoint()
        else:
            self._write_history()
        ckpt = self._path(CHECKPOINT_NAME)
        where = f"; resume from {ckpt}" if ckpt is not None and self._checkpoint_step is not None else ""
        print(f"interrupted at step {s.step} of {self.total_steps}{where}")

    def _mark_history_on_disk(self, status: str) -> None:
        """Set the status of the history.json on disk, leaving the rest as it was written."""
        path = self._path(HISTORY_NAME)
        if path is None or not path.exists():
            return
        history = json.loads(path.read_text())
        history["status"] = status
        history.pop("process", None)
        atomic_write_text(path, json.dumps(history, indent=1, allow_nan=False))

    def _on_divergence(self, exc: TrainingDiverged) -> None:
        self._end_history("diverged", str(exc))
        self._write_history()

    def _on_failure(self, exc: Exception) -> None:
        """Any other error: the history says the run failed and why, instead of "running"."""
        if not self.state.history:
            return
        self._end_history("failed", f"{exc.__class__.__name__}: {exc}")
        try:
            self._write_history()
        except OSError:
            pass  # the error being raised matters more (a full disk, say)

    def _finish(self) -> TrainResult:
        s = self.state
        self._end_history("completed")
        s.history["step"], s.history["epoch"] = s.step, s.step / self.steps_per_epoch
        if self._checkpoint_step != s.step:
            self._save_checkpoint()
        self._stamp_metadata()
        last_path = self._path(LAST_NAME)
        if last_path is not None:
            save_model(self.model, last_path)
            self._save_predictions()
        self._write_history()
        best = s.history["best"]
        return TrainResult(s.history, self.model, self.out_dir, self._path(CHECKPOINT_NAME),
                           None if best is None or best["file"] is None else self.out_dir / best["file"],
                           last_path)


def train(model, cache, config: TrainConfig | dict | None = None, *,
          on_step: Callable[[int, float], None] | None = None, **overrides) -> TrainResult:
    """Train ``model`` on ``cache`` (a ``data.MuraCache``: ``split("train"|"valid")``, ``mean``,
    ``std``, ``size``, ``mode``) and return a TrainResult whose ``history`` is also written to
    ``out_dir/history.json``.

    config: a TrainConfig, a dict of its fields, or None; keyword overrides win, e.g.
    ``train(model, cache, steps=100, lr=0.01, out_dir="runs/a")``. Every setting is checked
    before any work. on_step(step, loss): called after every step (progress hooks, tests).
    Raises TrainingDiverged on a NaN/inf loss, gradient, weight or evaluated probability;
    re-raises KeyboardInterrupt (``signals.Stopped`` for SIGTERM) after writing a checkpoint;
    FileExistsError when out_dir may not be used (``check_run_folder``); ValueError when a
    resumed run's settings or data differ from its checkpoint's; ``locks.FolderLocked`` when
    another process trains in out_dir; PermissionError when out_dir cannot be written.
    """
    if config is None:
        config = TrainConfig()
    elif isinstance(config, dict):
        config = TrainConfig(**config)
    if overrides:
        config = dataclasses.replace(config, **overrides)
    return Trainer(model, cache, config, on_step=on_step).run()


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


def _trained_step(path: Path) -> int | None:
    """The step a model file of this trainer was saved at; None when it does not say."""
    try:
        trained = (read_model_header(path).get("metadata") or {}).get("trained") or {}
    except ValueError:  # ModelFileError: a damaged file says nothing
        return None
    return trained.get("step")


__all__ = ["RUN_FILES", "TrainConfig", "TrainResult", "Trainer", "TrainingDiverged",
           "check_run_folder", "earlier_run_files", "load_history", "mura_class_weights", "train"]
