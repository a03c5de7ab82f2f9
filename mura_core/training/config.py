"""The settings of one training run: ``TrainConfig``, also the ``train`` command's options."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SCHEDULES = ("none", "step", "plateau", "cosine")
CLASS_WEIGHTS = ("none", "mura")

#: Config fields a resumed run may change; every other one must match the checkpoint, since
#: it decides the data order or the updates. The learning rate may change on purpose (e.g.
#: lower, after a divergence): from the checkpoint's step on, recorded in ``lr_changes``.
RESUMABLE_CHANGES = ("epochs", "steps", "progress", "checkpoint_every", "out_dir", "eval_batch_size",
                     "lr")


def check_seed(seed, option: str = "--seed") -> None:
    """ValueError naming ``option`` unless ``seed`` is a whole number >= 0 (what NumPy's
    generators take)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{option} must be a whole number >= 0, got {seed!r}")


def _option(default, help: str, **extra):
    """A config field with the help text its command-line option shows."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    """Settings of one training run (also the ``train`` command's options, with this help).

    Learning-rate schedules (``schedule.LearningRateSchedule``): "step" multiplies lr by
    ``lr_gamma`` every ``lr_step_size`` steps (default one epoch); "plateau" multiplies it by
    ``lr_gamma`` when the valid per-image accuracy has not improved for more than
    ``plateau_patience`` evaluations; "cosine" follows half a cosine from lr down to
    ``min_lr`` over the steps after the warm-up; never below ``min_lr``. A warm-up
    (``warmup_steps``) scales the first steps' rate by (step + 1) / warmup_steps, so the
    first updates of a fresh network stay small.
    Evaluation always follows each epoch and the last step. ``seed`` decides the data order,
    augmentation and the train-eval subset (the model has its own seed).
    ``class_weights="mura"`` weighs each train image's loss by MURA's per-body-part class
    weight (``class_weights.mura_class_weights``); only the training loss changes, the
    evaluated loss stays the plain BCE.
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
        check_seed(self.seed, "seed")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"learning rate must be a positive number, got {self.lr!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0.0):
            raise ValueError(f"weight decay must be a number >= 0, got {self.weight_decay!r}")
        if not (isinstance(self.min_lr, (int, float)) and math.isfinite(self.min_lr)
                and 0.0 <= self.min_lr <= self.lr):
            raise ValueError(f"min_lr (--min-lr, the schedules' lowest rate) must be a number from "
                             f"0 to the learning rate {self.lr:g}, got {self.min_lr!r}")
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
