"""Metrics on hand-built cases and against slow reference loops."""
import json
from collections import defaultdict

import numpy as np
import pytest

from mura_core.evaluation import metrics as M

# A hand-built split. Labels: 1 normal, 0 abnormal; probabilities are P(normal).
#   p1: one image, abnormal, predicted abnormal                      -> patient right
#   p2: two images, labels 1/0 (tie -> abnormal), preds 1/1 (normal) -> patient wrong
#   p3: three images, labels 1/1/0 (normal), preds 0/1/1 (normal)    -> patient right
#   p4: under ELBOW (2 normal images) and under HAND (1 abnormal image): one patient,
#       labels 1/1/0 -> normal; preds 0/0/1 -> abnormal              -> patient wrong
ROWS = [
    # patient, body part, study, label, prob
    ("p1", "XR_WRIST", "study1_positive", 0, 0.20),
    ("p2", "XR_WRIST", "study1_negative", 1, 0.90),
    ("p2", "XR_WRIST", "study2_positive", 0, 0.60),
    ("p3", "XR_ELBOW", "study1_negative", 1, 0.40),
    ("p3", "XR_ELBOW", "study1_negative", 1, 0.70),
    ("p3", "XR_ELBOW", "study2_positive", 0, 0.55),
    ("p4", "XR_ELBOW", "study1_negative", 1, 0.30),
    ("p4", "XR_ELBOW", "study1_negative", 1, 0.45),
    ("p4", "XR_HAND", "study1_positive", 0, 0.80),
]
PID = np.array([r[0] for r in ROWS])
BP = np.array([r[1] for r in ROWS])
SID = np.array([r[2] for r in ROWS])
Y = np.array([r[3] for r in ROWS], dtype=np.float32)
P = np.array([r[4] for r in ROWS], dtype=np.float32)


def test_predictions_threshold_at_half_means_normal():
    assert M.predict_labels([0.0, 0.49, 0.5, 0.51, 1.0]).tolist() == [0, 0, 1, 1, 1]


def test_image_accuracy_hand_counted():
    preds = M.predict_labels(P)
    assert preds.tolist() == [0, 1, 1, 0, 1, 1, 0, 0, 1]
    # right: images 0, 1, 4 -> 3 of 9
    assert M.accuracy(Y, preds) == pytest.approx(3 / 9)


def test_group_majority_ties_go_to_abnormal():
    keys, major = M.group_majority([1, 0, 1, 1, 0, 1, 0, 0, 1], ["a", "b", "b", "c", "c", "c", "d", "d", "d"])
    assert keys.tolist() == ["a", "b", "c", "d"]
    assert major.tolist() == [1, 0, 1, 0]  # a: 1 of 1; b: tie; c: 2 of 3; d: 1 of 3


def test_patient_accuracy_hand_built():
    preds = M.predict_labels(P)
    keys, y, p = M.patient_labels_and_predictions(Y, preds, PID)
    assert keys.tolist() == ["p1", "p2", "p3", "p4"]
    assert y.tolist() == [0, 0, 1, 1]  # p2 is a tie -> abnormal
    assert p.tolist() == [0, 1, 1, 0]
    assert M.patient_accuracy(Y, preds, PID) == pytest.approx(2 / 4)


def test_patient_tie_on_both_sides_counts_as_agreement():
    # labels 1/0 tie -> abnormal; predictions 0/1 tie -> abnormal: the patient is right
    assert M.patient_accuracy([1, 0], [0, 1], ["x", "x"]) == 1.0


def test_patient_under_two_body_parts_is_one_patient():
    table = M.metric_table(P, Y, PID, SID, BP)
    assert table["n_patients"] == 4
    # within a body part, p4 appears once per part
    assert table["per_body_part"]["XR_ELBOW"]["n_patients"] == 2  # p3, p4
    assert table["per_body_part"]["XR_HAND"]["n_patients"] == 1
    # under ELBOW alone p4 is normal (2 normal images) and predicted abnormal (0.30, 0.45)
    elbow = M.patient_labels_and_predictions(
        Y[BP == "XR_ELBOW"], M.predict_labels(P[BP == "XR_ELBOW"]), PID[BP == "XR_ELBOW"]
    )
    assert elbow[1].tolist() == [1, 1] and elbow[2].tolist() == [1, 0]


def test_study_keys_separate_body_parts_and_patients():
    keys = M.study_keys(BP, PID, SID)
    assert keys[0] == "XR_WRIST/p1/study1_positive"
    # p4's study1_negative (ELBOW) and study1_positive (HAND), and p3's study1 are distinct
    assert len(np.unique(keys)) == 7


def test_study_accuracy_uses_mean_probability():
    keys = M.study_keys(BP, PID, SID)
    k, y, mean = M.study_probabilities(Y, P, keys)
    expected = {
        "XR_WRIST/p1/study1_positive": (0, 0.20),
        "XR_WRIST/p2/study1_negative": (1, 0.90),
        "XR_WRIST/p2/study2_positive": (0, 0.60),
        "XR_ELBOW/p3/study1_negative": (1, 0.55),  # mixed predictions 0.40 / 0.70 -> normal
        "XR_ELBOW/p3/study2_positive": (0, 0.55),
        "XR_ELBOW/p4/study1_negative": (1, 0.375),  # 0.30 / 0.45 -> abnormal
        "XR_HAND/p4/study1_positive": (0, 0.80),
    }
    got = {key: (int(lab), float(m)) for key, lab, m in zip(k, y, mean)}
    assert got.keys() == expected.keys()
    for key, (lab, m) in expected.items():
        assert got[key][0] == lab and got[key][1] == pytest.approx(m, abs=1e-6)
    # right: p1 s1, p2 s1, p3 s1 -> 3 of 7
    assert M.study_accuracy(Y, P, keys) == pytest.approx(3 / 7)


def test_study_with_mixed_labels_is_a_key_error():
    with pytest.raises(ValueError, match="unique within"):
        M.study_probabilities([1, 0], [0.5, 0.5], ["study1", "study1"])


def test_kappa_known_values_and_hand_computation():
    y = np.array([1, 1, 0, 0, 1, 0, 1, 1])
    assert M.cohen_kappa(y, y) == pytest.approx(1.0)
    # chance: predictions independent of labels with the same marginals
    assert M.cohen_kappa([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.0)
    # constant prediction: kappa 0
    assert M.cohen_kappa(y, np.ones_like(y)) == pytest.approx(0.0)
    # hand: labels 1,1,1,0,0  preds 1,1,0,0,1 -> p_o = 3/5; p_e = .6*.6 + .4*.4 = .52
    assert M.cohen_kappa([1, 1, 1, 0, 0], [1, 1, 0, 0, 1]) == pytest.approx((0.6 - 0.52) / 0.48)
    # perfectly opposite -> -1
    assert M.cohen_kappa([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    assert np.isnan(M.cohen_kappa([1, 1], [1, 1]))


def test_study_kappa_hand_computed():
    # studies (label, pred): (0,0) (1,1) (0,1) (1,1) (0,1) (1,0) (0,1)
    # p_o = 3/7; label ones 3/7, pred ones 5/7; p_e = 15/49 + 8/49 = 23/49 -> kappa -1/13
    keys = M.study_keys(BP, PID, SID)
    p_o, p_e = 3 / 7, 23 / 49
    assert M.study_kappa(Y, P, keys) == pytest.approx((p_o - p_e) / (1 - p_e))
    assert M.study_kappa(Y, P, keys) == pytest.approx(-1 / 13)


def test_confusion_matrix_layout():
    cm = M.confusion_matrix([0, 0, 0, 1, 1], [0, 1, 1, 1, 0])
    assert cm.dtype == np.int64
    assert cm.tolist() == [[1, 2], [1, 1]]  # rows true abnormal/normal, cols predicted


def test_roc_auc_against_pair_count():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.random(60), 1)  # ties on purpose
    pos, neg = s[y == 1], s[y == 0]
    pairs = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    assert M.roc_auc(y, s) == pytest.approx(pairs / (len(pos) * len(neg)))


def test_majority_class_ties_to_abnormal():
    assert M.majority_class([1, 1, 0]) == 1
    assert M.majority_class([1, 0]) == 0
    assert M.majority_class([0, 0, 1]) == 0


def _reference_table(probs, labels, pids, sids, parts, majority):
    """Slow, obvious loops over dicts."""
    pred = [1 if p >= 0.5 else 0 for p in probs]
    img = sum(int(a == b) for a, b in zip(pred, labels)) / len(labels)
    by_patient = defaultdict(list)
    for pid, lab, pr in zip(pids, labels, pred):
        by_patient[pid].append((lab, pr))

    def maj(vals):
        return 1 if sum(vals) * 2 > len(vals) else 0

    pat = sum(int(maj([a for a, _ in v]) == maj([b for _, b in v])) for v in by_patient.values())
    by_study = defaultdict(list)
    for part, pid, sid, lab, p in zip(parts, pids, sids, labels, probs):
        by_study[(part, pid, sid)].append((lab, p))
    sy, sp = [], []
    for v in by_study.values():
        sy.append(v[0][0])
        sp.append(1 if sum(p for _, p in v) / len(v) >= 0.5 else 0)
    study = sum(int(a == b) for a, b in zip(sy, sp)) / len(sy)
    base_img = sum(int(lab == majority) for lab in labels) / len(labels)
    base_pat = sum(int(maj([a for a, _ in v]) == majority) for v in by_patient.values()) / len(by_patient)
    return img, pat / len(by_patient), study, M.cohen_kappa(sy, sp), base_img, base_pat


def test_metric_table_matches_reference_loops_and_serializes():
    rng = np.random.default_rng(0)
    n = 400
    parts = rng.choice(["XR_ELBOW", "XR_HAND", "XR_WRIST"], n)
    pids = np.array([f"patient{k:05d}" for k in rng.integers(0, 60, n)])
    sids = np.array([f"study{k}" for k in rng.integers(1, 3, n)])
    # labels constant per (part, patient, study), as in MURA
    study_label = {}
    labels = np.array(
        [study_label.setdefault((a, b, c), int(rng.integers(0, 2))) for a, b, c in zip(parts, pids, sids)],
        dtype=np.float32,
    )
    probs = np.clip(0.5 + 0.3 * (labels - 0.5) + 0.3 * rng.standard_normal(n), 0, 1).astype(np.float32)
    table = M.metric_table(probs, labels, pids, sids, parts, majority=1)
    ref = _reference_table(probs.tolist(), labels.astype(int).tolist(), pids, sids, parts, 1)
    got = (
        table["image_accuracy"], table["patient_accuracy"], table["study_accuracy"],
        table["study_kappa"], table["baseline"]["image_accuracy"], table["baseline"]["patient_accuracy"],
    )
    assert got == pytest.approx(ref)
    assert table["baseline"]["study_kappa"] == pytest.approx(0.0)
    assert sum(sum(r) for r in table["confusion_image"]) == n
    assert set(table["per_body_part"]) == {"XR_ELBOW", "XR_HAND", "XR_WRIST"}
    for part, sub in table["per_body_part"].items():
        m = parts == part
        assert sub["image_accuracy"] == pytest.approx(np.mean((probs[m] >= 0.5) == labels[m]))
    text = json.dumps(table, allow_nan=False)  # plain JSON, no NaN
    assert json.loads(text) == table
    text = M.format_metric_table({"train": table, "valid": table}, per_body_part=True)
    assert "accuracy per patient" in text


def test_metric_table_majority_baseline_and_label_direction():
    # 3 normal images, 1 abnormal: the majority predictor says normal -> 75 %
    table = M.metric_table([0.9, 0.8, 0.7, 0.1], [1, 1, 1, 0], ["a", "b", "c", "d"],
                           ["s"] * 4, ["XR_HAND"] * 4)
    assert table["majority_class"] == 1
    assert table["baseline"]["image_accuracy"] == pytest.approx(0.75)
    assert table["image_accuracy"] == 1.0
    # inverted probabilities must give 0 % (label 1 = normal = high P(normal))
    flipped = M.metric_table([0.1, 0.2, 0.3, 0.9], [1, 1, 1, 0], ["a", "b", "c", "d"],
                             ["s"] * 4, ["XR_HAND"] * 4)
    assert flipped["image_accuracy"] == 0.0
    assert flipped["confusion_image"] == [[0, 1], [3, 0]]


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="one length"):
        M.accuracy([1, 0], [1])
    with pytest.raises(ValueError, match="only 0"):
        M.accuracy([2, 0], [1, 0])
    with pytest.raises(ValueError, match="within"):
        M.predict_labels([np.nan])


def test_roc_curve_against_counts_at_every_threshold():
    rng = np.random.default_rng(4)
    y = (rng.random(60) < 0.4).astype(int)
    s = np.round(rng.random(60), 1)  # many ties
    fpr, tpr, thresholds = M.roc_curve(y, s)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert thresholds[0] == np.inf and list(thresholds[1:]) == sorted(set(s), reverse=True)
    for f, t, thr in zip(fpr[1:], tpr[1:], thresholds[1:]):
        called = s >= thr
        assert t == pytest.approx(np.sum(called & (y == 1)) / np.sum(y == 1))
        assert f == pytest.approx(np.sum(called & (y == 0)) / np.sum(y == 0))
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(M.roc_auc(y, s))
    with pytest.raises(ValueError, match="both classes"):
        M.roc_curve([1, 1], [0.2, 0.3])


def test_sensitivity_and_specificity_treat_abnormal_as_the_finding():
    labels = np.array([0, 0, 0, 0, 1, 1, 1])  # 0 abnormal, 1 normal
    probs = np.array([0.1, 0.4, 0.5, 0.9, 0.6, 0.5, 0.2])  # P(normal); >= 0.5 is normal
    sensitivity, specificity = M.sensitivity_specificity(labels, probs)
    assert sensitivity == pytest.approx(2 / 4) and specificity == pytest.approx(2 / 3)
    assert np.isnan(M.sensitivity_specificity([1, 1], [0.2, 0.7])[0])
