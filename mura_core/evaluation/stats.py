"""Statistics that decide: confidence intervals and paired tests for the report's numbers.

One valid split, predicted by one network (or by one network trained from k seeds), gives a
metric; how much would it move with other patients, or another seed? Two tools, both from
SciPy, over per-image predictions:

- **Bootstrap intervals resampling seeds, then whole patients within each seed** (a
  two-level bootstrap, percentile method). A patient's images and studies are not
  independent of each other, so the unit of resampling is the patient: a resample draws as
  many patients as the split has, with replacement, and every image, study and
  patient-level vote of a drawn patient counts as many times as it was drawn. A setting
  trained from k seeds is k runs whose spread is part of what a verdict must survive: each
  resample first draws k of the seeds with replacement, then patients afresh for each seed
  drawn, and a setting's metric is the mean over its seeds. Each metric is a weighted sum
  over the drawn patients, computed for a whole batch of resamples at once.
- **The exact McNemar test** (``scipy.stats.binomtest``) on paired per-image correctness of
  two predictors on the same images: of the images exactly one of them gets right, is the
  split far from even? Between two settings, one test per seed pair, combined into the
  stratified test.

``compare`` puts them together: a difference between two settings is called established
only when the interval of the difference excludes zero, the stratified McNemar test gives
p < 0.05 the same way, and every seed pair shows the same sign.

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
class Grouping:
    """How a split's images group into patients and studies: per image its label, patient
    and study (as indices), and the study and patient labels under the metrics' rules (the
    unit a bootstrap resamples is the patient). Build it with ``Grouping.of``."""

    labels: np.ndarray          # (N,) int64, 1 normal / 0 abnormal
    patient: np.ndarray         # (N,) int64 index into the P patients
    study: np.ndarray           # (N,) int64 index into the S studies
    study_patient: np.ndarray   # (S,) int64: the patient of each study
    study_labels: np.ndarray    # (S,) int64
    patient_labels: np.ndarray  # (P,) int64, majority of the patient's image labels

    @classmethod
    def of(cls, labels, patient_ids, study_ids, body_parts=None) -> "Grouping":
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

    def subset(self, mask) -> "Grouping":
        """The grouping of the images where ``mask`` is true (e.g. one body part)."""
        mask = np.asarray(mask, dtype=bool)
        return Grouping.of(self.labels[mask], self.patient[mask], self.study[mask])


# --------------------------------------------------------------------------- predictions


@dataclass(frozen=True)
class _Votes:
    """What the metrics need from k predictors' probabilities (k, N), per level."""

    image_correct: np.ndarray    # (k, N) 0/1
    patient_correct: np.ndarray  # (k, P) 0/1
    study_pred: np.ndarray       # (k, S) 0/1
    study_prob: np.ndarray       # (k, S) mean P(normal) of the study's images
    image_prob: np.ndarray       # (k, N)


def _votes(grouping: Grouping, probs) -> _Votes:
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    if probs.shape[1] != len(grouping.labels):
        raise ValueError(f"{probs.shape[1]} predictions for {len(grouping.labels)} images")
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1:
        raise ValueError("probabilities must be finite and within [0, 1]")
    pred = (probs >= metrics.THRESHOLD).astype(np.int64)
    image_correct = (pred == grouping.labels).astype(np.float64)
    patient_correct = np.stack([
        (metrics.group_majority(p, grouping.patient)[1] == grouping.patient_labels) for p in pred
    ]).astype(np.float64)
    counts = np.bincount(grouping.study, minlength=len(grouping.study_labels))
    study_prob = np.stack([np.bincount(grouping.study, weights=p, minlength=len(counts)) / counts
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


def _metric(name: str, grouping: Grouping, votes: _Votes, patient_w, s):
    if name == "image_accuracy":
        return _rate(patient_w[:, grouping.patient], s, votes.image_correct)
    if name == "patient_accuracy":
        return _rate(patient_w, s, votes.patient_correct)
    study_w = patient_w[:, grouping.study_patient]
    if name == "study_accuracy":
        return _rate(study_w, s, (votes.study_pred == grouping.study_labels).astype(np.float64))
    if name == "study_kappa":
        return _kappa(study_w, s, grouping.study_labels, votes.study_pred)
    if name == "image_auc":
        return _auc(patient_w[:, grouping.patient], s, grouping.labels, votes.image_prob)
    if name == "study_auc":
        return _auc(study_w, s, grouping.study_labels, votes.study_prob)
    raise ValueError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")


def _draw_counts(index, size: int):
    """Resampled indices (B, n) -> how often each of ``size`` units was drawn, (B, size)."""
    index = np.asarray(index, dtype=np.int64).reshape(-1, index.shape[-1])
    rows = np.arange(index.shape[0])[:, None] * size
    return np.bincount((index + rows).ravel(), minlength=index.shape[0] * size) \
        .reshape(index.shape[0], size).astype(np.float64)


def _per_seed(statistic, grouping: Grouping, k: int):
    """``statistic`` of every one of the k seeds on the whole split: (m, k)."""
    return statistic(np.ones((k, grouping.n_patients)), np.eye(k))


def _bootstrap(statistic, grouping: Grouping, k: int, n_resamples: int, confidence: float,
               seed: int):
    """A two-level bootstrap of the mean over seeds of ``statistic``: each resample draws k
    of the k seeds with replacement, then, for each seed drawn, as many patients as the split
    has, with replacement and afresh for every seed drawn (patients within seeds); the
    statistic of a resample is the mean over its drawn seeds. ``statistic(pw, s)`` returns an
    (m, R) array for R replicates, each a seed (one-hot rows of s (R, k)) under patient
    weights pw (R, P). Returns (point: the mean over the seeds, low, high), each (m,), the
    percentile interval at ``confidence``. With one seed this is the bootstrap over patients.
    """
    rng = np.random.default_rng(seed)
    eye, n_patients = np.eye(k), grouping.n_patients
    # A statistic may be undefined (a kappa with one class): NaN, left out of the interval,
    # and None when it is undefined everywhere.
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        point = _per_seed(statistic, grouping, k).mean(axis=1)
        replicates = []
        for start in range(0, n_resamples, _BATCH):
            b = min(_BATCH, n_resamples - start)
            seeds = rng.integers(0, k, size=b * k)
            patients = rng.integers(0, n_patients, size=(b * k, n_patients))
            values = statistic(_draw_counts(patients, n_patients), eye[seeds])  # (m, b * k)
            replicates.append(values.reshape(values.shape[0], b, k).mean(axis=2))
        tail = 100 * (1 - confidence) / 2
        low, high = np.nanpercentile(np.concatenate(replicates, axis=1), [tail, 100 - tail],
                                     axis=1)
    return point, low, high


def _finite(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


# --------------------------------------------------------------------------- public API


def intervals(grouping: Grouping, probs, names=METRICS, *, n_resamples: int = N_RESAMPLES,
              confidence: float = CONFIDENCE, seed: int = 0) -> dict[str, dict]:
    """Each metric of ``names`` with its bootstrap interval: name -> {"value", "low", "high",
    "seeds" (the metric of each seed, in order)}.

    probs: (N,) P(normal) of one network, or (k, N) of k networks (the seeds of a setting),
    whose value is then the mean over the k of each one's metric, and whose interval comes
    from the two-level bootstrap (seeds, then patients). Undefined values (a kappa or AUROC
    with one class) are None."""
    votes = _votes(grouping, probs)
    k = votes.image_prob.shape[0]

    def statistic(pw, s):
        return np.stack([_metric(name, grouping, votes, pw, s) for name in names])

    point, low, high = _bootstrap(statistic, grouping, k, n_resamples, confidence, seed)
    each = _per_seed(statistic, grouping, k)
    return {name: {"value": _finite(point[i]), "low": _finite(low[i]), "high": _finite(high[i]),
                   "seeds": [_finite(v) for v in each[i]]}
            for i, name in enumerate(names)}


def mcnemar(correct_a, correct_b) -> dict:
    """Exact McNemar test of paired per-image correctness (bool or 0/1 arrays, same images).

    Returns {"a_only": images only A gets right, "b_only": only B, "p_value": two-sided exact
    binomial p of a_only among the a_only + b_only discordant images under p = 1/2 (1.0 when
    there are none)}."""
    from scipy import stats as sps

    a = np.asarray(correct_a, dtype=bool).reshape(-1)
    b = np.asarray(correct_b, dtype=bool).reshape(-1)
    metrics._check_lengths(correct_a=a, correct_b=b)
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    p = 1.0 if a_only + b_only == 0 else float(sps.binomtest(a_only, a_only + b_only, 0.5).pvalue)
    return {"a_only": a_only, "b_only": b_only, "p_value": p}


def stratified_mcnemar(tests: list[dict]) -> dict:
    """The per-seed McNemar tests of paired runs combined into one exact test: under "no
    difference" each discordant image of every seed pair is A's with probability 1/2, so the
    sum of A's discordant images over the pairs is binomial on all of them (the stratified
    test, as Mantel and Haenszel combine strata). {"a_only", "b_only", "p_value"}.

    The seed pairs share their images, so they are not independent strata; the two-level
    bootstrap of ``compare`` carries that, which is why a verdict needs both."""
    from scipy import stats as sps

    a_only = sum(t["a_only"] for t in tests)
    b_only = sum(t["b_only"] for t in tests)
    p = 1.0 if a_only + b_only == 0 else float(sps.binomtest(a_only, a_only + b_only, 0.5).pvalue)
    return {"a_only": a_only, "b_only": b_only, "p_value": p}


def compare(grouping: Grouping, probs_a, probs_b, metric: str = "image_accuracy", *,
            n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0,
            alpha: float = ALPHA) -> dict:
    """Setting A against setting B on the same images, each trained from the same k seeds:
    probs (N,) or (k, N), row j of A paired with row j of B (the same seed).

    - the difference of ``metric`` (A minus B, the mean over seeds of each seed pair's
      difference) with its interval from the two-level bootstrap (seeds, then patients
      within each seed drawn; the same draws for A and B);
    - every seed pair's difference and exact McNemar test on per-image correctness
      (``per_seed``), and their combination, the stratified McNemar test
      (``stratified_mcnemar``: ``a_only``, ``b_only``, ``p_value``);
    - ``same_sign``: every seed pair's difference has the sign of the mean one (none zero);
    - ``detectable``: half the interval's width, the smallest difference this comparison
      could tell from zero (its minimum detectable difference).

    ``verdict`` is "a" or "b" (the better setting) only when all three agree: the interval
    excludes zero, the stratified test gives p < alpha in the same direction, and every seed
    pair has that sign; else None, and ``reasons`` says which of them failed."""
    va, vb = _votes(grouping, probs_a), _votes(grouping, probs_b)
    k = va.image_prob.shape[0]
    if vb.image_prob.shape[0] != k:
        raise ValueError("compare needs the same number of seeds on both sides")

    def statistic(pw, s):
        a = _metric(metric, grouping, va, pw, s)
        b = _metric(metric, grouping, vb, pw, s)
        return np.stack([a - b, a, b])

    point, low, high = _bootstrap(statistic, grouping, k, n_resamples, confidence, seed)
    per_seed_values = _per_seed(statistic, grouping, k)
    per_seed = [{"difference": _finite(per_seed_values[0, j]), "a": _finite(per_seed_values[1, j]),
                 "b": _finite(per_seed_values[2, j]),
                 **mcnemar(va.image_correct[j], vb.image_correct[j])} for j in range(k)]
    test = stratified_mcnemar(per_seed)
    signs = np.sign(per_seed_values[0])
    direction = np.sign(point[0])
    same_sign = bool(direction != 0 and np.all(signs == direction))
    reasons = []
    if not (np.isfinite(low[0]) and np.isfinite(high[0])) or low[0] <= 0 <= high[0]:
        reasons.append("interval")
    discordant_way = np.sign(test["a_only"] - test["b_only"])
    if test["p_value"] >= alpha or discordant_way != direction:
        reasons.append("test")
    if not same_sign:
        reasons.append("sign")
    verdict = None if reasons else ("a" if direction > 0 else "b")
    return {"metric": metric, "seeds": k, "a": _finite(point[1]), "b": _finite(point[2]),
            "difference": _finite(point[0]), "low": _finite(low[0]), "high": _finite(high[0]),
            "detectable": _finite((high[0] - low[0]) / 2), **test, "per_seed": per_seed,
            "same_sign": same_sign, "reasons": reasons, "verdict": verdict}
