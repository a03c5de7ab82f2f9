"""Bootstrap intervals over patients and the exact McNemar test (``mura_core.evaluation.stats``), checked
against slow obvious computations: a resample is the split with each patient copied as often
as it was drawn, scored by ``metrics``; McNemar's p is a sum of binomial coefficients."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mura_core.evaluation import metrics, stats


def make_split(n_patients=40, seed=0, skill=0.75):
    """Per-image arrays of a small split: patients with 1-2 studies of 1-3 images, study
    labels, and probabilities that are right with probability ``skill``."""
    rng = np.random.default_rng(seed)
    labels, patients, studies, parts, probs = [], [], [], [], []
    for p in range(n_patients):
        part = ["XR_HAND", "XR_WRIST"][p % 2]
        for s in range(rng.integers(1, 3)):
            label = int(rng.integers(0, 2))
            for _ in range(rng.integers(1, 4)):
                labels.append(label)
                patients.append(f"patient{p:03d}")
                studies.append(f"study{s + 1}")
                parts.append(part)
                right = rng.random() < skill
                normal = label == 1 if right else label == 0
                probs.append(rng.uniform(0.5, 1.0) if normal else rng.uniform(0.0, 0.4999))
    return (np.array(labels), np.array(patients), np.array(studies), np.array(parts),
            np.array(probs))


def expanded_metrics(counts, labels, patients, studies, parts, probs):
    """The metric table of the split with patient j copied counts[j] times (renamed)."""
    keys = np.unique(patients)
    rows, new_patients = [], []
    for j, key in enumerate(keys):
        idx = np.flatnonzero(patients == key)
        for copy in range(int(counts[j])):
            rows.extend(idx)
            new_patients.extend([f"{key}#{copy}"] * len(idx))
    rows = np.array(rows)
    return metrics.metric_table(probs[rows], labels[rows], np.array(new_patients), studies[rows],
                                parts[rows])


@pytest.mark.parametrize("name", stats.METRICS)
def test_weighted_metric_equals_the_metric_of_the_copied_split(name):
    labels, patients, studies, parts, probs = make_split(seed=3)
    design = stats.Design.of(labels, patients, studies, parts)
    votes = stats._votes(design, probs)
    rng = np.random.default_rng(1)
    for _ in range(3):
        counts = rng.multinomial(design.n_patients, np.ones(design.n_patients) / design.n_patients)
        got = stats._metric(name, design, votes, counts[None].astype(float), np.ones((1, 1)))[0]
        want = expanded_metrics(counts, labels, patients, studies, parts, probs)[name]
        assert got == pytest.approx(want, abs=1e-12)


def test_interval_values_are_the_metric_table_and_the_intervals_hold_them():
    labels, patients, studies, parts, probs = make_split(n_patients=60, seed=5)
    table = metrics.metric_table(probs, labels, patients, studies, parts)
    got = stats.intervals(stats.Design.of(labels, patients, studies, parts), probs,
                          n_resamples=400, seed=0)
    for name in stats.METRICS:
        assert got[name]["value"] == pytest.approx(table[name], abs=1e-12), name
        assert got[name]["low"] <= got[name]["value"] <= got[name]["high"], name
        assert got[name]["high"] - got[name]["low"] > 0.01, "a resampled metric varies"


def test_more_patients_give_a_narrower_interval():
    small = make_split(n_patients=30, seed=2)
    large = make_split(n_patients=600, seed=2)
    widths = []
    for labels, patients, studies, parts, probs in (small, large):
        ci = stats.intervals(stats.Design.of(labels, patients, studies, parts), probs,
                             ["image_accuracy"], n_resamples=400)["image_accuracy"]
        widths.append(ci["high"] - ci["low"])
    assert widths[1] < widths[0] / 2


def test_interval_is_reproducible_from_its_seed():
    labels, patients, studies, parts, probs = make_split(seed=4)
    design = stats.Design.of(labels, patients, studies, parts)
    a = stats.intervals(design, probs, ["study_kappa"], n_resamples=300, seed=7)
    b = stats.intervals(design, probs, ["study_kappa"], n_resamples=300, seed=7)
    assert a == b


def test_seeds_that_disagree_widen_the_interval_of_their_pooled_metric():
    labels, patients, studies, parts, _ = make_split(n_patients=200, seed=6)
    design = stats.Design.of(labels, patients, studies, parts)
    good = make_split(n_patients=200, seed=6, skill=0.95)[4]
    poor = make_split(n_patients=200, seed=6, skill=0.55)[4]
    one = stats.intervals(design, good, ["image_accuracy"], n_resamples=400)["image_accuracy"]
    two = stats.intervals(design, np.stack([good, poor]), ["image_accuracy"],
                          n_resamples=400)["image_accuracy"]
    both = [metrics.accuracy(labels, metrics.predict_labels(p)) for p in (good, poor)]
    assert two["value"] == pytest.approx(np.mean(both))
    assert two["high"] - two["low"] > 2 * (one["high"] - one["low"])


def exact_two_sided(a: int, b: int) -> float:
    n, k = a + b, min(a, b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize("a_only,b_only", [(0, 0), (3, 0), (10, 4), (7, 7), (1, 20)])
def test_mcnemar_is_the_exact_binomial_test_of_the_discordant_images(a_only, b_only):
    both = 5
    correct_a = np.array([1] * a_only + [0] * b_only + [1] * both + [0] * 3)
    correct_b = np.array([0] * a_only + [1] * b_only + [1] * both + [0] * 3)
    got = stats.mcnemar(correct_a, correct_b)
    assert (got["a_only"], got["b_only"]) == (a_only, b_only)
    want = 1.0 if a_only + b_only == 0 else exact_two_sided(a_only, b_only)
    assert got["p_value"] == pytest.approx(want, rel=1e-9)


def test_compare_names_a_clear_winner_and_calls_a_tie_a_tie():
    labels, patients, studies, parts, _ = make_split(n_patients=300, seed=8)
    design = stats.Design.of(labels, patients, studies, parts)
    strong = make_split(n_patients=300, seed=8, skill=0.95)[4]
    weak = make_split(n_patients=300, seed=8, skill=0.6)[4]
    win = stats.compare(design, strong, weak, n_resamples=400)
    assert win["verdict"] == "a" and win["low"] > 0 and win["p_value"] < 0.05
    lose = stats.compare(design, weak, strong, "study_kappa", n_resamples=400)
    assert lose["verdict"] == "b" and lose["high"] < 0
    tie = stats.compare(design, strong, strong, n_resamples=400)
    assert tie["verdict"] is None and tie["difference"] == 0 and tie["p_value"] == 1.0
    # Nearly the same predictor: a few flipped images are not a difference.
    nudged = strong.copy()
    flip = np.flatnonzero((strong >= 0.5) == labels)[:3]
    nudged[flip] = 1 - nudged[flip]
    close = stats.compare(design, strong, nudged, n_resamples=400)
    assert close["verdict"] is None and close["p_value"] >= 0.05


def test_one_class_kappa_is_none_not_an_error():
    labels = np.ones(12, dtype=int)
    patients = np.repeat([f"p{i}" for i in range(6)], 2)
    design = stats.Design.of(labels, patients, np.repeat(["study1"], 12))
    got = stats.intervals(design, np.full(12, 0.9), ["study_kappa", "image_accuracy"],
                          n_resamples=100)
    assert got["study_kappa"]["value"] is None
    assert got["image_accuracy"]["value"] == 1.0
