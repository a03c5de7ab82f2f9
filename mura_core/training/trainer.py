"""The training loop: SGD with momentum over the batches of a run, with its evaluation
points, checkpoints, resume and guard rails. ``train(model, cache, config)`` is the entry
point; the parts it calls each live in a module of their own:

    config.py             TrainConfig: every setting, checked before any work
    schedule.py           the learning rate of every step (warm-up, step, plateau, cosine)
    feed.py               the batches of the remaining steps, on the model's device
    evaluation_points.py  train subset and valid scored; best.npz and predictions.npz
    run_state.py          the step and history; a run started, resumed, checkpointed, ended
    checkpoint.py         checkpoint.npz written and read; may a run resume from one?
    history.py            history.json: its layout, the step clock, load_history
    runfolder.py          the run files, which folders a run may use, the folder's lock
    divergence.py         TrainingDiverged and the message that says how to go on

Files in ``config.out_dir`` (all written atomically): ``history.json`` (rewritten at every
evaluation and checkpoint), ``checkpoint.npz`` (model, momentum, step, random state and
history, every ``checkpoint_every`` steps, at every epoch end, on Ctrl+C or SIGTERM and at the
end; ``mc.load_model`` reads it as a model file too), ``best.npz``, ``last.npz`` (the model
at the end) and ``predictions.npz``; ``.lock`` while a process trains there.

Determinism: the data order depends only on (seed, epoch), augmentation on (seed, epoch,
batch), dropout on a counter-based stream, so the same seed on NumPy gives the same history
run after run, and a resumed run (``resume=True``) continues with the very batches, masks and
weights the uninterrupted run would have used.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .. import progress
from ..data.prefetch import Prefetcher
from ..evaluation import metrics
from ..evaluation.predictions import patient_subset, split_inputs
from ..nn.backend import shared_buffer, to_numpy
from ..nn.losses import bce_with_logits_on_device
from ..nn.models import loss_and_grads_on_device
from ..nn.optim import SGD
from ..signals import StopDeferral, Stopped
from .class_weights import mura_class_weights
from .config import TrainConfig
from .divergence import TrainingDiverged
from .evaluation_points import EvaluationPoints
from .feed import device_mover, step_batches
from .history import StepClock
from .run_state import RunState
from .runfolder import CHECKPOINT_NAME, disk_full_told, hold_run_folder
from .schedule import LearningRateSchedule

#: Batches read ahead of the step that uses them (one waits in the queue, one is being read).
PREFETCH_DEPTH = 1
#: Train images (a fixed sample drawn from the run's seed) whose loss tells whether a
#: checkpoint is good (``divergence.is_good``); not the batch just trained on, which a much
#: too large step fits perfectly (loss 0) with weights that give 1e11 on the next batch.
PROBE_IMAGES = 32


@dataclass
class TrainResult:
    """What ``train`` returns: the history (also in out_dir/history.json) and the paths."""

    history: dict
    model: object
    out_dir: Path | None
    checkpoint_path: Path | None = None
    best_path: Path | None = None
    last_path: Path | None = None


def _grads_total(grads: dict, xp):
    """The sum of every gradient entry, as a 0-d array: non-finite when any entry is NaN or
    inf. Gradients packed in one buffer (``Layer.pack``; the gaps are zero) are summed in
    one reduction."""
    packed = shared_buffer(list(grads.values()))
    if packed is not None:
        return xp.sum(packed[0])
    return sum(xp.sum(g) for g in grads.values())


def sgd_step(model, opt, batch, weights=None) -> tuple[float, float]:
    """One SGD update of ``model`` on ``batch`` unless its loss or a gradient is not finite:
    (loss, the gradients' total). The update is skipped when either is not finite."""
    # Overflow is the caller's to report, with a message that says what to do.
    with np.errstate(over="ignore", invalid="ignore"):
        loss, grads = loss_and_grads_on_device(model, batch.x, batch.t, training=True,
                                              weights=weights)
        # the loss and the gradients' total read at once: on a GPU, one wait per step
        xp = model.xp
        loss, total = (float(v) for v in to_numpy(xp.stack([loss, _grads_total(grads, xp)])))
    if math.isfinite(loss) and math.isfinite(total):
        opt.step(grads)
    return loss, total


class Trainer:
    """One training run (see the module docstring); ``run()`` trains it. The loop is here;
    where the run stands and what it writes is its ``state`` (``run_state.RunState``)."""

    def __init__(self, model, cache, config: TrainConfig,
                 on_step: Callable[[int, float], None] | None = None):
        config.validate()
        self.model, self.cache, self.config, self.on_step = model, cache, config, on_step
        self.train_split, valid_split = cache.split("train"), cache.split("valid")
        n_train = len(self.train_split.labels)
        if config.batch_size > n_train:
            raise ValueError(f"batch size {config.batch_size} is larger than the {n_train} train "
                             "images; use a batch size of at most that")
        if len(valid_split.labels) == 0:
            raise ValueError("the valid split is empty; training needs it for evaluation")
        size = model.spec["input_size"]
        if int(cache.size) != int(size):
            raise ValueError(f"the cache holds {cache.size}x{cache.size} images but the model "
                             f"expects {size}x{size}; build the cache with size={size}")
        self.mean, self.std = float(cache.mean), float(cache.std)
        self.steps_per_epoch = n_train // config.batch_size
        self.total_steps = config.steps or config.epochs * self.steps_per_epoch
        majority = metrics.majority_class(self.train_split.labels)
        self.example_weights, class_weight_table = None, None
        if config.class_weights == "mura":
            self.example_weights, class_weight_table = mura_class_weights(
                self.train_split.labels, self.train_split.body_parts)
        self.opt = SGD(model.parameters(), config.lr, config.momentum, config.weight_decay)
        self.schedule = LearningRateSchedule(config, self.total_steps, self.steps_per_epoch)
        rows = patient_subset(self.train_split, config.train_eval_size, config.seed)
        self.points = EvaluationPoints(
            model, self.train_split, valid_split, rows, mean=self.mean, std=self.std,
            batch_size=config.eval_batch_size, majority=majority,
            folder=None if config.out_dir is None else Path(config.out_dir),
            diverged=lambda *a: self.state.diverged(*a), stamp=lambda: self.state.stamp_metadata())
        key = getattr(cache, "key", None)
        data = {"root": str(getattr(cache, "root", "")), "cache_key": None if key is None else str(key),
                "mean": self.mean, "std": self.std, "size": int(cache.size), "mode": str(cache.mode),
                "n_train": n_train, "n_valid": len(valid_split.labels),
                "train_eval_images": int(len(rows)),
                "train_eval_patients": int(len(np.unique(np.asarray(self.train_split.patient_ids)[rows]))),
                "majority_class": majority, "class_weights": class_weight_table}
        self.state = RunState(model, self.opt, config, data=data,
                              steps_per_epoch=self.steps_per_epoch, total_steps=self.total_steps,
                              schedule=self.schedule, points=self.points,
                              clock=StepClock(config.batch_size), loss_now=self._loss_now)
        self._smooth_loss = None
        self._probe = None

    def run(self) -> TrainResult:
        """Train, holding the run folder's lock throughout; on the way out a Ctrl+C or
        SIGTERM checkpoints, a divergence or any other error is recorded in the history, and
        a completed run writes its last files. A full disk is ``files.DiskFull``, naming the
        run folder and the checkpoint kept."""
        state = self.state
        with hold_run_folder(state.out_dir), disk_full_told(state):
            bar, stop = None, StopDeferral()  # before start: a signal during it stops after a step
            try:
                with stop:
                    state.start()
                    bar = progress.bar(total=self.total_steps, initial=state.step, unit="step",
                                       desc=f"train {self.model.spec['arch']}",
                                       disable=not self.config.progress)
                    self._steps(stop, bar)
            except KeyboardInterrupt:
                if bar is not None:
                    bar.close()
                state.interrupted(forced=stop.forced)
                raise
            except TrainingDiverged as exc:
                state.failed("diverged", str(exc))
                raise
            except Exception as exc:
                state.failed("failed", f"{exc.__class__.__name__}: {exc}", quiet=True)
                raise
            finally:
                if bar is not None:
                    bar.close()
            last_path = state.completed()
        best = state.history["best"]
        return TrainResult(state.history, self.model, state.out_dir, state.path(CHECKPOINT_NAME),
                           None if best is None or best["file"] is None else state.out_dir / best["file"],
                           last_path)

    def _steps(self, stop: StopDeferral, bar) -> None:
        """The remaining steps, each followed by its evaluation and checkpoint when due; a
        signal stops the loop between two steps. The next batch is read and standardized in
        a background thread during each step. A step's time runs from asking for its batch
        to the end of its update, so any wait for data counts; evaluations are timed apart,
        checkpoints not."""
        c, state = self.config, self.state
        batches = step_batches(self.train_split, c, mean=self.mean, std=self.std,
                               start_step=state.step, total_steps=self.total_steps,
                               steps_per_epoch=self.steps_per_epoch,
                               to_device=device_mover(self.model.xp))
        with Prefetcher(batches, depth=PREFETCH_DEPTH) as prefetched:
            start = time.perf_counter()
            for batch in prefetched:
                loss = self._train_step(batch)
                self._after_step(loss, time.perf_counter() - start, bar)
                if self._due(c.eval_every):
                    point = self.points.evaluate(state.history, state.step, state.epoch,
                                                 state.step % self.steps_per_epoch == 0, self.opt.lr)
                    self.schedule.evaluated(point["valid"]["image_accuracy"])
                    state.write_history()
                if self._due(c.checkpoint_every):
                    state.save_checkpoint()
                if stop.requested is not None:
                    raise Stopped(stop.requested)
                start = time.perf_counter()

    def _train_step(self, batch) -> float:
        """One SGD update on ``batch``; the loss. Raises TrainingDiverged on a non-finite loss
        or gradient, before the update touches the weights."""
        state = self.state
        self.opt.lr = self.schedule.rate(state.step)
        weights = None if self.example_weights is None else self.example_weights[batch.index]
        loss, grads_total = sgd_step(self.model, self.opt, batch, weights)
        if not math.isfinite(loss):
            raise state.diverged("the loss", loss, state.step + 1)
        if not math.isfinite(grads_total):
            raise state.diverged("a gradient", "non-finite", state.step + 1)
        state.step += 1
        state.history["loss"].append(loss)
        state.history["lr"].append(self.opt.lr)
        return loss

    def _loss_now(self) -> float:
        """The BCE the weights give now on the probe images (``PROBE_IMAGES`` of train, drawn
        from the run's seed; evaluation mode, no class weights): whether a checkpoint is good
        (``divergence.is_good``), against its value at the run's start. One forward pass of
        a batch, per checkpoint."""
        if self._probe is None:
            labels = np.asarray(self.train_split.labels)
            rng = np.random.default_rng([self.config.seed, 11])
            rows = np.sort(rng.choice(len(labels), min(PROBE_IMAGES, len(labels)),
                                      replace=False))
            self._probe = (split_inputs(self.train_split, rows, self.mean, self.std),
                           labels[rows].astype(np.float32))
        x, t = self._probe
        with np.errstate(over="ignore", invalid="ignore"):
            loss, _ = bce_with_logits_on_device(self.model.logits(x, training=False), t)
        return float(loss)

    def _after_step(self, loss: float, seconds: float, bar) -> None:
        self.state.clock.step(seconds)
        self._smooth_loss = loss if self._smooth_loss is None else 0.9 * self._smooth_loss + 0.1 * loss
        bar.set_postfix(loss=f"{self._smooth_loss:.4f}", lr=f"{self.opt.lr:.3g}",
                        img_s=f"{self.config.batch_size / max(seconds, 1e-9):.1f}", refresh=False)
        bar.update(1)
        if self.on_step is not None:
            self.on_step(self.state.step, loss)

    def _due(self, every: int | None) -> bool:
        """True after the last step, at an epoch end, or every ``every`` steps."""
        step = self.state.step
        return (step == self.total_steps or step % self.steps_per_epoch == 0
                or bool(every and step % every == 0))


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
