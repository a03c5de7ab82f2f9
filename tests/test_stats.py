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
    grouping = stats.Grouping.of(labels, patients, studies, parts)
    votes = stats._votes(grouping, probs)
    rng = np.random.default_rng(1)
    for _ in range(3):
        counts = rng.multinomial(grouping.n_patients, np.ones(grouping.n_patients) / grouping.n_patients)
        got = stats._metric(name, grouping, votes, counts[None].astype(float), np.ones((1, 1)))[0]
        want = expanded_metrics(counts, labels, patients, studies, parts, probs)[name]
        assert got == pytest.approx(want, abs=1e-12)


def test_interval_values_are_the_metric_table_and_the_intervals_hold_them():
    labels, patients, studies, parts, probs = make_split(n_patients=60, seed=5)
    table = metrics.metric_table(probs, labels, patients, studies, parts)
    got = stats.intervals(stats.Grouping.of(labels, patients, studies, parts), probs,
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
        ci = stats.intervals(stats.Grouping.of(labels, patients, studies, parts), probs,
                             ["image_accuracy"], n_resamples=400)["image_accuracy"]
        widths.append(ci["high"] - ci["low"])
    assert widths[1] < widths[0] / 2


def test_interval_is_reproducible_from_its_seed():
    labels, patients, studies, parts, probs = make_split(seed=4)
    grouping = stats.Grouping.of(labels, patients, studies, parts)
    a = stats.intervals(grouping, probs, ["study_kappa"], n_resamples=300, seed=7)
    b = stats.intervals(grouping, probs, ["study_kappa"], n_resamples=300, seed=7)
    assert a == b


def test_seeds_that_disagree_widen_the_interval_of_their_pooled_metric():
    labels, patients, studies, parts, _ = make_split(n_patients=200, seed=6)
    grouping = stats.Grouping.of(labels, patients, studies, parts)
    good = make_split(n_patients=200, seed=6, skill=0.95)[4]
    poor = make_split(n_patients=200, seed=6, skill=0.55)[4]
    one = stats.intervals(grouping, good, ["image_accuracy"], n_resamples=400)["image_accuracy"]
    two = stats.intervals(grouping, np.stack([good, poor]), ["image_accuracy"],
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
    grouping = stats.Grouping.of(labels, patients, studies, parts)
    strong = make_split(n_patients=300, seed=8, skill=0.95)[4]
    weak = make_split(n_patients=300, seed=8, skill=0.6)[4]
    win = stats.compare(grouping, strong, weak, n_resamples=400)
    assert win["verdict"] == "a" and win["low"] > 0 and win["p_value"] < 0.05
    lose = stats.compare(grouping, weak, strong, "study_kappa", n_resamples=400)
    assert lose["verdict"] == "b" and lose["high"] < 0
    tie = stats.compare(grouping, strong, strong, n_resamples=400)
    assert tie["verdict"] is None and tie["difference"] == 0 and tie["p_value"] == 1.0
    assert set(tie["reasons"]) == {"interval", "test", "sign"}
    # Nearly the same predictor: a few flipped images are not a difference.
    nudged = strong.copy()
    flip = np.flatnonzero((strong >= 0.5) == labels)[:3]
    nudged[flip] = 1 - nudged[flip]
    close = stats.compare(grouping, strong, nudged, n_resamples=400)
    assert close["verdict"] is None and close["p_value"] >= 0.05


def test_two_level_bootstrap_matches_a_slow_loop_over_copied_splits():
    """Each resample: k seeds drawn with replacement, then for each drawn seed the split with
    its patients copied as drawn afresh, scored by ``metrics``; the setting's value is the
    mean over the drawn seeds. The same random draws, scored the slow way, give the same
    interval."""
    labels, patients, studies, parts, _ = make_split(n_patients=25, seed=9)
    grouping = stats.Grouping.of(labels, patients, studies, parts)
    probs = np.stack([predictions(labels, s, j) for j, s in enumerate((0.9, 0.7, 0.8))])
    k, n_resamples = 3, 40
    got = stats.intervals(grouping, probs, ["image_accuracy", "study_kappa"],
                          n_resamples=n_resamples, seed=5)
    rng = np.random.default_rng(5)
    seeds = rng.integers(0, k, size=n_resamples * k)
    draws = rng.integers(0, grouping.n_patients, size=(n_resamples * k, grouping.n_patients))
    for name in ("image_accuracy", "study_kappa"):
        values = []
        for r in range(n_resamples):
            per_seed = []
            for j in range(k):
                row = r * k + j
                counts = np.bincount(draws[row], minlength=grouping.n_patients)
                table = expanded_metrics(counts, labels, patients, studies, parts, probs[seeds[row]])
                per_seed.append(table[name])
            values.append(np.mean(per_seed))
        low, high = np.nanpercentile(values, [2.5, 97.5])
        assert got[name]["low"] == pytest.approx(low, abs=1e-12), name
        assert got[name]["high"] == pytest.approx(high, abs=1e-12), name
        each = [metrics.metric_table(p, labels, patients, studies, parts)[name] for p in probs]
        assert got[name]["seeds"] == pytest.approx(each, abs=1e-12)
        assert got[name]["value"] == pytest.approx(np.mean(each), abs=1e-12)


def test_the_stratified_mcnemar_test_is_the_binomial_test_of_the_summed_discordant_images():
    tests = [{"a_only": 6, "b_only": 2}, {"a_only": 9, "b_only": 3}, {"a_only": 4, "b_only": 4}]
    got = stats.stratified_mcnemar(tests)
    assert (got["a_only"], got["b_only"]) == (19, 9)
    assert got["p_value"] == pytest.approx(exact_two_sided(19, 9), rel=1e-9)
    assert stats.stratified_mcnemar([{"a_only": 0, "b_only": 0}])["p_value"] == 1.0


def predictions(labels, skill: float, seed: int) -> np.ndarray:
    """P(normal) of a run that gets each image right with probability ``skill``."""
    rng = np.random.default_rng(seed)
    normal = (labels == 1) == (rng.random(len(labels)) < skill)
    return np.where(normal, rng.uniform(0.5, 1.0, len(labels)), rng.uniform(0.0, 0.4999, len(labels)))


def three_seed_case(skills_a, skills_b, n_patients=300):
    """A split and two settings' (3, N) predictions, run j of each right with probability
    skills[j]; where a seed's skills match, both settings' runs are the same run."""
    labels, patients, studies, parts, _ = make_split(n_patients=n_patients, seed=11)
    grouping = stats.Grouping.of(labels, patients, studies, parts)
    a = np.stack([predictions(labels, s, 20 + j) for j, s in enumerate(skills_a)])
    b = np.stack([predictions(labels, sb, 20 + j if sa == sb else 40 + j)
                  for j, (sa, sb) in enumerate(zip(skills_a, skills_b))])
    return grouping, a, b


def test_a_winner_in_every_seed_is_established():
    grouping, a, b = three_seed_case((0.95, 0.93, 0.96), (0.65, 0.62, 0.66))
    got = stats.compare(grouping, a, b, n_resamples=400)
    assert got["seeds"] == 3 and len(got["per_seed"]) == 3
    assert all(s["difference"] > 0 for s in got["per_seed"]) and got["same_sign"]
    assert got["verdict"] == "a" and got["reasons"] == []
    assert got["low"] > 0 and got["p_value"] < 1e-6
    assert got["a_only"] == sum(s["a_only"] for s in got["per_seed"])
    assert got["detectable"] == pytest.approx((got["high"] - got["low"]) / 2)


def test_a_winner_in_one_seed_only_is_not_established():
    """Seed 0: A far better; seeds 1 and 2: the same runs on both sides. The pooled images
    may still lean A's way, but the seed pairs do not agree, so no verdict."""
    grouping, a, b = three_seed_case((0.97, 0.7, 0.7), (0.6, 0.7, 0.7))
    got = stats.compare(grouping, a, b, n_resamples=400)
    diffs = [s["difference"] for s in got["per_seed"]]
    assert diffs[0] > 0.2 and diffs[1] == 0 and diffs[2] == 0
    assert got["verdict"] is None and "sign" in got["reasons"]
    assert got["p_value"] < 0.05, "the stratified test alone would have called it"


def test_a_tie_over_seeds_is_not_established_and_says_why():
    grouping, a, b = three_seed_case((0.8, 0.8, 0.8), (0.8, 0.8, 0.8))
    b = b[[1, 2, 0]]  # the same runs, paired with other seeds: differences of both signs
    got = stats.compare(grouping, a, b, n_resamples=400)
    assert got["verdict"] is None and "interval" in got["reasons"]
    assert got["low"] < 0 < got["high"]


def test_one_class_kappa_is_none_not_an_error():
    labels = np.ones(12, dtype=int)
    patients = np.repeat([f"p{i}" for i in range(6)], 2)
    grouping = stats.Grouping.of(labels, patients, np.repeat(["study1"], 12))
    got = stats.intervals(grouping, np.full(12, 0.9), ["study_kappa", "image_accuracy"],
                          n_resamples=100)
    assert got["study_kappa"]["value"] is None
    assert got["image_accuracy"]["value"] == 1.0
