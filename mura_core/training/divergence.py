"""What a run says when it diverges: the error, the step and learning rate, the good
checkpoint that was kept and the rate to go on at.

A checkpoint is *good* (``is_good``) when its weights are finite and the loss they give on a
fixed sample of train images is finite and at most ``GOOD_LOSS_FACTOR`` times what the
network gave there as initialised (where the run started; about ln 2 for these networks). A
run whose loss has climbed that far above where it started is diverging even while its
numbers are still finite (at lr 50 the weights reach 1e26, and the loss 1e28, steps before
anything is infinite), and resuming from such a state diverges again at any rate. The run
state writes only good checkpoints, so a diverging step never replaces the last good one.
"""
from __future__ import annotations

import math

#: How far above where the run started a checkpoint's loss may be and still be good. Healthy
#: runs on the synthetic set spike to 3.5 times it at a rate of 0.1 (batches of 8) and
#: recover; diverging ones pass 10 times it within a step or two, then 1e8.
GOOD_LOSS_FACTOR = 4.0


class TrainingDiverged(FloatingPointError):
    """The loss, a gradient, a weight or an evaluated probability became NaN or infinite; the
    message names the step and lr, the good checkpoint kept and the rate to go on at."""

    def __init__(self, message: str, step: int, lr: float, suggested_lr: float | None = None):
        super().__init__(message)
        self.step = step
        self.lr = lr
        self.suggested_lr = suggested_lr


def is_good(loss: float | None, start_loss: float | None) -> bool:
    """True for a checkpoint whose weights give ``loss`` (None: not measured, as when no step
    ran in this process) when the run started at ``start_loss`` (None: no step yet)."""
    if loss is None:
        return True
    if not math.isfinite(loss):
        return False
    return start_loss is None or not math.isfinite(start_loss) \
        or loss <= GOOD_LOSS_FACTOR * start_loss


def suggested_rate(lr: float, good_lr: float | None = None) -> float:
    """The rate to go on at after a divergence at ``lr``: a tenth of it, and no more than
    ``good_lr``, the rate of the last step before the good checkpoint (one that trained)."""
    rate = lr / 10
    return rate if good_lr is None else min(rate, good_lr)


def diverged(what: str, value, step: int, lr: float, checkpoint=None,
             checkpoint_step: int | None = None, *, checkpoint_loss: float | None = None,
             start_loss: float | None = None, good_lr: float | None = None) -> TrainingDiverged:
    """The error of a run whose ``what`` became ``value`` at ``step`` under learning rate
    ``lr``. ``checkpoint`` (a path) of ``checkpoint_step``: the last good one, if any, whose
    weights gave ``checkpoint_loss`` where the run started at ``start_loss``; ``good_lr``:
    the rate of that checkpoint's last step."""
    rate = suggested_rate(lr, good_lr if checkpoint_step else None)
    if checkpoint is not None and checkpoint_step is not None:
        measured = "" if checkpoint_loss is None or start_loss is None else (
            f" (finite weights, loss {checkpoint_loss:.3g} against {start_loss:.3g} at the "
            "start)")
        kept = f"the last good checkpoint, {checkpoint} (step {checkpoint_step}), is kept{measured}"
        how = (f"resume from it at a lower rate (--resume --lr {rate:g}) or train afresh "
               f"(--overwrite --lr {rate:g})")
    else:
        kept = "no good checkpoint had been written"
        how = f"train afresh at a lower rate (--overwrite --lr {rate:g})"
    return TrainingDiverged(
        f"training diverged: {what} is {value} at step {step} (learning rate {lr:g}); training "
        f"stopped and {kept}. Lower the learning rate: {how}.", step, lr, rate)
