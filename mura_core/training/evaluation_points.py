"""A run's evaluation points: a fixed subset of train and all of valid scored after every
epoch, every ``eval_every`` steps and after the last step; the best model so far by valid
study kappa, MURA's own measure (``best.npz``; valid accuracy per image breaks ties and
stands in where kappa is undefined); the final model's valid predictions
(``predictions.npz``, what the paired statistics of the report compare)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..evaluation.predictions import predict_split, score_split, split_rows
from ..nn.serialization import atomic_save_npz, read_model_header, save_model
from .runfolder import BEST_NAME, PREDICTIONS_NAME

#: Below every evaluation's score: the best so far before the first evaluation.
NO_SCORE = (-2.0, -1.0)


def score(valid_table: dict) -> tuple[float, float]:
    """How an evaluation point ranks: (valid study kappa, or -1.5 where it is undefined;
    valid accuracy per image)."""
    kappa = valid_table.get("study_kappa")
    kappa = kappa if kappa is not None and np.isfinite(kappa) else -1.5
    return (float(kappa), float(valid_table["image_accuracy"]))


def params_finite(model) -> bool:
    xp = model.xp
    return all(bool(xp.isfinite(p).all()) for p in model.parameters().values())


class EvaluationPoints:
    """Scores ``model`` on ``train_split`` (its rows ``train_rows``) and all of
    ``valid_split``; ``folder`` (None: no files) receives best.npz and predictions.npz.

    ``diverged(what, value, step)`` builds the error raised when a weight or a predicted
    probability is not finite; ``stamp()`` writes the model's metadata before it is saved.
    ``best_score`` ((valid study kappa, valid accuracy per image), compared in that order)
    and the history's "best" entry track the best evaluation point so far."""

    def __init__(self, model, train_split, valid_split, train_rows, *, mean: float, std: float,
                 batch_size: int, majority: int, folder: Path | None, diverged, stamp):
        self.model, self.train_split, self.valid_split = model, train_split, valid_split
        self.train_rows, self.mean, self.std, self.batch_size = train_rows, mean, std, batch_size
        self.majority, self.folder, self.diverged, self.stamp = majority, folder, diverged, stamp
        self.best_score = NO_SCORE
        self.valid_probs = None  # of the latest evaluation
        self.seconds = 0.0  # spent evaluating since the clock last read it

    def _path(self, name: str) -> Path | None:
        return None if self.folder is None else self.folder / name

    def score(self, split, indices: np.ndarray | None, step: int) -> tuple[np.ndarray, dict]:
        rows = split_rows(split, indices)
        # An update can blow the weights up after its own loss was computed, so the evaluation
        # right after it is the first to see them: stop here with the loss guard's message.
        with np.errstate(over="ignore", invalid="ignore"):
            probs = predict_split(self.model, split, self.mean, self.std, self.batch_size, rows)
        if not np.isfinite(probs).all():
            raise self.diverged(f"the predicted probability on {split.name}", "non-finite", step)
        return probs, score_split(probs, split, rows, self.majority)

    def evaluate(self, history: dict, step: int, epoch: float, epoch_end: bool, lr: float) -> dict:
        """Score both splits after ``step`` steps, append the point to ``history["evals"]``,
        save the model as best.npz when valid accuracy improved; the point."""
        start = time.perf_counter()
        if not params_finite(self.model):
            raise self.diverged("a weight", "non-finite", step)
        _, train_table = self.score(self.train_split, self.train_rows, step)
        self.valid_probs, valid_table = self.score(self.valid_split, None, step)
        point = {"step": step, "epoch": epoch, "epoch_end": epoch_end, "lr": lr,
                 "train": train_table, "valid": valid_table}
        history["evals"].append(point)
        if score(valid_table) > self.best_score:
            self._save_best(history, point)
        self.seconds += time.perf_counter() - start
        return point

    def _save_best(self, history: dict, point: dict) -> None:
        valid = point["valid"]
        self.best_score = score(valid)
        best = self._path(BEST_NAME)
        history["best"] = {"step": point["step"], "epoch": point["epoch"],
                           "valid_study_kappa": valid["study_kappa"],
                           "valid_image_accuracy": valid["image_accuracy"],
                           "file": None if best is None else best.name}
        if best is not None:
            self.stamp()
            self.model.metadata["valid"] = {k: valid[k] for k in (
                "image_accuracy", "patient_accuracy", "study_accuracy", "study_kappa")}
            save_model(self.model, best)
            self.model.metadata.pop("valid")

    def forget_best_after(self, history: dict, step: int, lr: float) -> None:
        """A resumed run retakes the steps after ``step`` at another learning rate: a best.npz
        saved after ``step`` came from the steps being retaken, so it goes, and the best is
        tracked afresh."""
        best = self._path(BEST_NAME)
        if best is None or not best.exists():
            return
        saved_at = trained_step(best)
        if saved_at is None or saved_at > step:
            best.unlink()
            self.best_score, history["best"] = NO_SCORE, None
            print(f"note: removed {best}: it was saved after step {step}, on the steps now "
                  f"retaken at learning rate {lr:g}")

    def save_predictions(self, step: int) -> None:
        """predictions.npz: the final model's P(normal) for every valid image."""
        if self.valid_probs is None:  # resumed after the last evaluation: predict again
            self.valid_probs, _ = self.score(self.valid_split, None, step)
        atomic_save_npz(self._path(PREDICTIONS_NAME), {
            "valid": self.valid_probs.astype(np.float32), "step": np.int64(step)})


def trained_step(path: Path) -> int | None:
    """The step a model file of this trainer was saved at; None when it does not say."""
    try:
        trained = (read_model_header(path).get("metadata") or {}).get("trained") or {}
    except ValueError:  # ModelFileError: a damaged file says nothing
        return None
    return trained.get("step")
