"""Prediction and scoring: P(normal) for a cached split or for image files, and the metric
tables (``metrics.metric_table``) of train and valid.

Every prediction runs the model in evaluation mode (no dropout, no augmentation) on images
standardized exactly as in training.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from . import metrics
from .data.batches import iterate_batches


def train_eval_indices(split, size: int | None, seed: int) -> np.ndarray:
    """Sorted row indices of a fixed train subset: whole patients, in an order drawn from
    ``seed``, until at least ``size`` images (all rows when ``size`` is None or covers all).

    Whole patients keep the per patient accuracy meaningful on the subset.
    """
    n = len(split.labels)
    if size is None or size >= n:
        return np.arange(n, dtype=np.int64)
    patients, inverse = np.unique(np.asarray(split.patient_ids), return_inverse=True)
    order = np.random.default_rng([seed, 7]).permutation(len(patients))
    counts = np.bincount(inverse, minlength=len(patients))
    take = order[: int(np.searchsorted(np.cumsum(counts[order]), size) + 1)]
    return np.flatnonzero(np.isin(inverse, take)).astype(np.int64)


def split_rows(split, indices: np.ndarray | None) -> np.ndarray:
    """``indices`` as int64, or every row of the split when None."""
    if indices is None:
        return np.arange(len(split.labels), dtype=np.int64)
    return np.asarray(indices, np.int64)


def predict_split(model, split, mean: float, std: float, batch_size: int = 64,
                  indices: np.ndarray | None = None) -> np.ndarray:
    """P(normal) (float32, (N,)) for the rows ``indices`` (default all) of a cached split,
    standardized like training, in evaluation mode (no dropout, no augmentation)."""
    out = [model.predict_proba(b.x, batch_size=batch_size)
           for b in iterate_batches(split, batch_size, mean=mean, std=std, indices=indices)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, dtype=np.float32)


def score_split(probs: np.ndarray, split, rows: np.ndarray, majority: int | None) -> dict:
    """The ``metrics.metric_table`` of ``probs`` (N,), the predictions for the rows ``rows``."""
    return metrics.metric_table(
        probs, np.asarray(split.labels)[rows], np.asarray(split.patient_ids)[rows],
        np.asarray(split.study_ids)[rows], np.asarray(split.body_parts)[rows], majority=majority)


def evaluate(model, split, mean: float, std: float, batch_size: int = 64,
             indices: np.ndarray | None = None, majority: int | None = None):
    """Predict a split (or its rows ``indices``) and score it.

    Returns ``(probs, table)``: probs (N,) float32 P(normal) in the order of ``indices``
    (default all rows), table the ``metrics.metric_table`` dict of those rows. majority: the
    class the majority-class baseline predicts (default: the majority of these labels).
    """
    rows = split_rows(split, indices)
    probs = predict_split(model, split, mean, std, batch_size, rows)
    return probs, score_split(probs, split, rows, majority)


def evaluate_splits(model, cache, max_images: int | None = None, seed: int = 0,
                    with_predictions: bool = False):
    """``metrics.metric_table`` of train and valid (at most ``max_images`` images each, whole
    patients). The majority-class baseline of both predicts the train split's majority.

    With ``with_predictions``, returns ``(tables, predictions)`` where ``predictions[name]``
    is ``(rows, probs)``: the evaluated rows of the split and their P(normal)."""
    majority = metrics.majority_class(np.asarray(cache.split("train").labels).astype(np.int64))
    tables, predictions = {}, {}
    for name in ("train", "valid"):
        split = cache.split(name)
        rows = train_eval_indices(split, max_images, seed)
        probs, tables[name] = evaluate(model, split, cache.mean, cache.std, indices=rows,
                                       majority=majority)
        predictions[name] = (rows, probs)
    return (tables, predictions) if with_predictions else tables


def split_intervals(split, rows: np.ndarray, probs: np.ndarray, seed: int = 0) -> dict:
    """``stats.intervals`` of the predictions ``probs`` of the rows ``rows`` of a split: every
    metric of ``stats.METRICS`` with its 95 % bootstrap interval over patients."""
    from . import stats  # noqa: PLC0415

    rows = np.asarray(rows, np.int64)
    design = stats.Design.of(np.asarray(split.labels)[rows], np.asarray(split.patient_ids)[rows],
                             np.asarray(split.study_ids)[rows], np.asarray(split.body_parts)[rows])
    return stats.intervals(design, probs, seed=seed)


def load_images(model, paths):
    """Image files as the network's input, preprocessed exactly as in training (the size, mode,
    mean and std stored in ``model.metadata["preprocessing"]``).

    Returns ``(results, images, x)``: ``results`` a list of ``(path, error message or None)``
    in input order (a file that is missing or not an image gets its error, the others are
    still read); ``images`` (M, S, S) uint8 and ``x`` (M, 1, S, S) float32, standardized, of
    the M readable files in input order."""
    from .data.preprocess import ImageDecodeError, preprocess_image  # noqa: PLC0415

    pre = model.metadata.get("preprocessing")
    if not pre:
        raise ValueError("the model file stores no preprocessing (size, mode, mean, std); "
                         "use a model saved by `python -m mura_core train` (best.npz or last.npz)")
    size, mode = int(pre["size"]), pre["mode"]
    results, arrays = [], []
    for path in paths:
        try:
            if Path(path).is_dir():
                raise IsADirectoryError(f"{path}: is a folder, not an image file")
            arrays.append(preprocess_image(path, size, mode))
            results.append((str(path), None))
        except FileNotFoundError:
            results.append((str(path), f"{path}: no such file"))
        except (ImageDecodeError, OSError) as exc:
            results.append((str(path), str(exc)))
    images = np.stack(arrays) if arrays else np.zeros((0, size, size), dtype=np.uint8)
    # The training batch iterator does the standardization, so it is the same arithmetic.
    source = SimpleNamespace(images=images, labels=np.zeros(len(images), np.float32), mode=mode)
    x = split_inputs(source, np.arange(len(images)), float(pre["mean"]), float(pre["std"]))
    return results, images, x


def predict_images(model, paths, batch_size: int = 32):
    """P(normal) for image files, preprocessed exactly as in training (``load_images``).

    Returns a list of ``(path, probability or None, error message or None)`` in input order; a
    file that is missing or not an image gets its error and the others are still predicted.
    """
    results, _, x = load_images(model, paths)
    probs = iter(model.predict_proba(x, batch_size=batch_size).tolist())
    return [(path, None, error) if error is not None else (path, next(probs), None)
            for path, error in results]


def split_inputs(split, rows, mean: float, std: float) -> np.ndarray:
    """The network inputs (n, 1, H, W) float32 of the rows ``rows`` of a cached split, in that
    order, standardized exactly as in training (no augmentation)."""
    rows = np.asarray(rows, np.int64)
    batches = [b.x for b in iterate_batches(split, 64, mean=mean, std=std, indices=rows)]
    if not batches:
        return np.zeros((0, 1, *split.images.shape[1:]), dtype=np.float32)
    return np.concatenate(batches)


def confident_mistakes(labels, probs, k: int) -> dict[str, np.ndarray]:
    """The ``k`` most confident mistakes of each kind, as positions into ``labels``/``probs``:
    ``"false_normal"``: abnormal images called normal, highest P(normal) first;
    ``"false_abnormal"``: normal images called abnormal, lowest P(normal) first."""
    y = np.asarray(labels).reshape(-1)
    p = np.asarray(probs).reshape(-1)
    called_normal = p >= metrics.THRESHOLD
    false_normal = np.flatnonzero((y == metrics.ABNORMAL) & called_normal)
    false_abnormal = np.flatnonzero((y == metrics.NORMAL) & ~called_normal)
    return {"false_normal": false_normal[np.argsort(-p[false_normal], kind="stable")][:k],
            "false_abnormal": false_abnormal[np.argsort(p[false_abnormal], kind="stable")][:k]}


def roc_summary(split, rows, probs, intervals: dict) -> dict[str, dict]:
    """ROC curves per image and per study (a study: the mean P(normal) of its images) with
    abnormal as the finding (score 1 - P(normal)), for ``plots.plot_roc``.

    intervals: ``split_intervals`` of the same predictions (for AUROC and its interval).
    Returns {"image": ..., "study": ...}, each {"fpr", "tpr" (lists; None with one class),
    "auc", "low", "high", "sensitivity", "specificity" (at P(normal) < 0.5 called abnormal),
    "n", "n_abnormal"}."""
    rows = np.asarray(rows, np.int64)
    labels = np.asarray(split.labels)[rows].astype(np.int64)
    _, study_labels, study_probs = metrics.study_probabilities(
        labels, probs, np.asarray(split.study_ids)[rows])
    out = {}
    for level, (y, p) in {"image": (labels, np.asarray(probs)), "study": (study_labels, study_probs)}.items():
        auc = intervals.get(f"{level}_auc") or {}
        sensitivity, specificity = metrics.sensitivity_specificity(y, p)
        fpr = tpr = None
        if 0 < y.sum() < y.size:
            fpr, tpr, _ = metrics.roc_curve(1 - y, 1.0 - p)
            fpr, tpr = fpr.tolist(), tpr.tolist()
        out[level] = {"fpr": fpr, "tpr": tpr, "auc": auc.get("value"), "low": auc.get("low"),
                      "high": auc.get("high"), "sensitivity": sensitivity,
                      "specificity": specificity, "n": int(y.size),
                      "n_abnormal": int(np.sum(y == metrics.ABNORMAL))}
    return out


def body_part_kappas(split, rows, probs, seed: int = 0) -> list[dict]:
    """Study kappa (MURA's protocol) with its 95 % bootstrap interval over patients, per body
    part and over all of them (last, ``body_part`` "all"): {"body_part", "studies",
    "value", "low", "high"}; None where kappa is undefined (one class), and no interval for
    a body part of a single patient (there is nothing to resample)."""
    from . import stats  # noqa: PLC0415

    rows = np.asarray(rows, np.int64)
    probs = np.asarray(probs)
    parts = np.asarray(split.body_parts)[rows]
    design = stats.Design.of(np.asarray(split.labels)[rows], np.asarray(split.patient_ids)[rows],
                             np.asarray(split.study_ids)[rows], parts)
    out = []
    for part in [*np.unique(parts).tolist(), "all"]:
        mask = np.ones(len(rows), bool) if part == "all" else parts == part
        sub = design.subset(mask)
        if sub.n_patients > 1:
            kappa = stats.intervals(sub, probs[mask], ("study_kappa",), seed=seed)["study_kappa"]
        else:
            value = metrics.study_kappa(sub.labels, probs[mask], sub.study)
            kappa = {"value": None if np.isnan(value) else value, "low": None, "high": None}
        out.append({"body_part": part, "studies": int(len(sub.study_labels)), **kappa})
    return out
