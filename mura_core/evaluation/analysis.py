"""What the report draws from a split's predictions: intervals of every metric, the most
confident mistakes, ROC curves, study kappa per body part."""
from __future__ import annotations

import numpy as np

from . import metrics, stats


def split_intervals(split, rows: np.ndarray, probs: np.ndarray, seed: int = 0) -> dict:
    """``stats.intervals`` of the predictions ``probs`` of the rows ``rows`` of a split: every
    metric of ``stats.METRICS`` with its 95 % bootstrap interval over patients."""
    rows = np.asarray(rows, np.int64)
    grouping = stats.Grouping.of(np.asarray(split.labels)[rows], np.asarray(split.patient_ids)[rows],
                             np.asarray(split.study_ids)[rows], np.asarray(split.body_parts)[rows])
    return stats.intervals(grouping, probs, seed=seed)


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
    rows = np.asarray(rows, np.int64)
    probs = np.asarray(probs)
    parts = np.asarray(split.body_parts)[rows]
    grouping = stats.Grouping.of(np.asarray(split.labels)[rows], np.asarray(split.patient_ids)[rows],
                             np.asarray(split.study_ids)[rows], parts)
    out = []
    for part in [*np.unique(parts).tolist(), "all"]:
        mask = np.ones(len(rows), bool) if part == "all" else parts == part
        sub = grouping.subset(mask)
        if sub.n_patients > 1:
            kappa = stats.intervals(sub, probs[mask], ("study_kappa",), seed=seed)["study_kappa"]
        else:
            value = metrics.study_kappa(sub.labels, probs[mask], sub.study)
            kappa = {"value": None if np.isnan(value) else value, "low": None, "high": None}
        out.append({"body_part": part, "studies": int(len(sub.study_labels)), **kappa})
    return out
