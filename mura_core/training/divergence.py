"""What a run says when it diverges: the error, the step and learning rate, what was kept
and how to go on."""
from __future__ import annotations


class TrainingDiverged(FloatingPointError):
    """The loss, a gradient, a weight or an evaluated probability became NaN or infinite; the
    message names the step and lr."""

    def __init__(self, message: str, step: int, lr: float):
        super().__init__(message)
        self.step = step
        self.lr = lr


def diverged(what: str, value, step: int, lr: float, checkpoint=None,
             checkpoint_step: int | None = None) -> TrainingDiverged:
    """The error of a run whose ``what`` became ``value`` at ``step`` under learning rate
    ``lr``; ``checkpoint`` (a path) of ``checkpoint_step``: the last one written, if any."""
    if checkpoint is not None and checkpoint_step is not None:
        kept = f"the last good checkpoint, {checkpoint} (step {checkpoint_step}), is kept"
        how = f"resume from it at that rate (--resume --lr {lr / 10:g}) or train afresh (--overwrite)"
    else:
        kept = "no checkpoint had been written yet"
        how = "train afresh (--overwrite)"
    return TrainingDiverged(
        f"training diverged: {what} is {value} at step {step} (learning rate {lr:g}); training "
        f"stopped and {kept}. Lower the learning rate (e.g. {lr / 10:g}): {how}.", step, lr)
