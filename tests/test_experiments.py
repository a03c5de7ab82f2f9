"""Experiments of the report: runs keyed by their settings, sweeps with equal examples seen,
and the tables and summaries the notebooks show."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mura_core import experiments
from mura_core.data import samples
from mura_core.report import prose, tables
from mura_core.data import build_cache, generate_synthetic

SIZE = 32


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, n_train=40, n_valid=16, seed=3)
    with pytest.warns(Warning):  # the generator truncates one file on purpose
        return build_cache(root, size=SIZE, mode="pad", cache_dir=root / "cache",
                           progress=False)


SETTINGS = dict(steps=2, batch_size=4, lr=0.01, momentum=0.9, eval_every=1,
                train_eval_size=8, seed=0)


def test_run_id_changes_with_every_setting_that_decides_the_numbers():
    base = dict(steps=10, batch_size=32, lr=0.01, momentum=0.9, weight_decay=0.0,
                eval_every=5, train_eval_size=100, augment=False, dropout=0.5)
    ident = dict(input_size=227, seed=0, backend="numpy", cache_key="k")
    first = experiments.run_id("baseline", base, **ident)
    assert first == experiments.run_id("baseline", dict(base), **ident)
    assert first.startswith("baseline-")
    for key, value in [("steps", 11), ("batch_size", 16), ("lr", 0.1), ("momentum", 0.5),
                       ("weight_decay", 1e-4), ("eval_every", 3), ("dropout", 0.2)]:
        assert experiments.run_id("baseline", dict(base, **{key: value}), **ident) != first, key
    for key, value in [("input_size", 64), ("seed", 1), ("backend", "cupy"), ("cache_key", "x")]:
        assert experiments.run_id("baseline", base, **dict(ident, **{key: value})) != first, key
    assert experiments.run_id("wider", base, **ident) != first


def test_sweep_settings_give_every_run_the_same_number_of_examples():
    base = dict(batch_size=32, lr=0.01, momentum=0.9, weight_decay=0.0)
    runs = experiments.sweep_settings("batch_size", [16, 32, 64], base, examples=1920,
                                      eval_every_examples=320)
    assert [r["steps"] for r in runs] == [120, 60, 30]
    assert [r["eval_every"] for r in runs] == [20, 10, 5]
    assert {r["steps"] * r["batch_size"] for r in runs} == {1920}
    lrs = experiments.sweep_settings("lr", [0.1, 0.001], base, 1920, 320)
    assert [r["lr"] for r in lrs] == [0.1, 0.001] and {r["steps"] for r in lrs} == {60}
    with pytest.raises(ValueError, match="cannot sweep"):
        experiments.sweep_settings("dropout", [0.1], base, 1920, 320)


def test_train_or_load_trains_once_then_reuses_the_same_run(cache, tmp_path):
    logs = []
    first = experiments.train_or_load("baseline", cache, tmp_path, log=logs.append, **SETTINGS)
    assert not first.reused and first.model_path.exists()
    assert len(first.history["loss"]) == SETTINGS["steps"]
    again = experiments.train_or_load("baseline", cache, tmp_path, log=logs.append, **SETTINGS)
    assert again.reused and again.folder == first.folder
    assert again.history["loss"] == first.history["loss"]
    assert "reusing" in logs[-1]
    other = experiments.train_or_load("baseline", cache, tmp_path, log=logs.append,
                                      **dict(SETTINGS, lr=0.001))
    assert other.folder != first.folder and not other.reused


def test_same_settings_in_a_fresh_folder_give_the_same_numbers(cache, tmp_path):
    a = experiments.train_or_load("baseline", cache, tmp_path / "a", log=lambda m: None,
                                  **SETTINGS)
    b = experiments.train_or_load("baseline", cache, tmp_path / "b", log=lambda m: None,
                                  **SETTINGS)
    assert a.history["loss"] == b.history["loss"]


@pytest.mark.parametrize("damage, named", [
    (lambda f: (f / "history.json").write_text((f / "history.json").read_text()[:100]),
     "history.json: JSONDecodeError"),
    (lambda f: (f / "last.npz").write_bytes((f / "last.npz").read_bytes()[:300]),
     "last.npz: not a readable .npz model file"),
])
def test_a_stored_run_that_does_not_load_is_named_and_trained_again(cache, tmp_path, damage, named):
    first = experiments.train_or_load("baseline", cache, tmp_path, log=lambda m: None, **SETTINGS)
    damage(first.folder)
    logs = []
    again = experiments.train_or_load("baseline", cache, tmp_path, log=logs.append, **SETTINGS)
    assert not again.reused and again.history["loss"] == first.history["loss"]
    assert any(named in m and str(first.folder) in m and "training it again" in m for m in logs), logs
    assert experiments.train_or_load("baseline", cache, tmp_path, log=logs.append, **SETTINGS).reused


def test_an_unfinished_run_resumes_or_starts_over_when_its_checkpoint_cannot_help(cache, tmp_path):
    from mura_core.train import load_history

    settings = dict(SETTINGS, steps=6)
    ident = experiments.train_or_load("baseline", cache, tmp_path / "ref", log=lambda m: None,
                                      **settings)
    folder = tmp_path / "runs" / ident.folder.name
    # killed before its first checkpoint: a history says "running", nothing to resume from
    folder.mkdir(parents=True)
    (folder / "history.json").write_text(json.dumps({"status": "running", "loss": [1.0]}))
    logs = []
    run = experiments.train_or_load("baseline", cache, tmp_path / "runs", log=logs.append, **settings)
    assert run.history["loss"] == ident.history["loss"]
    assert any("holds an unfinished run with no checkpoint" in m for m in logs), logs
    # an unfinished run whose checkpoint is damaged: named, then trained from step 0
    (folder / "checkpoint.npz").write_bytes(b"PK\x03\x04 cut short")
    (folder / "history.json").write_text(json.dumps({"status": "interrupted"}))
    logs = []
    run = experiments.train_or_load("baseline", cache, tmp_path / "runs", log=logs.append, **settings)
    assert run.history["loss"] == ident.history["loss"]
    assert any("checkpoint.npz: not a readable .npz model file" in m for m in logs), logs
    assert load_history(folder)["status"] == "completed"


DIVERGING = dict(SETTINGS, steps=6, lr=1e9, momentum=0.0, eval_every=None)


def test_a_diverging_run_comes_back_marked_instead_of_raising(cache, tmp_path):
    with np.errstate(all="ignore"):
        run = experiments.train_or_load("baseline", cache, tmp_path, log=lambda m: None,
                                        **DIVERGING)
    assert run.diverged
    assert "step" in run.history["error"]
    again = experiments.train_or_load("baseline", cache, tmp_path, log=lambda m: None,
                                      **DIVERGING)
    assert again.reused and again.diverged
    row = experiments.sweep_table("lr", {1e9: run})[0]
    assert row["diverged"] is True and row["final_train_loss"] is None
    (run.folder / "diverged.json").write_text("{")  # a damaged record: trained again
    logs = []
    with np.errstate(all="ignore"):
        again = experiments.train_or_load("baseline", cache, tmp_path, log=logs.append, **DIVERGING)
    assert again.diverged and not again.reused
    assert any("diverged.json: JSONDecodeError" in m for m in logs), logs


def test_architecture_table_reports_parameters_time_and_final_metrics(cache, tmp_path):
    runs = experiments.compare_architectures(["baseline", "residual"], cache, tmp_path,
                                             log=lambda m: None, **SETTINGS)
    table = experiments.architecture_table(runs)
    assert [r["name"] for r in table] == ["baseline", "residual"]
    for row in table:
        assert row["params"] > 0 and row["seconds_per_step"] > 0
        assert row["steps"] == SETTINGS["steps"]
        assert 0 <= row["valid_accuracy"] <= 1 and 0 <= row["train_accuracy"] <= 1
    assert table[1]["params"] > table[0]["params"], "residual adds 1x1 projections"
    json.dumps(table)


def test_sweep_report_rows_caption_and_discussion(cache, tmp_path):
    base = dict(batch_size=4, lr=0.01, momentum=0.9, weight_decay=0.0, train_eval_size=8)
    runs = experiments.sweep("batch_size", [2, 4], cache, tmp_path, base=base, examples=8,
                             eval_every_examples=4, seed=0, log=lambda m: None)
    rep = tables.sweep_report("batch_size", runs)
    assert [r["steps"] for r in rep["rows"]] == [4, 2]
    assert {r["examples"] for r in rep["rows"]} == {8}
    assert "8 training examples" in rep["caption"]
    assert "batch size" in rep["discussion"]
    json.dumps(rep)


def test_data_counts_add_up_to_the_cache(cache):
    rows = tables.data_counts(cache)
    total = rows[-1]
    assert total["body_part"] == "all"
    for split in ("train", "valid"):
        assert total[f"{split}_images"] == len(cache.split(split))
        assert total[f"{split}_normal"] + total[f"{split}_abnormal"] == total[f"{split}_images"]
        assert total[f"{split}_normal"] == int((cache.split(split).labels == 1).sum())


def test_pick_samples_takes_both_classes_from_several_body_parts(cache):
    split = cache.split("train")
    rows = samples.pick_samples(split, 3, seed=0)
    assert len(rows) == 6 and len(set(rows.tolist())) == 6
    assert list(split.labels[rows]) == [1, 1, 1, 0, 0, 0]
    assert len(set(split.body_parts[rows[:3]])) > 1


def test_prediction_rows_name_the_file_and_both_labels(cache):
    split = cache.split("valid")
    rows = [0, 1, 2]
    labels = tables.prediction_rows(split, rows, [0.9, 0.2, 0.5])
    assert [r["predicted"] for r in labels] == ["normal", "abnormal", "normal"]
    assert [r["truth"] for r in labels] == [
        "normal" if split.labels[i] == 1 else "abnormal" for i in rows]
    assert labels[0]["path"] == split.records[0].path
    assert labels[0]["image"].startswith("image") and labels[0]["study"].startswith("study")


def test_gradcheck_batch_is_float64_and_small(cache):
    x, t = samples.gradcheck_batch(cache, 16, n=2, seed=0)
    assert x.shape == (2, 1, 16, 16) and x.dtype == np.float64
    assert sorted(t.tolist()) == [0.0, 1.0]


def _table(image, patient, study, kappa, base_image, n=10):
    return {"n_images": n, "n_patients": 4, "n_studies": 5, "loss": 0.5,
            "image_accuracy": image, "patient_accuracy": patient, "study_accuracy": study,
            "study_kappa": kappa, "image_auc": 0.7, "majority_class": 1,
            "baseline": {"image_accuracy": base_image, "patient_accuracy": 0.5,
                         "study_accuracy": 0.55}}


def test_metric_rows_and_evaluation_summary_use_the_numbers():
    splits = {"train": _table(0.9, 0.8, 0.85, 0.7, 0.6), "valid": _table(0.7, 0.6, 0.65, 0.3, 0.52)}
    rows = {r["metric"]: r for r in tables.metric_rows(splits)}
    assert rows["accuracy per image"] == {"metric": "accuracy per image", "train": "90.0 %",
                                          "valid": "70.0 %"}
    assert rows["majority class: accuracy per image"]["valid"] == "52.0 %"
    text = prose.evaluation_summary(splits)
    assert "70.0 % of the images, 60.0 % of the patients and 65.0 % of the studies" in text
    assert "52.0 %" in text and "always predicting normal" in text
    assert "20.0 points above valid" in text
