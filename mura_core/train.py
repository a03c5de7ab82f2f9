"""Training loop: SGD with momentum, a history, atomic checkpoints, resume, guard rails.

``train(model, cache, config)`` trains ``model`` on ``cache.split("train")`` and evaluates on
a fixed subset of train and on all of ``cache.split("valid")`` after every epoch and every
``eval_every`` steps. Files in ``config.out_dir`` (all written atomically):

    history.json     the history (layout below), rewritten at every evaluation/checkpoint
    checkpoint.npz   model + optimizer (momentum) + step + random state + history, every
                     ``checkpoint_every`` steps, at the end of every epoch, on Ctrl+C and at
                     the end; ``mc.load_model`` reads it as a model file too
    best.npz         the model with the best valid per-image accuracy so far
    last.npz         the model at the end of training

Determinism: the data order depends only on (seed, epoch), augmentation on (seed, epoch,
batch), dropout on a counter-based stream, so the same seed on NumPy gives the same history
run after run, and a resumed run (``resume=True``) continues with the very batches, masks and
weights the uninterrupted run would have used. Batches are read and standardized one step
ahead in a background thread (``data.prefetch``), which changes when they are read, not which.
``timing.time_per_step_s`` counts from asking for a step's batch to the end of its update
(any wait for data included; evaluations are ``eval_s``, checkpoints are not timed).

History layout (``history.json``; ``evals[i]["train"|"valid"]`` are ``metrics.metric_table``
dicts)::

    {"format": "mura_core.history/1", "status": "running|completed|interrupted|diverged",
     "error": null | str, "config": {...TrainConfig...},
     "model": {"arch", "spec", "num_parameters", "backend", "device"},
     "data": {"root", "size", "mode", "mean", "std", "n_train", "n_valid",
              "train_eval_images", "train_eval_patients", "majority_class"},
     "steps_per_epoch": int, "total_steps": int, "step": int (steps done), "epoch": float,
     "loss": [float per step], "lr": [float per step],
     "evals": [{"step", "epoch" (float, step / steps_per_epoch), "epoch_end": bool, "lr",
                "train": table, "valid": table}, ...],
     "best": null | {"step", "epoch", "valid_image_accuracy", "file" (in out_dir)},
     "timing": {"wall_s", "train_s", "eval_s", "steps_timed", "time_per_step_s",
                "images_per_s"},
     "versions": {"python", "numpy", "mura_core"}}

Everything except ``timing`` is identical between two runs with the same seed on NumPy.
"""
from __future__ import annotations

import dataclasses
import json
import math
import platform
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import metrics
from .checkpoint import read_checkpoint, restore_checkpoint, save_checkpoint
from .data.batches import iterate_batches, num_batches
from .data.prefetch import Prefetcher
from .evaluation import predict_split, score_split, split_rows, train_eval_indices
from .files import atomic_write_text
from .nn.backend import device_name
from .nn.models import loss_and_grads
from .nn.optim import SGD
from .nn.serialization import save_model

HISTORY_FORMAT = "mura_core.history/1"
SCHEDULES = ("none", "step", "plateau")
HISTORY_NAME, CHECKPOINT_NAME, BEST_NAME, LAST_NAME = "history.json", "checkpoint.npz", "best.npz", "last.npz"

#: Batches read ahead of the step that uses them (one waits in the queue, one is being read).
PREFETCH_DEPTH = 1

#: Config fields a resumed run may change; every other one must match the checkpoint, since
#: it decides the data order or the updates.
RESUMABLE_CHANGES = ("epochs", "steps", "progress", "checkpoint_every", "out_dir", "eval_batch_size")


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
    accuracy has not improved for more than ``plateau_patience`` evaluations; never below
    ``min_lr``. Evaluation always follows each epoch and the last step. ``seed`` decides the
    data order, augmentation and the train-eval subset (the model has its own seed).
    """

    epochs: int = _option(1, "passes over train (ignored when --steps is given)")
    steps: int | None = _option(None, "total SGD steps (overrides --epochs)")
    batch_size: int = _option(32, "images per SGD step")
    lr: float = _option(0.002, "learning rate")
    momentum: float = _option(0.9, "SGD momentum, in [0, 1)")
    weight_decay: float = _option(0.0, "L2 weight decay")
    schedule: str = _option("none", "learning-rate schedule: step (lr x gamma every "
                            "--lr-step-size steps, default one epoch) or plateau (lr x gamma when "
                            "valid accuracy stalls for more than --plateau-patience evaluations)",
                            choices=SCHEDULES)
    lr_gamma: float = _option(0.1, "factor of a schedule's learning-rate drop")
    lr_step_size: int | None = _option(None, "steps between drops of the step schedule")
    plateau_patience: int = _option(2, "evaluations without improvement before a plateau drop")
    min_lr: float = _option(0.0, "the schedules' lowest learning rate")
    eval_every: int | None = _option(None, "also evaluate every N steps")
    train_eval_size: int | None = _option(2000, "train images (whole patients) scored at each "
                                          "evaluation; none or 0: all of train")
    eval_batch_size: int = _option(64, "images per evaluation batch")
    checkpoint_every: int | None = _option(None, "also checkpoint every N steps")
    out_dir: str | None = _option(None, "run folder for history.json, checkpoint.npz, best.npz "
                                  "and last.npz, e.g. runs/baseline")
    seed: int = _option(0, "data order, augmentation and the train-eval subset")
    augment: bool = _option(False, "random flips and rotations in training")
    progress: bool = _option(True, "show a progress bar")
    resume: bool = _option(False, "continue the run in --out from its checkpoint")
    overwrite: bool = _option(False, "start afresh even though --out holds a run")

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
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0.0 < self.lr_gamma <= 1.0:
            raise ValueError(f"lr_gamma must be in (0, 1], got {self.lr_gamma!r}")
        if self.plateau_patience < 0:
            raise ValueError(f"plateau_patience must be >= 0, got {self.plateau_patience!r}")
        if (self.resume or self.checkpoint_every) and self.out_dir is None:
            raise ValueError("resume and checkpoint_every need an out_dir")


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


def _grads_finite(grads: dict, xp) -> bool:
    # One reduction per tensor: a NaN or inf anywhere makes the total non-finite.
    total = sum(float(xp.sum(g)) for g in grads.values())
    return math.isfinite(total)


def _params_finite(params: dict, xp) -> bool:
    return all(bool(xp.isfinite(p).all()) for p in params.values())


class _SigintDeferral:
    """While active (main thread only), Ctrl+C sets ``requested`` instead of raising, so a step
    is never cut in half; the loop checkpoints and raises KeyboardInterrupt between steps. A
    second Ctrl+C raises at once (``forced``), wherever the loop is."""

    def __init__(self):
        self.requested = False
        self.forced = False
        self._installed = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            self.forced = True
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        return self

    def __exit__(self, *exc):
        if self._installed:
            previous = self._previous if self._previous is not None else signal.default_int_handler
            signal.signal(signal.SIGINT, previous)
        return False


class Trainer:
    """One training run; ``train()`` is the usual entry point. See the module docstring.

    ``run`` is the loop; each of its steps is a method: ``_start`` (resume or refuse, new
    history), ``_train_step`` (one SGD update), ``_after_step`` (bookkeeping), ``_evaluate``,
    ``_save_checkpoint``, and on the way out ``_on_interrupt``, ``_on_divergence``, ``_finish``.
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
        self.out_dir = Path(config.out_dir) if config.out_dir is not None else None
        self.opt = SGD(model.parameters(), config.lr, config.momentum, config.weight_decay)
        self.state = _State(lr=float(config.lr))
        self._train_s = self._eval_s = 0.0
        self._steps_timed = 0
        self._checkpoint_step = None
        self._smooth_loss = None

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
            "data": {"root": str(getattr(c, "root", "")), "size": int(c.size), "mode": str(c.mode),
                     "mean": self.mean, "std": self.std, "n_train": len(self.train_split.labels),
                     "n_valid": len(self.valid_split.labels),
                     "train_eval_images": int(len(self.eval_rows)),
                     "train_eval_patients": int(len(np.unique(np.asarray(self.train_split.patient_ids)[self.eval_rows]))),
                     "majority_class": self.majority},
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "step": 0,
            "epoch": 0.0,
            "loss": [],
            "lr": [],
            "evals": [],
            "best": None,
            "timing": {},
            "versions": _versions(),
        }

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
        checkpoint = read_checkpoint(path)
        saved = checkpoint.state["config"]
        mine = dataclasses.asdict(self.config)
        changed = [k for k in mine if k not in RESUMABLE_CHANGES + ("resume", "overwrite")
                   and saved.get(k) != mine[k]]
        if changed:
            detail = ", ".join(f"{k}: {saved.get(k)!r} -> {mine[k]!r}" for k in changed)
            raise ValueError(f"cannot resume {path} with other settings ({detail}): they change the "
                             "data order or the updates; resume with the run's settings or use another out_dir")
        restore_checkpoint(checkpoint, self.model, self.opt)
        meta, s = checkpoint.state, self.state
        s.step, s.lr = int(meta["step"]), float(meta["lr"])
        s.plateau_best, s.plateau_bad = float(meta["plateau_best"]), int(meta["plateau_bad"])
        s.best_accuracy = float(meta["best_accuracy"])
        s.history = meta["history"]
        s.history["config"] = mine
        s.history["total_steps"] = self.total_steps
        s.history["status"], s.history["error"] = "running", None
        self._checkpoint_step = s.step

    # --- pieces of a step ----------------------------------------------------------------
    def _scheduled_lr(self) -> float:
        c, s = self.config, self.state
        if c.schedule == "step":
            every = c.lr_step_size or self.steps_per_epoch
            return max(c.lr * c.lr_gamma ** (s.step // every), c.min_lr)
        return s.lr  # "none" keeps it; "plateau" changes it at evaluations

    def _diverged(self, what: str, value, step: int) -> TrainingDiverged:
        lr = self.state.lr
        ckpt = self._path(CHECKPOINT_NAME)
        if ckpt is not None and self._checkpoint_step is not None:
            kept = f"the last good checkpoint, {ckpt} (step {self._checkpoint_step}), is kept"
        else:
            kept = "no checkpoint had been written yet"
        return TrainingDiverged(
            f"training diverged: {what} is {value} at step {step} (learning rate {lr:g}); training "
            f"stopped and {kept}. Lower the learning rate (e.g. {lr / 10:g}) "
            "and train again.", step, lr)

    def _evaluate_split(self, split, indices: np.ndarray | None) -> dict:
        rows = split_rows(split, indices)
        # An update can blow the weights up after its own loss was computed, so the evaluation
        # right after it is the first to see them: stop here with the loss guard's message.
        with np.errstate(over="ignore", invalid="ignore"):
            probs = predict_split(self.model, split, self.mean, self.std, self.config.eval_batch_size, rows)
        if not np.isfinite(probs).all():
            raise self._diverged(f"the predicted probability on {split.name}", "non-finite", self.state.step)
        return score_split(probs, split, rows, self.majority)

    def _evaluate(self, epoch_end: bool) -> None:
        start = time.perf_counter()
        c, s = self.config, self.state
        if not _params_finite(self.model.parameters(), self.model.xp):
            raise self._diverged("a weight", "non-finite", s.step)
        train_table = self._evaluate_split(self.train_split, self.eval_rows)
        valid_table = self._evaluate_split(self.valid_split, None)
        point = {"step": s.step, "epoch": s.step / self.steps_per_epoch, "epoch_end": epoch_end,
                 "lr": s.lr, "train": train_table, "valid": valid_table}
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

    def _train_step(self, batch) -> float:
        """One SGD update on ``batch``; the loss. Raises TrainingDiverged on a non-finite loss
        or gradient, before the update touches the weights."""
        s = self.state
        s.lr = self._scheduled_lr()
        self.opt.lr = s.lr
        # Overflow is caught below, with a message that says what to do.
        with np.errstate(over="ignore", invalid="ignore"):
            loss, grads = loss_and_grads(self.model, batch.x, batch.t, training=True)
        if not math.isfinite(loss):
            raise self._diverged("the loss", loss, s.step + 1)
        if not _grads_finite(grads, self.model.xp):
            raise self._diverged("a gradient", "non-finite", s.step + 1)
        self.opt.step(grads)
        s.step += 1
        s.history["loss"].append(float(loss))
        s.history["lr"].append(s.lr)
        return float(loss)

    def _after_step(self, loss: float, seconds: float, bar) -> None:
        self._train_s += seconds
        self._steps_timed += 1
        self._smooth_loss = loss if self._smooth_loss is None else 0.9 * self._smooth_loss + 0.1 * loss
        bar.set_postfix(loss=f"{self._smooth_loss:.4f}", lr=f"{self.state.lr:.3g}",
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

        def batches(epoch, first, remaining):
            while remaining > 0:
                for batch in iterate_batches(self.train_split, c.batch_size, mean=self.mean,
                                             std=self.std, shuffle=True, seed=c.seed,
                                             epoch=epoch, augment=c.augment, drop_last=True,
                                             start_batch=first):
                    yield batch
                    remaining -= 1
                    if remaining == 0:
                        return
                epoch, first = epoch + 1, 0

        return batches(epoch, first, remaining)

    def _due(self, every: int | None) -> bool:
        """True after the last step, at an epoch end, or every ``every`` steps."""
        step = self.state.step
        return (step == self.total_steps or step % self.steps_per_epoch == 0
                or bool(every and step % every == 0))

    # --- the loop ------------------------------------------------------------------------
    def _start(self) -> None:
        """Resume from the checkpoint, or refuse a folder that holds a run, or start afresh."""
        c, s = self.config, self.state
        ckpt = self._path(CHECKPOINT_NAME)
        if ckpt is not None and ckpt.exists():
            if c.resume:
                self._restore(ckpt)
            elif not c.overwrite:
                raise FileExistsError(f"{self.out_dir} already holds a run ({ckpt.name}); resume it "
                                      "(resume=True, --resume) or choose another out_dir")
        if not s.history:
            s.history = self._new_history()
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)

    def run(self) -> TrainResult:
        from tqdm.auto import tqdm  # noqa: PLC0415

        self._start()
        s = self.state
        bar = tqdm(total=self.total_steps, initial=s.step, desc=f"train {self.model.spec['arch']}",
                   unit="step", disable=not self.config.progress, dynamic_ncols=True)
        sigint = _SigintDeferral()
        try:
            # The next batch is read and standardized in a background thread during each step.
            with sigint, Prefetcher(self._batches(), depth=PREFETCH_DEPTH) as batches:
                # A step's time runs from asking for its batch to the end of its update, so
                # any wait for data counts; evaluations are timed apart, checkpoints not.
                start = time.perf_counter()
                for batch in batches:
                    loss = self._train_step(batch)
                    self._after_step(loss, time.perf_counter() - start, bar)
                    if self._due(self.config.eval_every):
                        self._evaluate(epoch_end=s.step % self.steps_per_epoch == 0)
                        self._write_history()
                    if self._due(self.config.checkpoint_every):
                        self._save_checkpoint()
                    if sigint.requested:
                        raise KeyboardInterrupt
                    start = time.perf_counter()
        except KeyboardInterrupt:
            bar.close()
            self._on_interrupt(forced=sigint.forced)
            raise
        except TrainingDiverged as exc:
            self._on_divergence(exc)
            raise
        finally:
            bar.close()
        return self._finish()

    def _on_interrupt(self, forced: bool) -> None:
        s = self.state
        s.history["status"] = "interrupted"
        if forced:
            # Stopped at once, maybe in the middle of an update: keep the last checkpoint.
            kept = f"; the checkpoint of step {self._checkpoint_step} is kept" if self._checkpoint_step else ""
            print(f"stopped at once during step {s.step + 1}{kept}")
        elif self._checkpoint_step != s.step:
            self._save_checkpoint()
        else:
            self._write_history()
        ckpt = self._path(CHECKPOINT_NAME)
        where = f"; resume from {ckpt}" if ckpt is not None and self._checkpoint_step is not None else ""
        print(f"interrupted at step {s.step} of {self.total_steps}{where}")

    def _on_divergence(self, exc: TrainingDiverged) -> None:
        self.state.history["status"], self.state.history["error"] = "diverged", str(exc)
        self._write_history()

    def _finish(self) -> TrainResult:
        s = self.state
        s.history["status"] = "completed"
        s.history["step"], s.history["epoch"] = s.step, s.step / self.steps_per_epoch
        if self._checkpoint_step != s.step:
            self._save_checkpoint()
        self._stamp_metadata()
        last_path = self._path(LAST_NAME)
        if last_path is not None:
            save_model(self.model, last_path)
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
    Raises TrainingDiverged on a NaN/inf loss, gradient, weight or evaluated probability,
    re-raises KeyboardInterrupt after writing a checkpoint, FileExistsError when out_dir holds
    a run and neither resume nor overwrite is set.
    """
    if config is None:
        config = TrainConfig()
    elif isinstance(config, dict):
        config = TrainConfig(**config)
    if overrides:
        config = dataclasses.replace(config, **overrides)
    return Trainer(model, cache, config, on_step=on_step).run()


def load_history(path) -> dict:
    """Read a history.json (a path to the file or to its run folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / HISTORY_NAME
    with open(path) as fh:
        return json.load(fh)


__all__ = ["TrainConfig", "TrainResult", "Trainer", "TrainingDiverged", "load_history", "train"]
