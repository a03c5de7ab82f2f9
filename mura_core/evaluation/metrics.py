"""Accuracy per image, per patient and per study, Cohen's kappa, confusion matrices.

Every function is a plain function over 1-D arrays of one split. Conventions (docs/mura.md):

- Labels follow the project's convention: ``1`` = normal, ``0`` = abnormal.
- Probabilities are the network's output, P(normal). An image or a study is predicted normal
  when its probability is at least ``threshold`` (0.5), i.e. abnormal exactly when
  P(abnormal) > 0.5, which is MURA's rule.
- Per patient (the assignment's rule): a patient's class is the majority class of all of that
  patient's images, applied to the predictions and to the labels alike; a tie goes to
  abnormal (0) on both sides. A patient is a patient id within one split, so a patient whose
  images sit under two body parts is one patient.
- Per study (MURA's protocol): average the probabilities of the study's images, threshold the
  mean at 0.5; Cohen's kappa is computed on studies. A study's key must be unique within the
  split; ``study_keys`` builds (body part, patient, study) keys, since MURA reuses
  ``study1`` for every patient.
- The majority-class baseline predicts one class for every image (by default the majority of
  the split's image labels, ties to abnormal); it shows what chance looks like.

``metric_table`` gathers all of it for a split into a plain dict that ``json.dumps`` accepts.
"""
from __future__ import annotations

import math

import numpy as np

from ..data.mura import ABNORMAL, NORMAL
from ..formatting import format_metric

CLASS_NAMES = ("abnormal", "normal")  # index = label value
THRESHOLD = 0.5
#: How each metric is named to people: tables, figures, the command line, the discussions.
METRIC_NAMES = {
    "loss": "loss (BCE)",
    "image_accuracy": "accuracy per image",
    "patient_accuracy": "accuracy per patient",
    "study_accuracy": "accuracy per study",
    "study_kappa": "Cohen's kappa per study",
    "image_auc": "AUROC per image",
    "study_auc": "AUROC per study",
}


def _as_binary(values, name: str) -> np.ndarray:
    """1-D int64 array of 0/1 values; accepts bool, int or float 0./1. input."""
    arr = np.asarray(values).reshape(-1)
    if arr.dtype == bool:
        return arr.astype(np.int64)
    out = arr.astype(np.int64)
    if arr.size and (not np.array_equal(out, arr) or out.min() < 0 or out.max() > 1):
        raise ValueError(f"{name} must hold only 0 (abnormal) and 1 (normal)")
    return out


def _as_probs(probs) -> np.ndarray:
    arr = np.asarray(probs, dtype=np.float64).reshape(-1)
    if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError("probabilities must be finite and within [0, 1]")
    return arr


def _check_lengths(**arrays) -> int:
    sizes = {name: len(a) for name, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        detail = ", ".join(f"{name}={n}" for name, n in sizes.items())
        raise ValueError(f"arrays must have one length, got {detail}")
    return next(iter(sizes.values()))


def predict_labels(probs, threshold: float = THRESHOLD) -> np.ndarray:
    """0/1 predictions (int64) from P(normal): normal when ``prob >= threshold``."""
    return (_as_probs(probs) >= threshold).astype(np.int64)


def accuracy(labels, preds) -> float:
    """Fraction of positions where ``preds == labels`` (per image accuracy on image arrays).

    An empty input has no accuracy and gives NaN.
    """
    y, p = _as_binary(labels, "labels"), _as_binary(preds, "preds")
    _check_lengths(labels=y, preds=p)
    if y.size == 0:
        return float("nan")
    return float(np.mean(y == p))


def group_majority(values, groups) -> tuple[np.ndarray, np.ndarray]:
    """Majority class of the 0/1 ``values`` within each group; a tie goes to abnormal (0).

    Returns ``(keys, majority)``: the sorted unique group keys and, per key, 1 when strictly
    more than half of that group's values are 1, else 0.
    """
    v = _as_binary(values, "values")
    g = np.asarray(groups).reshape(-1)
    _check_lengths(values=v, groups=g)
    keys, inverse = np.unique(g, return_inverse=True)
    ones = np.bincount(inverse, weights=v, minlength=len(keys))
    count = np.bincount(inverse, minlength=len(keys))
    return keys, (2 * ones > count).astype(np.int64)


def patient_labels_and_predictions(labels, preds, patient_ids):
    """(patient keys, patient labels, patient predictions) under the majority rule above."""
    keys, label_major = group_majority(labels, patient_ids)
    keys_p, pred_major = group_majority(preds, patient_ids)
    assert np.array_equal(keys, keys_p)
    return keys, label_major, pred_major


def patient_accuracy(labels, preds, patient_ids) -> float:
    """Per patient accuracy: majority of a patient's image predictions against the majority
    of the patient's image labels, ties to abnormal (0) on both sides."""
    _, y, p = patient_labels_and_predictions(labels, preds, patient_ids)
    return accuracy(y, p)


def study_keys(body_parts, patient_ids, study_ids) -> np.ndarray:
    """Unique study keys ``"BODY_PART/patient/study"`` (MURA reuses study names per patient)."""
    bp, pid, sid = (np.asarray(a).reshape(-1).astype(str) for a in (body_parts, patient_ids, study_ids))
    _check_lengths(body_parts=bp, patient_ids=pid, study_ids=sid)
    if bp.size == 0:
        return np.zeros(0, dtype=str)
    return np.char.add(np.char.add(np.char.add(np.char.add(bp, "/"), pid), "/"), sid)


def study_probabilities(labels, probs, study_ids):
    """(study keys, study labels, mean P(normal) of the study's images).

    Every image of a study carries the study's label; a study whose images disagree is an
    error in the caller's keys (usually a study id that is not unique within the split).
    """
    y = _as_binary(labels, "labels")
    pr = _as_probs(probs)
    s = np.asarray(study_ids).reshape(-1)
    _check_lengths(labels=y, probs=pr, study_ids=s)
    keys, inverse = np.unique(s, return_inverse=True)
    count = np.bincount(inverse, minlength=len(keys))
    mean_prob = np.bincount(inverse, weights=pr, minlength=len(keys)) / np.maximum(count, 1)
    label_sum = np.bincount(inverse, weights=y, minlength=len(keys))
    if np.any((label_sum != 0) & (label_sum != count)):
        bad = str(keys[(label_sum != 0) & (label_sum != count)][0])
        raise ValueError(
            f"study {bad!r} has images with different labels; study ids must be unique within "
            "the split (build them with metrics.study_keys(body_parts, patient_ids, study_ids))"
        )
    return keys, (label_sum > 0).astype(np.int64), mean_prob


def study_accuracy(labels, probs, study_ids, threshold: float = THRESHOLD) -> float:
    """MURA's per study accuracy: mean probability of a study's images thresholded at 0.5."""
    _, y, mean_prob = study_probabilities(labels, probs, study_ids)
    return accuracy(y, predict_labels(mean_prob, threshold))


def cohen_kappa(labels, preds) -> float:
    """Cohen's kappa between two 0/1 ratings: ``(p_o - p_e) / (1 - p_e)``.

    ``p_o`` is the observed agreement, ``p_e`` the agreement expected by chance from the two
    marginals. 1 is perfect agreement, 0 chance level. When both ratings use one single
    class (``p_e == 1``) kappa is undefined and NaN is returned.
    """
    y, p = _as_binary(labels, "labels"), _as_binary(preds, "preds")
    n = _check_lengths(labels=y, preds=p)
    if n == 0:
        return float("nan")
    p_o = float(np.mean(y == p))
    y1, p1 = float(np.mean(y)), float(np.mean(p))
    p_e = y1 * p1 + (1.0 - y1) * (1.0 - p1)
    if p_e >= 1.0:
        return float("nan")
    return (p_o - p_e) / (1.0 - p_e)


def study_kappa(labels, probs, study_ids, threshold: float = THRESHOLD) -> float:
    """Cohen's kappa on studies under MURA's protocol (mean probability, threshold 0.5)."""
    _, y, mean_prob = study_probabilities(labels, probs, study_ids)
    return cohen_kappa(y, predict_labels(mean_prob, threshold))


def confusion_matrix(labels, preds) -> np.ndarray:
    """2x2 int64 counts: row = true class, column = predicted class, index 0 abnormal, 1 normal.

    ``cm[0, 0]`` abnormal called abnormal, ``cm[0, 1]`` abnormal called normal (a missed
    finding), ``cm[1, 0]`` normal called abnormal, ``cm[1, 1]`` normal called normal.
    """
    y, p = _as_binary(labels, "labels"), _as_binary(preds, "preds")
    _check_lengths(labels=y, preds=p)
    return np.bincount(2 * y + p, minlength=4).reshape(2, 2).astype(np.int64)


def _scored_labels(labels, scores):
    """(labels as 0/1, scores as float64, number of 1s, number of 0s), checked alike."""
    y = _as_binary(labels, "labels")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    _check_lengths(labels=y, scores=s)
    n_pos = int(y.sum())
    return y, s, n_pos, int(y.size) - n_pos


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve of ``scores`` for the class 1, with ties counted as half.

    (Mann-Whitney U over average ranks.) NaN when only one class is present.
    """
    from scipy.stats import rankdata

    y, s, n_pos, n_neg = _scored_labels(labels, scores)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)  # average ranks over runs of equal scores
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC curve of ``scores`` for the class 1: (false positive rate, true positive rate,
    thresholds), float64, one point per distinct score from the highest down (a point is
    "score >= threshold called 1"), after a first point (0, 0) at threshold +inf; the last
    point is (1, 1). Its trapezoid area is ``roc_auc``. Raises ValueError when only one class
    is present (the curve is then undefined)."""
    y, s, n_pos, n_neg = _scored_labels(labels, scores)
    if n_pos == 0 or n_neg == 0:
        raise ValueError("a ROC curve needs both classes among the labels")
    order = np.argsort(-s, kind="mergesort")
    sorted_s = s[order]
    last = np.r_[np.flatnonzero(sorted_s[1:] != sorted_s[:-1]), s.size - 1]  # end of each tie run
    true_pos = np.cumsum(y[order])[last]
    false_pos = (last + 1) - true_pos
    return (np.r_[0.0, false_pos / n_neg], np.r_[0.0, true_pos / n_pos],
            np.r_[np.inf, sorted_s[last]])


def sensitivity_specificity(labels, probs, threshold: float = THRESHOLD) -> tuple[float, float]:
    """MURA's operating point, with abnormal as the finding: sensitivity = the share of
    abnormal cases called abnormal (P(normal) < threshold), specificity = the share of normal
    cases called normal. NaN for a class that is absent."""
    y = _as_binary(labels, "labels")
    preds = predict_labels(probs, threshold)
    _check_lengths(labels=y, preds=preds)
    abnormal, normal = y == ABNORMAL, y == NORMAL
    sensitivity = float(np.mean(preds[abnormal] == ABNORMAL)) if abnormal.any() else float("nan")
    specificity = float(np.mean(preds[normal] == NORMAL)) if normal.any() else float("nan")
    return sensitivity, specificity


def binary_cross_entropy(labels, probs, eps: float = 1e-7) -> float:
    """Mean BCE of P(normal) against the labels, probabilities clipped to [eps, 1 - eps]."""
    y = _as_binary(labels, "labels").astype(np.float64)
    pr = np.clip(_as_probs(probs), eps, 1.0 - eps)
    _check_lengths(labels=y, probs=pr)
    if y.size == 0:
        return float("nan")
    return float(-np.mean(y * np.log(pr) + (1.0 - y) * np.log(1.0 - pr)))


def majority_class(labels) -> int:
    """The more frequent class of the labels; a tie goes to abnormal (0)."""
    y = _as_binary(labels, "labels")
    return int(2 * int(y.sum()) > y.size)


def _finite_or_none(x: float):
    return float(x) if math.isfinite(x) else None


def _summary(y, probs, patient_ids, skeys, threshold: float, majority: int) -> dict:
    preds = predict_labels(probs, threshold)
    _, py, pp = patient_labels_and_predictions(y, preds, patient_ids)
    _, sy, sprob = study_probabilities(y, probs, skeys)
    sp = predict_labels(sprob, threshold)
    const_img = np.full(y.size, majority, dtype=np.int64)
    _, _, pconst = patient_labels_and_predictions(y, const_img, patient_ids)
    sconst = np.full(sy.size, majority, dtype=np.int64)
    return {
        "n_images": int(y.size),
        "n_patients": int(py.size),
        "n_studies": int(sy.size),
        "n_normal_images": int(y.sum()),
        "n_normal_patients": int(py.sum()),
        "n_normal_studies": int(sy.sum()),
        "loss": _finite_or_none(binary_cross_entropy(y, probs)),
        "image_accuracy": _finite_or_none(accuracy(y, preds)),
        "patient_accuracy": _finite_or_none(accuracy(py, pp)),
        "study_accuracy": _finite_or_none(accuracy(sy, sp)),
        "study_kappa": _finite_or_none(cohen_kappa(sy, sp)),
        "image_auc": _finite_or_none(roc_auc(y, probs)),
        "study_auc": _finite_or_none(roc_auc(sy, sprob)),
        "confusion_image": confusion_matrix(y, preds).tolist(),
        "confusion_patient": confusion_matrix(py, pp).tolist(),
        "confusion_study": confusion_matrix(sy, sp).tolist(),
        "baseline": {
            "image_accuracy": _finite_or_none(accuracy(y, const_img)),
            "patient_accuracy": _finite_or_none(accuracy(py, pconst)),
            "study_accuracy": _finite_or_none(accuracy(sy, sconst)),
            "study_kappa": _finite_or_none(cohen_kappa(sy, sconst)),
        },
    }


def metric_table(
    probs,
    labels,
    patient_ids,
    study_ids,
    body_parts,
    *,
    threshold: float = THRESHOLD,
    majority: int | None = None,
) -> dict:
    """Every metric of one split, overall and per body part, as a JSON-ready dict.

    Args:
        probs: (N,) P(normal) per image.
        labels: (N,) 1 normal / 0 abnormal per image.
        patient_ids, study_ids, body_parts: (N,) per image; studies are keyed by
            (body part, patient, study) here, so plain MURA study names (``study1_positive``)
            are fine.
        majority: the class the majority-class baseline predicts; default: the majority of
            these labels (pass the train split's majority when scoring valid, to be strict).

    Returns a dict with ``n_images``, ``n_patients``, ``n_studies``, ``loss`` (mean BCE),
    ``image_accuracy``, ``patient_accuracy``, ``study_accuracy``, ``study_kappa``,
    ``image_auc``, ``study_auc``, ``confusion_image|patient|study`` (2x2 lists, rows = true
    class, columns = predicted, index 0 abnormal, 1 normal), ``baseline`` (the same
    accuracies and kappa for the majority-class predictor), ``majority_class``,
    ``threshold``, ``classes`` and ``per_body_part`` (body part -> the same fields without
    the nesting). Undefined values (a kappa with one class, an AUC with one class) are None.
    """
    y = _as_binary(labels, "labels")
    pr = _as_probs(probs)
    pid = np.asarray(patient_ids).reshape(-1).astype(str)
    bp = np.asarray(body_parts).reshape(-1).astype(str)
    sid = np.asarray(study_ids).reshape(-1).astype(str)
    _check_lengths(probs=pr, labels=y, patient_ids=pid, study_ids=sid, body_parts=bp)
    if y.size == 0:
        raise ValueError("metric_table needs at least one image")
    skeys = study_keys(bp, pid, sid)
    major = majority_class(y) if majority is None else int(majority)
    if major not in (0, 1):
        raise ValueError("majority must be 0 (abnormal) or 1 (normal)")
    table = _summary(y, pr, pid, skeys, threshold, major)
    table.update(
        {
            "majority_class": major,
            "threshold": float(threshold),
            "classes": list(CLASS_NAMES),
            "per_body_part": {
                part: _summary(y[bp == part], pr[bp == part], pid[bp == part],
                               skeys[bp == part], threshold, major)
                for part in np.unique(bp).tolist()
            },
        }
    )
    return table


#: The rows of a metric table as shown to people (command line and report alike):
#: (label, key into a ``metric_table`` dict, or a (section, key) pair, kind "int"|"pct"|"float").
METRIC_ROWS = (
    ("images", "n_images", "int"),
    ("patients", "n_patients", "int"),
    ("studies", "n_studies", "int"),
    *((METRIC_NAMES[key], key, kind) for key, kind in (
        ("loss", "float"), ("image_accuracy", "pct"), ("patient_accuracy", "pct"),
        ("study_accuracy", "pct"), ("study_kappa", "float"), ("image_auc", "float"),
        ("study_auc", "float"))),
    ("majority class: accuracy per image", ("baseline", "image_accuracy"), "pct"),
    ("majority class: accuracy per patient", ("baseline", "patient_accuracy"), "pct"),
    ("majority class: accuracy per study", ("baseline", "study_accuracy"), "pct"),
)


def metric_value(table: dict, key):
    """The value of a ``METRIC_ROWS`` key in a metric table (None when absent)."""
    if isinstance(key, tuple):
        return (table.get(key[0]) or {}).get(key[1])
    return table.get(key)


def format_metric_table(tables: dict[str, dict], per_body_part: bool = False) -> str:
    """A plain-text table, one column per split (e.g. ``{"train": t, "valid": v}``)."""
    names = list(tables)
    width = max(len(r[0]) for r in METRIC_ROWS)
    lines = [f"{'':<{width}}  " + "  ".join(f"{n:>10}" for n in names)]
    for label, key, kind in METRIC_ROWS:
        cells = (format_metric(metric_value(tables[n], key), kind) for n in names)
        lines.append(f"{label:<{width}}  " + "  ".join(f"{c:>10}" for c in cells))
    major = {tables[n]["majority_class"] for n in names}
    lines.append(
        "majority class predicted: "
        + ", ".join(CLASS_NAMES[m] for m in sorted(major))
        + "; per patient ties go to abnormal"
    )
    if per_body_part:
        parts = sorted({p for n in names for p in tables[n]["per_body_part"]})
        lines.append("")
        lines.append("accuracy per image / patient / study, and study kappa, by body part")
        for part in parts:
            cells = []
            for n in names:
                t = tables[n]["per_body_part"].get(part)
                if t is None:
                    cells.append(f"{n}: -")
                    continue
                cells.append(
                    f"{n}: {format_metric(t.get('image_accuracy'), 'pct')}"
                    f" / {format_metric(t.get('patient_accuracy'), 'pct')}"
                    f" / {format_metric(t.get('study_accuracy'), 'pct')},"
                    f" kappa {format_metric(t.get('study_kappa'), 'float')}"
                )
            lines.append(f"  {part:<12} " + "; ".join(cells))
    return "\n".join(lines)
