"""Prediction and scoring: P(normal) for a cached split or for image files, and the metric
tables (``metrics.metric_table``) of train and valid (``analysis``: what the report draws
from the predictions).

Every prediction runs the model in evaluation mode (no dropout, no augmentation) on images
standardized exactly as in training.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..data.batches import iterate_batches
from . import metrics


def patient_subset(split, size: int | None, seed: int) -> np.ndarray:
    """Sorted row indices of a fixed subset of a split: whole patients, in an order drawn from
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
        rows = patient_subset(split, max_images, seed)
        probs, tables[name] = evaluate(model, split, cache.mean, cache.std, indices=rows,
                                       majority=majority)
        predictions[name] = (rows, probs)
    return (tables, predictions) if with_predictions else tables


def load_images(model, paths):
    """Image files as the network's input, preprocessed exactly as in training (the size, mode,
    mean and std stored in ``model.metadata["preprocessing"]``).

    Returns ``(results, images, x)``: ``results`` a list of ``(path, error message or None)``
    in input order (a file that is missing or not an image gets its error, the others are
    still read); ``images`` (M, S, S) uint8 and ``x`` (M, 1, S, S) float32, standardized, of
    the M readable files in input order."""
    from ..data.preprocess import ImageDecodeError, preprocess_image

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
