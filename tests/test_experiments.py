"""Experiments of the report: runs keyed by their settings, sweeps with equal examples seen,
and the tables and summaries the notebooks show."""
from __future__ import annotations

import json

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from mura_core.data import build_cache, generate_synthetic, samples
from mura_core.evaluation import stats
from mura_core.experiments import comparisons, executors, store
from mura_core.report import prose, tables

SIZE = 32


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, n_train=40, n_valid=16, seed=3)
    with pytest.warns(Warning):  # the generator truncates one file on purpose
        return build_cache(root, size=SIZE, mode="pad", cache_dir=root / "cache",
                           progress=False)


SPEC = store.RunSpec(arch="baseline", seed=0, steps=2, batch_size=4, lr=0.01, momentum=0.9,
                           eval_every=1, train_eval_size=8)
QUIET = dict(log=lambda m: None)


def test_run_id_changes_with_every_setting_that_decides_the_numbers():
    base = store.RunSpec(arch="baseline", seed=0, steps=10, batch_size=32, lr=0.01,
                               momentum=0.9, eval_every=5, train_eval_size=100)
    ident = dict(input_size=227, backend="numpy", cache_key="k")
    first = base.run_id(**ident)
    assert first == base.replace().run_id(**ident)
    assert first.startswith("baseline-")
    assert base.replace(label="a name").run_id(**ident) == first, "a label is not identity"
    for key, value in [("steps", 11), ("batch_size", 16), ("lr", 0.1), ("momentum", 0.5),
                       ("weight_decay", 1e-4), ("eval_every", 3), ("dropout", 0.2),
                       ("warmup_steps", 5), ("schedule", "cosine"), ("min_lr", 1e-5),
                       ("seed", 1), ("arch", "wider"), ("train_eval_size", 50),
                       ("augment", True)]:
        assert base.replace(**{key: value}).run_id(**ident) != first, key
    for key, value in [("input_size", 64), ("backend", "cupy"), ("cache_key", "x")]:
        assert base.run_id(**dict(ident, **{key: value})) != first, key
    assert set(store.RUN_SETTINGS) | {"arch", "seed", "label"} == {
        f.name for f in __import__("dataclasses").fields(store.RunSpec)}


def test_sweep_specs_give_every_run_the_same_examples_warmup_and_evaluations():
    base = SPEC.replace(steps=60, batch_size=32, eval_every=10, warmup_steps=6)
    runs = comparisons.sweep_specs("batch_size", [16, 32, 64], base)
    assert list(runs) == ["batch size 16", "batch size 32", "batch size 64"]
    assert [r.steps for r in runs.values()] == [120, 60, 30]
    assert [r.eval_every for r in runs.values()] == [20, 10, 5]
    assert [r.warmup_steps for r in runs.values()] == [12, 6, 3]
    assert {r.steps * r.batch_size for r in runs.values()} == {1920}
    assert runs["batch size 32"] == base, "the centre value is the base run itself"
    lrs = comparisons.sweep_specs("lr", [0.1, 0.001], base)
    assert [r.lr for r in lrs.values()] == [0.1, 0.001] and {r.steps for r in lrs.values()} == {60}
    with pytest.raises(ValueError, match="cannot sweep"):
        comparisons.sweep_specs("dropout", [0.1], base)


def test_train_or_load_trains_once_then_reuses_the_same_run(cache, tmp_path):
    logs = []
    first = store.train_or_load(SPEC, cache, tmp_path, log=logs.append)
    assert not first.reused and first.model_path.exists()
    assert len(first.history["loss"]) == SPEC.steps
    assert first.valid_probs.shape == (len(cache.split("valid")),)
    again = store.train_or_load(SPEC, cache, tmp_path, log=logs.append)
    assert again.reused and again.folder == first.folder
    assert again.history["loss"] == first.history["loss"]
    np.testing.assert_array_equal(again.valid_probs, first.valid_probs)
    assert "reusing" in logs[-1]
    other = store.train_or_load(SPEC.replace(lr=0.001), cache, tmp_path, **QUIET)
    assert other.folder != first.folder and not other.reused


def test_same_settings_in_a_fresh_folder_give_the_same_numbers(cache, tmp_path):
    a = store.train_or_load(SPEC, cache, tmp_path / "a", **QUIET)
    b = store.train_or_load(SPEC, cache, tmp_path / "b", **QUIET)
    assert a.history["loss"] == b.history["loss"]
    np.testing.assert_array_equal(a.valid_probs, b.valid_probs)


def test_run_all_trains_a_run_named_twice_once(cache, tmp_path, monkeypatch):
    calls = []
    real = store.train_or_load

    def counted(spec, *args, **kwargs):
        calls.append(spec)
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(executors, "train_or_load", counted)
    runs = comparisons.run_all([SPEC.replace(label="a"), SPEC.replace(label="b"),
                                SPEC.replace(seed=1, label="c")], cache, tmp_path, **QUIET)
    assert len(calls) == 2, "the same identity under two labels is one run"
    assert [r.name for r in runs] == ["a", "b", "c"]
    assert runs[0].folder == runs[1].folder != runs[2].folder


@pytest.mark.parametrize("damage, named", [
    (lambda f: (f / "history.json").write_text((f / "history.json").read_text()[:100]),
     "history.json: JSONDecodeError"),
    (lambda f: (f / "last.npz").write_bytes((f / "last.npz").read_bytes()[:300]),
     "last.npz: not a readable .npz model file"),
])
def test_a_stored_run_that_does_not_load_is_named_and_trained_again(cache, tmp_path, damage, named):
    first = store.train_or_load(SPEC, cache, tmp_path, **QUIET)
    damage(first.folder)
    logs = []
    again = store.train_or_load(SPEC, cache, tmp_path, log=logs.append)
    assert not again.reused and again.history["loss"] == first.history["loss"]
    assert any(named in m and str(first.folder) in m and "training it again" in m for m in logs), logs
    assert store.train_or_load(SPEC, cache, tmp_path, log=logs.append).reused


def test_an_unfinished_run_resumes_or_starts_over_when_its_checkpoint_cannot_help(cache, tmp_path):
    from mura_core.training import load_history

    spec = SPEC.replace(steps=6)
    ident = store.train_or_load(spec, cache, tmp_path / "ref", **QUIET)
    folder = tmp_path / "runs" / ident.folder.name
    # killed before its first checkpoint: a history says "running", nothing to resume from
    folder.mkdir(parents=True)
    (folder / "history.json").write_text(json.dumps({"status": "running", "loss": [1.0]}))
    logs = []
    run = store.train_or_load(spec, cache, tmp_path / "runs", log=logs.append)
    assert run.history["loss"] == ident.history["loss"]
    assert any("holds an unfinished run with no checkpoint" in m for m in logs), logs
    # an unfinished run whose checkpoint is damaged: named, then trained from step 0
    (folder / "checkpoint.npz").write_bytes(b"PK\x03\x04 cut short")
    (folder / "history.json").write_text(json.dumps({"status": "interrupted"}))
    logs = []
    run = store.train_or_load(spec, cache, tmp_path / "runs", log=logs.append)
    assert run.history["loss"] == ident.history["loss"]
    assert any("checkpoint.npz: not a readable checkpoint" in m and "training it again" in m
               for m in logs), logs
    assert load_history(folder)["status"] == "completed"


DIVERGING = SPEC.replace(steps=6, lr=1e9, momentum=0.0, eval_every=None)


def test_a_diverging_run_comes_back_marked_instead_of_raising(cache, tmp_path):
    with np.errstate(all="ignore"):
        run = store.train_or_load(DIVERGING, cache, tmp_path, **QUIET)
    assert run.diverged
    assert "step" in run.history["error"]
    again = store.train_or_load(DIVERGING, cache, tmp_path, **QUIET)
    assert again.reused and again.diverged
    grouping = stats.Grouping.of(cache.split("valid").labels, cache.split("valid").patient_ids,
                             cache.split("valid").study_ids)
    row = comparisons.variant_row("lr 1e9", [run], grouping)
    assert row["diverged"] is True and row["final_train_loss"] is None
    assert row["image_accuracy"] is None
    (run.folder / "diverged.json").write_text("{")  # a damaged record: trained again
    logs = []
    with np.errstate(all="ignore"):
        again = store.train_or_load(DIVERGING, cache, tmp_path, log=logs.append)
    assert again.diverged and not again.reused
    assert any("diverged.json: JSONDecodeError" in m for m in logs), logs


def test_variants_from_seeds_give_rows_with_intervals_and_comparisons(cache, tmp_path):
    specs = comparisons.architecture_specs(["baseline", "residual"], SPEC)
    variants = comparisons.train_variants(specs, [0, 1], cache, tmp_path, **QUIET)
    assert [len(v) for v in variants.values()] == [2, 2]
    assert [r.spec.seed for r in variants["residual"]] == [0, 1]
    split = cache.split("valid")
    grouping = stats.Grouping.of(split.labels, split.patient_ids, split.study_ids, split.body_parts)
    summary = comparisons.architecture_summary(variants, grouping)
    table = summary["table"]
    assert [r["name"] for r in table] == ["baseline", "residual"]
    for row in table:
        assert row["params"] > 0 and row["seconds_per_step"] > 0 and row["seeds"] == 2
        assert row["steps"] == SPEC.steps
        assert row["image_accuracy_low"] <= row["image_accuracy"] <= row["image_accuracy_high"]
        pooled = np.mean([np.mean((r.valid_probs >= 0.5) == split.labels)
                          for r in variants[row["name"]]])
        assert row["image_accuracy"] == pytest.approx(pooled)
    assert table[1]["params"] > table[0]["params"], "residual adds 1x1 projections"
    [cmp] = summary["comparisons"]
    assert cmp["name"] == "residual" and cmp["low"] <= cmp["difference"] <= cmp["high"]
    assert cmp["difference"] == pytest.approx(table[1]["image_accuracy"] - table[0]["image_accuracy"])
    json.dumps(summary)


def test_sweep_report_rows_comparisons_caption_and_discussion(cache, tmp_path):
    base = SPEC.replace(steps=2, batch_size=4, eval_every=1)
    specs = comparisons.sweep_specs("batch_size", [2, 4], base)
    variants = comparisons.train_variants(specs, [0], cache, tmp_path, **QUIET)
    split = cache.split("valid")
    grouping = stats.Grouping.of(split.labels, split.patient_ids, split.study_ids, split.body_parts)
    summary = comparisons.sweep_summary("batch_size", [2, 4], variants, 4, grouping)
    rep = tables.sweep_report("batch_size", summary, 4)
    assert [r["steps"] for r in rep["rows"]] == [4, 2]
    assert {r["examples"] for r in rep["rows"]} == {8}
    assert [c["name"] for c in rep["comparisons"]] == ["batch size 2"]
    assert "8 training examples" in rep["caption"]
    assert "batch size" in rep["discussion"] and "centre value (batch size 4)" in rep["discussion"]
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


def test_an_interrupted_run_resumes_from_its_checkpoint_and_says_so(cache, tmp_path):
    from mura_core.nn.models import build_model
    from mura_core.training import train

    spec = SPEC.replace(steps=6, eval_every=2)
    folder = store.run_folder(spec, cache, tmp_path)

    def stop_after_three(step, loss):
        if step == 3:
            raise KeyboardInterrupt  # the trainer checkpoints, then re-raises

    settings = {k: v for k, v in spec.settings().items() if k != "dropout"}
    # on the BLAS threads of the store's runs: a float32 product's sums depend on their split
    with pytest.raises(KeyboardInterrupt), threadpool_limits(store.RUN_THREADS, user_api="blas"):
        train(build_model(spec.arch, input_size=SIZE, seed=spec.seed), cache, **settings,
              seed=spec.seed, out_dir=str(folder), on_step=stop_after_three)
    logs = []
    resumed = store.train_or_load(spec, cache, tmp_path, log=logs.append)
    assert resumed.resumed_from == 3 and not resumed.reused
    assert logs == [f"baseline (seed 0): resuming {folder.name} from its checkpoint at step 3 "
                    "of 6"]
    assert store.run_record(resumed)["resumed_from_step"] == 3
    whole = store.train_or_load(spec, cache, tmp_path / "whole", **QUIET)
    assert whole.resumed_from is None
    assert resumed.history["loss"] == whole.history["loss"]
    assert resumed.history["evals"] == whole.history["evals"]
    np.testing.assert_array_equal(resumed.valid_probs, whole.valid_probs)


def test_a_run_checkpoints_at_its_evaluation_points(cache, tmp_path):
    spec = SPEC.replace(steps=6, eval_every=2)
    run = store.train_or_load(spec, cache, tmp_path, **QUIET)
    assert run.history["config"]["checkpoint_every"] == 2
    assert not (run.folder / "checkpoint.npz").exists(), "removed once the run completed"


# --------------------------------------------------------------------------- executors


def test_worker_processes_give_the_numbers_of_this_process_in_spec_order(cache, tmp_path):
    """Every NumPy run multiplies on one BLAS thread whoever trains it: two worker processes
    train the very histories and predictions that this process trains, handed back in spec
    order, and say which process trained each."""
    specs = [SPEC.replace(seed=1, label="b"), SPEC.replace(label="a")]
    here = comparisons.run_all(specs, cache, tmp_path / "here", executor=executors.LocalExecutor(),
                               **QUIET)
    there = comparisons.run_all(specs, cache, tmp_path / "there",
                                executor=executors.ProcessExecutor(2), **QUIET)
    assert [r.name for r in there] == ["b", "a"]
    for mine, theirs in zip(here, there):
        assert mine.history["loss"] == theirs.history["loss"]
        assert mine.history["evals"] == theirs.history["evals"]
        np.testing.assert_array_equal(mine.valid_probs, theirs.valid_probs)
        assert theirs.worker.startswith("process ") and not theirs.reused
    again = comparisons.run_all(specs, cache, tmp_path / "there",
                                executor=executors.ProcessExecutor(2), **QUIET)
    assert all(r.reused for r in again), "stored runs are loaded, no process is started"


def test_the_scheduler_setting_chooses_the_executor(monkeypatch):
    monkeypatch.setattr(executors, "default_workers", lambda: 4)
    assert isinstance(executors.make_executor(None), executors.ProcessExecutor)
    assert executors.make_executor("").workers == 4
    assert isinstance(executors.make_executor(None, backend="cupy"), executors.LocalExecutor)
    assert isinstance(executors.make_executor("local"), executors.LocalExecutor)
    assert executors.make_executor("processes:3").describe() == {
        "executor": "processes", "workers": 3, "address": None, "blas_threads": 1}
    monkeypatch.setattr(executors, "default_workers", lambda: 1)
    assert isinstance(executors.make_executor(None), executors.LocalExecutor), "one core"
    for bad in ("processes:0", "processes:", "processes:two"):
        with pytest.raises(ValueError, match="processes:N with N >= 1"):
            executors.make_executor(bad)
    assert executors.parse_scheduler("processes:2") is None, "no Dask scheduler"


def test_a_run_trains_on_one_blas_thread_and_its_identity_says_so(cache, tmp_path):
    seen = []
    run = store.train_or_load(SPEC.replace(steps=1), cache, tmp_path,
                              log=lambda m: seen.append(store.blas_threads()))
    assert run.history["status"] == "completed"
    assert seen and set(seen) == {1}, "the log lines of the training came under one thread"
    ident = dict(input_size=32, cache_key="k")
    assert SPEC.run_id(backend="numpy", **ident) != SPEC.run_id(backend="cupy", **ident)
    assert store.run_threads("numpy") == store.RUN_THREADS == 1
    assert store.run_threads("cupy") is None
