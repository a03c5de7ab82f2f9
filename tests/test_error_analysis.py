"""What notebook 06 shows besides the maps: the most confident mistakes, ROC curves per image
and per study, study kappa per body part with its interval, and the inputs of chosen rows."""
from types import SimpleNamespace

import numpy as np
import pytest

from mura_core.data.batches import iterate_batches
from mura_core.evaluation import analysis, metrics, predictions, stats


def _split(n_patients=40, seed=0):
    """Patients with 1-2 studies of 1-3 images under two body parts; P(normal) informative."""
    rng = np.random.default_rng(seed)
    labels, patients, studies, parts = [], [], [], []
    for p in range(n_patients):
        part = ("XR_HAND", "XR_WRIST")[p % 2]
        for s in range(1 + p % 2):
            label = int(rng.random() < 0.55)
            for _ in range(1 + (p + s) % 3):
                labels.append(label)
                patients.append(f"valid/patient{p:05d}")
                studies.append(f"valid/{part}/patient{p:05d}/study{s + 1}")
                parts.append(part)
    labels = np.array(labels, np.float32)
    probs = np.clip(0.5 + (labels - 0.5) * 0.4 + rng.normal(0, 0.25, len(labels)), 0, 1)
    images = rng.integers(0, 256, (len(labels), 6, 6)).astype(np.uint8)
    return SimpleNamespace(labels=labels, patient_ids=np.array(patients), images=images,
                           study_ids=np.array(studies), body_parts=np.array(parts),
                           mode="pad"), probs


def test_confident_mistakes_are_the_wrong_calls_ordered_by_confidence():
    labels = np.array([0, 0, 0, 1, 1, 1, 0])
    probs = np.array([0.9, 0.6, 0.2, 0.1, 0.45, 0.8, 0.5])
    got = analysis.confident_mistakes(labels, probs, k=2)
    assert got["false_normal"].tolist() == [0, 1]  # abnormal called normal: 0.9, 0.6 (then 0.5)
    assert got["false_abnormal"].tolist() == [3, 4]  # normal called abnormal: 0.1, 0.45
    none = analysis.confident_mistakes([1, 0], [0.9, 0.1], k=3)
    assert none["false_normal"].size == 0 and none["false_abnormal"].size == 0


def test_roc_summary_per_image_and_per_study():
    split, probs = _split()
    rows = np.arange(len(probs))
    intervals = analysis.split_intervals(split, rows, probs)
    roc = analysis.roc_summary(split, rows, probs, intervals)
    image, study = roc["image"], roc["study"]
    labels = split.labels.astype(int)
    assert image["n"] == len(labels) and image["n_abnormal"] == int(np.sum(labels == 0))
    assert image["auc"] == intervals["image_auc"]["value"] and image["low"] <= image["auc"] <= image["high"]
    # the curve's area (abnormal as the finding) is the AUROC of P(normal) for normal
    area = np.sum(np.diff(image["fpr"]) * (np.array(image["tpr"][1:]) + image["tpr"][:-1]) / 2)
    assert area == pytest.approx(metrics.roc_auc(labels, probs))
    assert (image["sensitivity"], image["specificity"]) == metrics.sensitivity_specificity(labels, probs)
    _, study_labels, study_probs = metrics.study_probabilities(labels, probs, split.study_ids)
    assert study["n"] == len(np.unique(split.study_ids)) == len(study_labels)
    assert study["auc"] == pytest.approx(metrics.roc_auc(study_labels, study_probs))
    assert (study["sensitivity"], study["specificity"]) == \
        metrics.sensitivity_specificity(study_labels, study_probs)


def test_body_part_kappas_match_the_metric_and_carry_intervals():
    split, probs = _split()
    rows = np.arange(len(probs))
    got = analysis.body_part_kappas(split, rows, probs)
    assert [r["body_part"] for r in got] == ["XR_HAND", "XR_WRIST", "all"]
    for row in got:
        mask = np.ones(len(rows), bool) if row["body_part"] == "all" else split.body_parts == row["body_part"]
        expected = metrics.study_kappa(split.labels[mask], probs[mask], split.study_ids[mask])
        assert row["value"] == pytest.approx(expected)
        assert row["studies"] == len(np.unique(split.study_ids[mask]))
        assert row["low"] <= row["value"] <= row["high"]
    overall = stats.intervals(stats.Grouping.of(split.labels, split.patient_ids, split.study_ids,
                                              split.body_parts), probs, ("study_kappa",))
    assert got[-1]["value"] == pytest.approx(overall["study_kappa"]["value"])


def test_split_inputs_are_the_training_standardization_in_row_order():
    split, _ = _split()
    rows = np.array([5, 2, 9])
    x = predictions.split_inputs(split, rows, mean=100.0, std=50.0)
    expected = next(iterate_batches(split, 3, mean=100.0, std=50.0, indices=rows)).x
    assert x.dtype == np.float32 and x.shape == (3, 1, 6, 6)
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_allclose(x[1, 0], (split.images[2] - 100.0) / 50.0, rtol=1e-6)
    assert predictions.split_inputs(split, [], 100.0, 50.0).shape == (0, 1, 6, 6)


def test_a_body_part_of_one_patient_gets_its_kappa_without_an_interval():
    split, probs = _split(n_patients=3)  # patients 0 and 2 under HAND, patient 1 under WRIST
    got = {r["body_part"]: r for r in analysis.body_part_kappas(split, np.arange(len(probs)), probs)}
    wrist = split.body_parts == "XR_WRIST"
    expected = metrics.study_kappa(split.labels[wrist], probs[wrist], split.study_ids[wrist])
    assert got["XR_WRIST"]["low"] is None and got["XR_WRIST"]["high"] is None
    assert got["XR_WRIST"]["value"] == (None if np.isnan(expected) else pytest.approx(expected))
