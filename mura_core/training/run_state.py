"""Where a run stands and what it has written: the step, the history, and the files in its
folder. ``RunState`` starts a run (afresh, resumed from its checkpoint, or replacing an
earlier run), writes the history and the checkpoints, and records how the run ended."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..files import remove_stale_temp_files
from ..nn.serialization import save_model
from .checkpoint import (
    check_same_data,
    check_same_model,
    check_same_settings,
    check_steps_left,
    read_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from .divergence import TrainingDiverged, diverged, is_good
from .evaluation_points import params_finite
from .history import end_history, mark_history_on_disk, new_history, this_process, write_history
from .runfolder import (
    CHECKPOINT_NAME,
    HISTORY_NAME,
    LAST_NAME,
    check_run_folder,
    remove_earlier_run,
)


class RunState:
    """The state of one run of ``model`` under ``config`` (``out_dir`` None: no files).

    ``data``: the history's "data" entry; its "root", "cache_key", "mean" and "std" are what
    a resumed run's data must match. ``schedule``, ``points`` (evaluation points) and
    ``clock`` are the parts whose state a checkpoint keeps beside the step and history.
    ``loss_now()``: the loss the weights give now on a fixed set of train images (None: not
    measured), against its value at the run's start (``history["start_loss"]``), decides
    whether a checkpoint is good (``divergence.is_good``): only good ones are written."""

    def __init__(self, model, opt, config, *, data: dict, steps_per_epoch: int,
                 total_steps: int, schedule, points, clock, loss_now=lambda: None):
        self.model, self.opt, self.config, self.data = model, opt, config, data
        self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps
        self.schedule, self.points, self.clock = schedule, points, clock
        self.loss_now = loss_now
        self.out_dir = Path(config.out_dir) if config.out_dir is not None else None
        self.step, self.history = 0, {}
        self.checkpoint_step: int | None = None  # of the last (good) checkpoint written or read
        self.checkpoint_loss: float | None = None  # what its weights gave, when measured

    def path(self, name: str) -> Path | None:
        return None if self.out_dir is None else self.out_dir / name

    @property
    def epoch(self) -> float:
        return self.step / self.steps_per_epoch

    def identity(self) -> dict:
        return {k: self.data[k] for k in ("root", "cache_key", "mean", "std")}

    @property
    def start_loss(self) -> float | None:
        """What ``loss_now`` gave for the network as initialised (a run checkpointed before
        it was recorded: the loss of its first step)."""
        if not self.history:
            return None
        if self.history.get("start_loss") is not None:
            return float(self.history["start_loss"])
        losses = self.history.get("loss")
        return float(losses[0]) if losses else None

    def diverged(self, what: str, value, step: int) -> TrainingDiverged:
        k = self.checkpoint_step
        rates = self.history.get("lr") if self.history else None
        good_lr = float(rates[k - 1]) if k and rates and len(rates) >= k else None
        return diverged(what, value, step, self.opt.lr,
                        self.path(CHECKPOINT_NAME) if self.out_dir is not None else None, k,
                        checkpoint_loss=self.checkpoint_loss, start_loss=self.start_loss,
                        good_lr=good_lr)

    # --- starting ------------------------------------------------------------------------
    def start(self) -> None:
        """In the locked run folder: remove what a killed writer left, then resume the run
        there, or replace it, or start afresh; refuse anything else (``check_run_folder``)."""
        c = self.config
        if self.out_dir is not None:
            remove_stale_temp_files(self.out_dir)
            found = check_run_folder(self.out_dir, c.resume, c.overwrite)
            if c.resume and found:
                self._restore(self.path(CHECKPOINT_NAME))
            elif found:
                remove_earlier_run(self.out_dir, found)
        if not self.history:
            self.history = new_history(c, self.model, self.data, self.steps_per_epoch,
                                       self.total_steps)
            self.history["start_loss"] = self.loss_now()
        self.history["process"] = this_process()

    def _restore(self, path: Path) -> None:
        """Continue from the checkpoint ``path``: same settings (but the resumable ones), same
        model, same data; ValueError naming the difference otherwise, before any state moves."""
        checkpoint = read_checkpoint(path)
        check_steps_left(path, int(checkpoint.state["step"]), self.total_steps)
        check_same_settings(checkpoint, self.config)
        check_same_model(checkpoint, self.model)
        check_same_data(checkpoint, self.identity())
        restore_checkpoint(checkpoint, self.model, self.opt)
        state, h = checkpoint.state, checkpoint.state["history"]
        self.step = self.checkpoint_step = int(state["step"])
        self.checkpoint_loss = state.get("loss_now")
        self.schedule.load_state(state)
        self.points.best_score = tuple(state["best_score"])
        h["config"], h["total_steps"] = dataclasses.asdict(self.config), self.total_steps
        h["status"], h["error"] = "running", None
        h["data"].update(self.identity())  # adds the cache key to older runs
        self.history = h
        lr = float(self.config.lr)
        if float(state["config"]["lr"]) != lr:
            # The schedule goes on from the new rate; recorded in the history.
            h.setdefault("lr_changes", []).append({"step": self.step, "lr_from": self.schedule.lr,
                                                   "lr_to": lr})
            self.schedule.lr = lr
            self.points.forget_best_after(h, self.step, lr)

    # --- writing -------------------------------------------------------------------------
    def write_history(self) -> None:
        self.clock.evaluation(self.points.seconds)
        self.points.seconds = 0.0
        self.history["timing"] = self.clock.timing(self.history.get("timing"))
        if self.out_dir is not None:
            write_history(self.path(HISTORY_NAME), self.history)

    def stamp_metadata(self) -> None:
        """What a saved model file says about its input and its training."""
        meta = self.model.metadata
        meta["preprocessing"] = {k: self.data[k] for k in ("size", "mode", "mean", "std")}
        meta["output"] = "P(normal): 1 normal, 0 abnormal; normal when >= 0.5"
        meta["trained"] = {"step": self.step, "epoch": self.epoch, "seed": self.config.seed,
                           "data_root": self.data["root"]}

    def save_checkpoint(self) -> bool:
        """Write the checkpoint of this step when it is good (``divergence.is_good``); a
        diverging state never replaces the last good checkpoint, which stays the one to
        resume from. The history is written either way; True when the checkpoint was."""
        if self.out_dir is None:
            return False
        if not params_finite(self.model):
            raise self.diverged("a weight", "non-finite", self.step)
        loss = self.loss_now()
        self.stamp_metadata()
        self.history["step"], self.history["epoch"] = self.step, self.epoch
        self.write_history()
        if not is_good(loss, self.start_loss):
            return False
        save_checkpoint(self.path(CHECKPOINT_NAME), self.model, self.opt, {
            "step": self.step, **self.schedule.state(), "best_score": list(self.points.best_score),
            "config": dataclasses.asdict(self.config), "history": self.history,
            "loss_now": loss})
        self.checkpoint_step, self.checkpoint_loss = self.step, loss
        return True

    # --- ending --------------------------------------------------------------------------
    def interrupted(self, forced: bool) -> None:
        """Ctrl+C or SIGTERM: checkpoint the step just finished (unless ``forced``: a second
        signal may have cut an update in half, so the last checkpoint stays the one to resume
        from) and mark the history "interrupted"."""
        if not self.history or (self.step == 0 and self.checkpoint_step is None):
            print("interrupted before the first step; nothing was written")
            return
        end_history(self.history, "interrupted")
        if forced:
            # Stopped at once, maybe in the middle of an update: keep the last checkpoint, and
            # the history on disk, which was written with it or at an evaluation since.
            kept = f"; the checkpoint of step {self.checkpoint_step} is kept" if self.checkpoint_step else ""
            print(f"stopped at once during step {self.step + 1}{kept}")
            mark_history_on_disk(self.path(HISTORY_NAME), "interrupted")
        elif self.checkpoint_step != self.step:
            self.save_checkpoint()
        else:
            self.write_history()
        ckpt = self.path(CHECKPOINT_NAME)
        where = f"; resume from {ckpt} (step {self.checkpoint_step})" \
            if ckpt is not None and self.checkpoint_step is not None else ""
        print(f"interrupted at step {self.step} of {self.total_steps}{where}")

    def failed(self, status: str, error: str, quiet: bool = False) -> None:
        """A diverged or failed run: the history says so and why, instead of "running"
        (``quiet``: a failure to write it gives way to the error being raised, a full disk
        say)."""
        if not self.history:
            return
        end_history(self.history, status, error)
        try:
            self.write_history()
        except OSError:
            if not quiet:
                raise

    def completed(self) -> Path | None:
        """The run's last files: checkpoint, last.npz, predictions.npz, the history marked
        "completed"; the path of last.npz (None without a folder)."""
        end_history(self.history, "completed")
        self.history["step"], self.history["epoch"] = self.step, self.epoch
        if self.checkpoint_step != self.step:
            self.save_checkpoint()
        self.stamp_metadata()
        last_path = self.path(LAST_NAME)
        if last_path is not None:
            save_model(self.model, last_path)
            self.points.save_predictions(self.step)
        self.write_history()
        return last_path
