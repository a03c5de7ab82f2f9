"""Statistics that decide: confidence intervals and paired tests for the report's numbers.

One valid split, predicted by one network (or by one network trained from k seeds), gives a
metric; how much would it move with other patients, or another seed? Two tools, both from
SciPy, over per-image predictions:

- **Bootstrap intervals resampling whole patients** (``scipy.stats.bootstrap``, percentile
  method). A patient's images and studies are not independent of each other, so the unit of
  resampling is the patient: a resample draws as many patients as the split has, with
  replacement, and every image, study and patient-level vote of a drawn patient counts as
  many times as it was drawn. With k > 1 seeds the seeds are resampled too (a two-level
  bootstrap), so the interval carries the spread between training runs as well. Each metric
  is a weighted sum over the drawn patients, computed for a whole batch of resamples at once.
- **The exact McNemar test** (``scipy.stats.binomtest``) on paired per-image correctness of
  two predictors on the same images: of the images exactly one of them gets right, is the
  split far from even?

``compare`` puts them together: the interval of the difference between two predictors
(resampling the same patients and seeds for both) and McNemar's p. A difference is called
established only when both agree: the interval excludes zero and p < 0.05.

Conventions are those of ``metrics``: label 1 normal, 0 abnormal; an image is predicted normal
when P(normal) >= 0.5; a patient's class is the majority of its images, ties to abnormal; a
study's probability is the mean of its images'; kappa is Cohen's on studies; AUROC is of
P(normal) for the class normal.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from . import metrics

CONFIDENCE = 0.95
N_RESAMPLES = 2000
ALPHA = 0.05
#: The metrics ``intervals`` computes, in the order tables show them.
METRICS = ("image_accuracy", "patient_accuracy", "study_accuracy", "study_kappa", "image_auc",
           "study_auc")
_BATCH = 250  # resamples evaluated at once: (250, images) weight matrices


@dataclass(frozen=True)
class Design:
    """Who is who in a split: per image its label, patient and study (as indices), and the
    study and patient labels under the metrics' rules. Build it with ``Design.of``."""

    labels: np.ndarray          # (N,) int64, 1 normal / 0 abnormal
    patient: np.ndarray         # (N,) int64 index into the P patients
    study: np.ndarray           # (N,) int64 index into the S studies
    study_patient: np.ndarray   # (S,) int64: the patient of each study
    study_labels: np.ndarray    # (S,) int64
    patient_labels: np.ndarray  # (P,) int64, majority of the patient's image labels

    @classmethod
    def of(cls, labels, patient_ids, study_ids, body_parts=None) -> "Design":
        """From per-image arrays; studies are keyed by (body part, patient, study) when body
        parts are given, as ``metrics.metric_table`` keys them."""
        y = metrics._as_binary(labels, "labels")
        pid = np.asarray(patient_ids).reshape(-1).astype(str)
        sid = np.asarray(study_ids).reshape(-1).astype(str)
        if body_parts is not None:
            sid = metrics.study_keys(body_parts, pid, sid)
        metrics._check_lengths(labels=y, patient_ids=pid, study_ids=sid)
        _, patient = np.unique(pid, return_inverse=True)
        _, study = np.unique(sid, return_inverse=True)
        study_patient = np.zeros(study.max(initial=-1) + 1, dtype=np.int64)
        study_patient[study] = patient
        study_labels = np.zeros_like(study_patient)
        study_labels[study] = y
        _, patient_labels = metrics.group_majority(y, patient)
        return cls(y, patient.astype(np.int64), study.astype(np.int64), study_patient,
                   study_labels, patient_labels)

    @property
    def n_patients(self) -> int:
        return len(self.patient_labels)

    def subset(self, mask) -> "Design":
        """The design of the images where ``mask`` is true (e.g. one body part)."""
        mask = np.asarray(mask, dtype=bool)
        return Design.of(self.labels[mask], self.patient[mask], self.study[mask])


# --------------------------------------------------------------------------- predictions


@dataclass(frozen=True)
class _Votes:
    """What the metrics need from k predictors' probabilities (k, N), per level."""

    image_correct: np.ndarray    # (k, N) 0/1
    patient_correct: np.ndarray  # (k, P) 0/1
    study_pred: np.ndarray       # (k, S) 0/1
    study_prob: np.ndarray       # (k, S) mean P(normal) of the study's images
    image_prob: np.ndarray       # (k, N)


def _votes(design: Design, probs) -> _Votes:
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    if probs.shape[1] != len(design.labels):
        raise ValueError(f"{probs.shape[1]} predictions for {len(design.labels)} images")
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1:
        raise ValueError("probabilities must be finite and within [0, 1]")
    pred = (probs >= metrics.THRESHOLD).astype(np.int64)
    image_correct = (pred == design.labels).astype(np.float64)
    patient_correct = np.stack([
        (metrics.group_majority(p, design.patient)[1] == design.patient_labels) for p in pred
    ]).astype(np.float64)
    counts = np.bincount(design.study, minlength=len(design.study_labels))
    study_prob = np.stack([np.bincount(design.study, weights=p, minlength=len(counts)) / counts
                           for p in probs])
    study_pred = (study_prob >= metrics.THRESHOLD).astype(np.int64)
    return _Votes(image_correct, patient_correct, study_pred, study_prob, probs)


# --------------------------------------------------------------------------- weighted metrics
# Each function takes per-unit weights w (B, M) (how often each image / study / patient was
# drawn in each of B resamples) and per-seed weights s (B, k) (how often each seed was drawn,
# summing to k), and returns the metric of each resample, (B,).


def _rate(w, s, hits):
    """Weighted mean of 0/1 ``hits`` (k, M), pooled over the drawn seeds."""
    per_seed = w @ hits.T / w.sum(axis=1, keepdims=True)  # (B, k)
    return (s * per_seed).sum(axis=1) / s.sum(axis=1)


def _kappa(w, s, labels, pred):
    """Cohen's kappa of the pooled weighted 2x2 table of ``pred`` (k, M) against ``labels``."""
    n = w.sum(axis=1)
    k = s.sum(axis=1)
    agree = (s * (w @ (pred == labels).T)).sum(axis=1) / (k * n)
    pred_normal = (s * (w @ pred.T)).sum(axis=1) / (k * n)
    label_normal = (w @ labels) / n
    chance = label_normal * pred_normal + (1 - label_normal) * (1 - pred_normal)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(chance < 1, (agree - chance) / (1 - chance), np.nan)


def _auc(w, s, labels, scores):
    """Weighted AUROC of ``scores`` (k, M) for class 1, ties counted half, pooled over seeds
    as the seed-weighted mean of each seed's AUROC."""
    out = np.zeros(w.shape[0])
    positive = labels == 1
    for j, score in enumerate(scores):
        order = np.argsort(score, kind="mergesort")
        sorted_score = score[order]
        starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
        ws = w[:, order]
        pos = np.add.reduceat(ws * positive[order], starts, axis=1)   # (B, groups)
        neg = np.add.reduceat(ws * ~positive[order], starts, axis=1)
        below = np.cumsum(neg, axis=1) - neg                          # negatives scored lower
        with np.errstate(divide="ignore", invalid="ignore"):
            auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))
        out += s[:, j] * auc
    return out / s.sum(axis=1)


def _metric(name: str, design: Design, votes: _Votes, patient_w, s):
    if name == "image_accuracy":
        return _rate(patient_w[:, design.patient], s, votes.image_correct)
    if name == "patient_accuracy":
        return _rate(patient_w, s, votes.patient_correct)
    study_w = patient_w[:, design.study_patient]
    if name == "study_accuracy":
        return _rate(study_w, s, (votes.study_pred == design.study_labels).astype(np.float64))
    if name == "study_kappa":
        return _kappa(study_w, s, design.study_labels, votes.study_pred)
    if name == "image_auc":
        return _auc(patient_w[:, design.patient], s, design.labels, votes.image_prob)
    if name == "study_auc":
        return _auc(study_w, s, design.study_labels, votes.study_prob)
    raise ValueError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")


def _draw_counts(index, size: int):
    """Resampled indices (B, n) -> how often each of ``size`` units was drawn, (B, size)."""
    index = np.asarray(index, dtype=np.int64).reshape(-1, index.shape[-1])
    rows = np.arange(index.shape[0])[:, None] * size
    return np.bincount((index + rows).ravel(), minlength=index.shape[0] * size) \
        .reshape(index.shape[0], size).astype(np.float64)


def _bootstrap(statistic, design: Design, k: int, n_resamples: int, confidence: float,
               seed: int):
    """scipy.stats.bootstrap over patients (and seeds when k > 1) of ``statistic(pw, s)``,
    which returns an (m, B) array for patient weights pw (B, P) and seed weights s (B, k)."""
    from scipy import stats as sps  # noqa: PLC0415

    patients = np.arange(design.n_patients)
    if k > 1:
        data = (patients, np.arange(k))

        def wrapped(pidx, sidx, axis=-1):
            return statistic(_draw_counts(pidx, design.n_patients), _draw_counts(sidx, k))
    else:
        data = (patients,)

        def wrapped(pidx, axis=-1):
            pw = _draw_counts(pidx, design.n_patients)
            return statistic(pw, np.ones((pw.shape[0], 1)))
    point = statistic(np.ones((1, design.n_patients)), np.ones((1, k)))[:, 0]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        # A statistic that is undefined (one class) or constant over the resamples (accuracy
        # 1.0) is expected here; it comes out as None or a zero-width interval.
        warnings.simplefilter("ignore", sps.DegenerateDataWarning)
        result = sps.bootstrap(data, wrapped, vectorized=True, n_resamples=n_resamples,
                               batch=_BATCH, confidence_level=confidence, method="percentile",
                               rng=np.random.default_rng(seed))
    low = np.atleast_1d(result.confidence_interval.low)
    high = np.atleast_1d(result.confidence_interval.high)
    return point, low, high


def _finite(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


# --------------------------------------------------------------------------- public API


def intervals(design: Design, probs, names=METRICS, *, n_resamples: int = N_RESAMPLES,
              confidence: float = CONFIDENCE, seed: int = 0) -> dict[str, dict]:
    """Each metric of ``names`` with its bootstrap interval: name -> {"value", "low", "high"}.

    probs: (N,) P(normal) of one network, or (k, N) of k networks (e.g. seeds), whose value
    is then the metric pooled over the k (their mean for rates, the kappa of the pooled
    table). Undefined values (a kappa or AUROC with one class) are None."""
    votes = _votes(design, probs)
    k = votes.image_prob.shape[0]

    def statistic(pw, s):
        return np.stack([_metric(name, design, votes, pw, s) for name in names])

    point, low, high = _bootstrap(statistic, design, k, n_resamples, confidence, seed)
    return {name: {"value": _finite(point[i]), "low": _finite(low[i]), "high": _finite(high[i])}
            for i, name in enumerate(names)}


def mcnemar(correct_a, correct_b) -> dict:
    """Exact McNemar test of paired per-image correctness (bool or 0/1 arrays, same images).

    Returns {"a_only": images only A gets right, "b_only": only B, "p_value": two-sided exact
    binomial p of a_only among the a_only + b_only discordant images under p = 1/2 (1.0 when
    there are none)}."""
    from scipy import stats as sps  # noqa: PLC0415

    a = np.asarray(correct_a, dtype=bool).reshape(-1)
    b = np.asarray(correct_b, dtype=bool).reshape(-1)
    metrics._check_lengths(correct_a=a, correct_b=b)
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    p = 1.0 if a_only + b_only == 0 else float(sps.binomtest(a_only, a_only + b_only, 0.5).pvalue)
    return {"a_only": a_only, "b_only": b_only, "p_value": p}


def compare(design: Design, probs_a, probs_b, metric: str = "image_accuracy", *,
            n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0,
            alpha: float = ALPHA) -> dict:
    """A against B on the same images: the difference of ``metric`` (A minus B) with its
    bootstrap interval (the same patients, and seeds when given (k, N), drawn for both), and
    McNemar's test on per-image correctness of their seed-mean predictions.

    Returns {"metric", "a", "b", "difference", "low", "high", "a_only", "b_only", "p_value",
    "verdict"}; verdict is "a" or "b" (the better one) when the interval excludes zero and
    p < alpha in the same direction, else None (not established)."""
    va, vb = _votes(design, probs_a), _votes(design, probs_b)
    k = va.image_prob.shape[0]
    if vb.image_prob.shape[0] != k:
        raise ValueError("compare needs the same number of seeds on both sides")

    def statistic(pw, s):
        a = _metric(metric, design, va, pw, s)
        b = _metric(metric, design, vb, pw, s)
        return np.stack([a - b, a, b])

    point, low, high = _bootstrap(statistic, design, k, n_resamples, confidence, seed)
    mean_a, mean_b = va.image_prob.mean(axis=0), vb.image_prob.mean(axis=0)
    test = mcnemar((mean_a >= metrics.THRESHOLD) == design.labels,
                   (mean_b >= metrics.THRESHOLD) == design.labels)
    verdict = None
    if np.isfinite(low[0]) and np.isfinite(high[0]) and test["p_value"] < alpha:
        if low[0] > 0 and test["a_only"] > test["b_only"]:
            verdict = "a"
        elif high[0] < 0 and test["b_only"] > test["a_only"]:
            verdict = "b"
    return {"metric": metric, "a": _finite(point[1]), "b": _finite(point[2]),
            "difference": _finite(point[0]), "low": _finite(low[0]), "high": _finite(high[0]),
            **test, "verdict": verdict}
