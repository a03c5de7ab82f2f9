"""The learning rate of every step: a schedule (none, step, plateau, cosine) times a linear
warm-up, as ``TrainConfig`` describes them.

``rate(step)`` is the rate of the step about to run (``step`` steps done); ``evaluated(
accuracy)`` feeds the plateau schedule a valid accuracy. What changes between steps (the
plateau's current rate and its count of evaluations without improvement) is ``state()``,
which a checkpoint keeps and ``load_state`` puts back.
"""
from __future__ import annotations

import math


class LearningRateSchedule:
    """The rates of one run of ``total_steps`` steps (``steps_per_epoch`` per epoch)."""

    def __init__(self, config, total_steps: int, steps_per_epoch: int):
        self.config, self.total_steps, self.steps_per_epoch = config, total_steps, steps_per_epoch
        self.lr = float(config.lr)  # "none" and "plateau": the current rate
        self.plateau_best = -1.0
        self.plateau_bad = 0

    def rate(self, step: int) -> float:
        """The learning rate of the step after ``step`` steps: the schedule's, times the
        warm-up."""
        c = self.config
        if c.schedule == "step":
            every = c.lr_step_size or self.steps_per_epoch
            lr = max(c.lr * c.lr_gamma ** (step // every), c.min_lr)
        elif c.schedule == "cosine":
            span = max(1, self.total_steps - c.warmup_steps)
            done = min(1.0, max(0, step - c.warmup_steps) / span)
            lr = c.min_lr + (c.lr - c.min_lr) * 0.5 * (1.0 + math.cos(math.pi * done))
        else:
            lr = self.lr  # "none" keeps the configured rate; "plateau" lowers it at evaluations
        if step < c.warmup_steps:
            lr *= (step + 1) / c.warmup_steps
        return lr

    def evaluated(self, accuracy: float) -> None:
        """A valid accuracy was measured: the plateau schedule lowers its rate by
        ``lr_gamma`` (not below ``min_lr``) after more than ``plateau_patience`` evaluations
        without improvement."""
        c = self.config
        if c.schedule != "plateau":
            return
        if accuracy > self.plateau_best:
            self.plateau_best, self.plateau_bad = accuracy, 0
        else:
            self.plateau_bad += 1
            if self.plateau_bad > c.plateau_patience:
                self.lr = max(self.lr * c.lr_gamma, c.min_lr)
                self.plateau_bad = 0

    def state(self) -> dict:
        return {"lr": self.lr, "plateau_best": self.plateau_best, "plateau_bad": self.plateau_bad}

    def load_state(self, state: dict) -> None:
        self.lr = float(state["lr"])
        self.plateau_best = float(state["plateau_best"])
        self.plateau_bad = int(state["plateau_bad"])
