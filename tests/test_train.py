"""Trainer: learning, determinism, checkpoints and resume, guard rails, history layout."""
import json
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

import mura_core as mc
from mura_core.data.batches import iterate_batches
from mura_core.data.cache import CachedSplit, MuraCache
from mura_core.data.mura import ImageRecord
from mura_core.evaluation import metrics
from mura_core.evaluation.predictions import evaluate, patient_subset
from mura_core.nn.backend import cupy_available, to_numpy
from mura_core.training import (
    TrainConfig,
    TrainingDiverged,
    load_history,
    mura_class_weights,
    train,
)
from mura_core.training.feed import step_batches

SIZE = 32
PARTS = ("XR_ELBOW", "XR_HAND", "XR_WRIST")


def _split(name: str, n: int, rng, first_patient: int) -> CachedSplit:
    """Studies of 1-3 images; abnormal images carry a bright square, normal ones do not."""
    records, images = [], []
    patient, study_no = first_patient, 0
    while len(records) < n:
        part = PARTS[int(rng.integers(len(PARTS)))]
        label = int(rng.random() < 0.55)
        study_no += 1
        study = f"study{study_no}"
        for _ in range(int(rng.integers(1, 4))):
            img = np.clip(rng.normal(70, 25, (SIZE, SIZE)), 0, 255)
            if label == 0:
                y, x = rng.integers(2, SIZE - 10, 2)
                img[y:y + 8, x:x + 8] = 230
            images.append(img.astype(np.uint8))
            records.append(ImageRecord(f"/mem/{name}/{len(records)}.png", label, part,
                                       f"patient{patient:05d}", study, name))
        if rng.random() < 0.7:  # else the patient gets another study
            patient, study_no = patient + 1, 0
    return CachedSplit(name, np.stack(images), np.array([r.label for r in records], np.float32),
                       records, [], SIZE, "pad")


def memory_cache(n_train: int = 160, n_valid: int = 64, seed: int = 0) -> MuraCache:
    rng = np.random.default_rng(seed)
    train_split = _split("train", n_train, rng, 1)
    valid_split = _split("valid", n_valid, rng, 5000)
    pixels = train_split.images.astype(np.float64)
    return MuraCache(Path("/mem"), "/mem", SIZE, "pad", float(pixels.mean()), float(pixels.std()), "mem",
                     {"train": train_split, "valid": valid_split}, False, 0.0)


@pytest.fixture(scope="module")
def cache():
    return memory_cache()


def small_model(seed: int = 0, size: int = SIZE):
    return mc.build_model("baseline", input_size=size, seed=seed, width=0.125, dropout=0.5)


BASE = dict(steps=24, batch_size=16, lr=0.01, momentum=0.9, eval_every=8, train_eval_size=60,
            progress=False, seed=3)


def strip_timing(history: dict) -> dict:
    h = json.loads(json.dumps(history))
    h.pop("timing")
    h.pop("config")
    return h


def weights(model) -> dict:
    return {k: to_numpy(v).copy() for k, v in model.parameters().items()}


def test_history_layout_and_files(cache, tmp_path):
    out = tmp_path / "run"
    result = train(small_model(), cache, BASE, out_dir=str(out), checkpoint_every=10)
    h = result.history
    assert h["format"] == "mura_core.history/1" and h["status"] == "completed"
    assert h["steps_per_epoch"] == len(cache.split("train").labels) // 16
    assert len(h["loss"]) == len(h["lr"]) == h["total_steps"] == h["step"] == 24
    eval_steps = [e["step"] for e in h["evals"]]
    spe = h["steps_per_epoch"]
    assert eval_steps == sorted(set([8, 16, 24] + list(range(spe, 25, spe))))
    assert [e["epoch_end"] for e in h["evals"]] == [s % spe == 0 for s in eval_steps]
    assert h["evals"][0]["epoch"] == pytest.approx(8 / spe)
    for point in h["evals"]:
        assert point["train"]["n_images"] == h["data"]["train_eval_images"]
        assert point["valid"]["n_images"] == len(cache.split("valid").labels)
        assert point["valid"]["majority_class"] == metrics.majority_class(cache.split("train").labels)
    timing = h["timing"]
    assert timing["time_per_step_s"] > 0 and timing["steps_timed"] == 24
    # the mean counts the first step, which pays one-time setup; the median is the steady pace
    assert 0 < timing["median_step_s"] <= timing["time_per_step_s"] * 24
    assert timing["first_step_s"] > 0
    assert timing["time_per_step_s"] * 24 >= timing["first_step_s"]
    assert load_history(out) == json.loads(json.dumps(h))
    for name in ("history.json", "checkpoint.npz", "best.npz", "last.npz"):
        assert (out / name).is_file()
    assert not list(out.glob("*.tmp"))
    # the best model is the one with the best valid study kappa (accuracy breaks ties), and
    # it reloads
    best_point = max(h["evals"], key=lambda e: (e["valid"]["study_kappa"], e["valid"]["image_accuracy"]))
    best_acc = best_point["valid"]["image_accuracy"]
    assert h["best"]["step"] == best_point["step"]
    assert h["best"]["valid_study_kappa"] == best_point["valid"]["study_kappa"]
    assert h["best"]["valid_image_accuracy"] == best_acc
    best = mc.load_model(out / "best.npz")
    _, table = evaluate(best, cache.split("valid"), cache.mean, cache.std, batch_size=32)
    assert table["image_accuracy"] == pytest.approx(best_acc)
    pre = best.metadata["preprocessing"]
    assert (pre["size"], pre["mode"]) == (SIZE, "pad") and pre["mean"] == pytest.approx(cache.mean)
    # float32 end to end
    last = mc.load_model(out / "last.npz")
    assert all(v.dtype == np.float32 for v in last.parameters().values())
    probs, _ = evaluate(last, cache.split("valid"), cache.mean, cache.std)
    assert probs.dtype == np.float32 and probs.shape == (len(cache.split("valid").labels),)


def test_short_run_lowers_loss_and_beats_majority(cache):
    result = train(small_model(), cache, BASE, steps=60, eval_every=None, lr=0.02)
    loss = np.array(result.history["loss"])
    assert loss[-10:].mean() < 0.8 * loss[:10].mean()
    valid = result.history["evals"][-1]["valid"]
    assert valid["image_accuracy"] > valid["baseline"]["image_accuracy"] + 0.1


def test_same_seed_gives_identical_history(cache):
    a = train(small_model(), cache, BASE).history
    b = train(small_model(), cache, BASE).history
    assert strip_timing(a) == strip_timing(b)
    c = train(small_model(), cache, BASE, seed=4).history  # another data order
    assert c["loss"] != a["loss"]


def test_training_on_the_gpu_follows_numpy(cache):
    """The GPU path of a run (batches moved in the prefetch thread, one fused SGD launch over
    the packed parameters, the fused loss) gives the NumPy run's losses and weights, to
    float32 rounding: same data order, same dropout masks, same arithmetic."""
    if not cupy_available():
        pytest.skip("CuPy with a CUDA device is not available")
    runs = {backend: train(mc.build_model("baseline", input_size=SIZE, seed=0, width=0.125,
                                          dropout=0.5, backend=backend), cache, BASE)
            for backend in ("numpy", "cupy")}
    np.testing.assert_allclose(runs["cupy"].history["loss"], runs["numpy"].history["loss"],
                               rtol=1e-3, atol=1e-5)
    for name, w in weights(runs["numpy"].model).items():
        np.testing.assert_allclose(weights(runs["cupy"].model)[name], w, rtol=1e-3,
                                   atol=1e-4 * np.abs(w).max())


def _sigint_at(k):
    def on_step(step, loss):
        if step == k:
            os.kill(os.getpid(), signal.SIGINT)
    return on_step


def test_ctrl_c_writes_checkpoint_and_resume_matches_uninterrupted(cache, tmp_path):
    config = dict(BASE, steps=20, eval_every=6, checkpoint_every=100)
    full = train(small_model(), cache, config, out_dir=str(tmp_path / "full"))
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train(small_model(), cache, config, out_dir=str(out), on_step=_sigint_at(7))
    assert load_history(out)["status"] == "interrupted"
    assert load_history(out)["step"] == 7  # mid-epoch, between evaluations and checkpoints
    # resume into a model built with another seed: everything must come from the checkpoint
    resumed = train(small_model(seed=99), cache, config, out_dir=str(out), resume=True)
    for name, value in weights(full.model).items():
        np.testing.assert_array_equal(value, np.asarray(resumed.model.parameters()[name]), err_msg=name)
    assert strip_timing(resumed.history) == strip_timing(full.history)


def test_killed_run_resumes_from_last_periodic_checkpoint(cache, tmp_path):
    config = dict(BASE, steps=14, eval_every=None, checkpoint_every=4)
    full = train(small_model(), cache, config, out_dir=str(tmp_path / "full"))

    def crash(step, loss):
        if step == 10:
            raise RuntimeError("simulated crash")

    out = tmp_path / "crash"
    with pytest.raises(RuntimeError, match="simulated"):
        train(small_model(), cache, config, out_dir=str(out), on_step=crash)
    ckpt = mc.load_model(out / "checkpoint.npz")  # a checkpoint is a loadable model file too
    assert ckpt.metadata["trained"]["step"] == 8
    resumed = train(small_model(), cache, config, out_dir=str(out), resume=True)
    for name, value in weights(full.model).items():
        np.testing.assert_array_equal(value, np.asarray(resumed.model.parameters()[name]), err_msg=name)
    assert resumed.history["loss"] == full.history["loss"]


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "mura-prefetch" and t.is_alive()]


@pytest.mark.parametrize("start", [0, 7, 9, 10])
def test_prefetched_batches_are_the_epochs_batches_in_order(cache, start):
    """From any step (a resumed run starts mid-epoch), the trainer's batch stream is the
    remaining batches of iterate_batches, epoch after epoch, exactly one per remaining step."""
    config = TrainConfig(**dict(BASE, steps=30, augment=True))
    split = cache.split("train")
    spe = len(split.labels) // 16
    got = list(step_batches(split, config, mean=cache.mean, std=cache.std, start_step=start,
                            total_steps=30, steps_per_epoch=spe, to_device=lambda b: b))
    expected = []
    for epoch in range(start // spe, 30 // spe + 1):
        first = start % spe if epoch == start // spe else 0
        expected += list(iterate_batches(split, 16, mean=cache.mean, std=cache.std,
                                         shuffle=True, seed=3, epoch=epoch, augment=True,
                                         drop_last=True, start_batch=first))
    expected = expected[:30 - start]
    assert len(got) == 30 - start
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a.index, b.index)
        np.testing.assert_array_equal(a.x, b.x)


def test_no_prefetch_thread_outlives_a_run(cache, tmp_path):
    train(small_model(), cache, BASE)
    assert not _prefetch_threads()
    with pytest.raises(KeyboardInterrupt):
        train(small_model(), cache, BASE, out_dir=str(tmp_path / "cut"), on_step=_sigint_at(3))
    assert not _prefetch_threads()

    def crash(step, loss):
        if step == 2:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated"):
        train(small_model(), cache, BASE, on_step=crash)
    assert not _prefetch_threads()


def test_resume_can_extend_but_not_change_settings(cache, tmp_path):
    out = str(tmp_path / "run")
    train(small_model(), cache, BASE, steps=8, out_dir=out)
    longer = train(small_model(), cache, BASE, steps=12, out_dir=out, resume=True)
    assert len(longer.history["loss"]) == 12
    straight = train(small_model(), cache, BASE, steps=12)
    assert longer.history["loss"] == straight.history["loss"]
    with pytest.raises(ValueError, match=r"momentum: 0.9 -> 0.5"):
        train(small_model(), cache, BASE, steps=16, momentum=0.5, out_dir=out, resume=True)
    with pytest.raises(FileExistsError, match="resume"):
        train(small_model(), cache, BASE, out_dir=out)
    with pytest.raises(ValueError, match="another model"):
        train(small_model(size=40), memory_cache_40(), BASE, steps=16, out_dir=out, resume=True)


def test_a_new_learning_rate_on_resume_is_recorded_and_drops_a_later_best_model(cache, tmp_path):
    out = tmp_path / "run"
    train(small_model(), cache, BASE, steps=8, out_dir=str(out))
    # best.npz saved after the checkpoint, on steps now retaken at another rate (as when a
    # run diverged some evaluations after its last checkpoint)
    later = mc.load_model(out / "best.npz")
    later.metadata["trained"]["step"] = 11
    mc.save_model(later, out / "best.npz")
    h = train(small_model(), cache, BASE, steps=12, lr=0.005, out_dir=str(out), resume=True).history
    assert h["lr_changes"] == [{"step": 8, "lr_from": 0.01, "lr_to": 0.005}]
    assert h["lr"] == [0.01] * 8 + [0.005] * 4
    assert h["best"]["step"] > 8, "the best is tracked afresh from the resumed steps"
    assert mc.load_model(out / "best.npz").metadata["trained"]["step"] == h["best"]["step"]


def memory_cache_40():
    c = memory_cache(n_train=40, n_valid=8)
    imgs = {k: np.pad(s.images, ((0, 0), (4, 4), (4, 4))) for k, s in c.splits.items()}
    splits = {k: CachedSplit(k, imgs[k], s.labels, s.records, [], 40, "pad") for k, s in c.splits.items()}
    return MuraCache(c.cache_dir, c.root, 40, "pad", c.mean, c.std, "mem40", splits, False, 0.0)


def test_nan_guard_names_step_and_lr_and_writes_no_checkpoint_of_diverging_weights(cache,
                                                                                   tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match=r"at step \d+ \(learning rate 1e\+06\); training "
                       r"stopped and no good checkpoint had been written\. Lower the learning "
                       r"rate: train afresh at a lower rate \(--overwrite --lr 100000\)\.") as info:
        train(small_model(), cache, BASE, steps=60, lr=1e6, momentum=0.9, checkpoint_every=1,
              eval_every=None, out_dir=str(out))
    step = info.value.step
    assert info.value.lr == 1e6 and info.value.suggested_lr == 1e5 and step > 1
    # every step's weights were finite but far from where the run started: none was kept
    assert not (out / "checkpoint.npz").exists()
    h = load_history(out)
    assert h["status"] == "diverged" and f"step {step}" in h["error"]
    assert len(h["loss"]) == step - 1


def _blow_up_weights_at(model, k, how):
    """on_step hook: after step k's update, leave the weights as a much too large step would."""
    def on_step(step, loss):
        if step == k:
            params = list(model.parameters().values())
            if how == "inf":
                params[0][(0,) * params[0].ndim] = np.inf
            else:  # finite weights whose activations overflow float32 in the forward pass
                for p in params:
                    p *= np.float32(1e12)
    return on_step


@pytest.mark.parametrize("how, what", [("inf", "a weight"),
                                       ("huge", "the predicted probability on train")])
def test_weights_blown_up_by_a_step_stop_the_evaluation_after_it(cache, tmp_path, how, what):
    out = tmp_path / how
    model = small_model()
    with pytest.raises(TrainingDiverged, match=what + r" is non-finite at step 5 \(learning rate 0\.01\)"
                       r".*last good checkpoint.*\(step 4\), is kept") as info:
        train(model, cache, BASE, steps=12, eval_every=5, checkpoint_every=1, out_dir=str(out),
              on_step=_blow_up_weights_at(model, 5, how))
    assert info.value.step == 5 and info.value.lr == 0.01
    kept = mc.load_model(out / "checkpoint.npz")
    assert kept.metadata["trained"]["step"] == 4
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in kept.parameters().values())
    probs, _ = evaluate(kept, cache.split("valid"), cache.mean, cache.std)
    assert np.isfinite(probs).all()
    h = load_history(out)
    assert h["status"] == "diverged" and "at step 5" in h["error"]
    assert h["evals"] == []


@pytest.mark.parametrize("bad, message", [
    (dict(lr=0.0), "learning rate must be a positive"),
    (dict(lr=-0.1), "learning rate must be a positive"),
    (dict(batch_size=10_000), "larger than the 1"),
    (dict(batch_size=0), "batch_size must be a positive"),
    (dict(schedule="linear"), "schedule must be one of"),
    (dict(warmup_steps=-1), "warmup_steps must be"),
    (dict(steps=0), "steps must be a positive"),
    (dict(momentum=1.0), "momentum"),
    (dict(class_weights="balanced"), "class_weights must be one of none, mura"),
])
def test_bad_settings_fail_before_any_work(cache, tmp_path, bad, message):
    out = tmp_path / "never"
    calls = []
    with pytest.raises(ValueError, match=message):
        train(small_model(), cache, BASE, out_dir=str(out), on_step=lambda s, _loss: calls.append(s), **bad)
    assert not out.exists() and not calls


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown architecture 'lenet'"):
        mc.build_model("lenet", input_size=SIZE)


def test_model_and_cache_sizes_must_agree(cache):
    with pytest.raises(ValueError, match="build the cache with size=40"):
        train(small_model(size=40), cache, BASE)


def test_step_and_plateau_schedules(cache):
    h = train(small_model(), cache, BASE, steps=12, schedule="step", lr_step_size=5, lr_gamma=0.5).history
    assert h["lr"] == pytest.approx([0.01] * 5 + [0.005] * 5 + [0.0025] * 2)
    h = train(small_model(), cache, BASE, steps=12, lr=1e-6, schedule="plateau", eval_every=1,
              plateau_patience=1, lr_gamma=0.5).history
    # with a negligible lr the accuracy stalls: every 2 non-improving evaluations halve the lr
    assert h["lr"][0] == pytest.approx(1e-6)
    assert h["lr"][-1] < h["lr"][0] / 4
    assert all(b <= a for a, b in zip(h["lr"], h["lr"][1:]))


def test_warmup_ramps_the_rate_linearly_then_the_schedule_takes_over(cache):
    h = train(small_model(), cache, BASE, steps=6, lr=0.01, warmup_steps=3).history
    assert h["lr"] == pytest.approx([0.01 / 3, 0.02 / 3, 0.01, 0.01, 0.01, 0.01])
    h = train(small_model(), cache, BASE, steps=7, lr=0.01, warmup_steps=2, schedule="cosine",
              min_lr=0.001).history
    # after the warm-up, half a cosine from 0.01 to 0.001 over the remaining 5 steps
    cosine = [0.001 + 0.009 * 0.5 * (1 + np.cos(np.pi * k / 5)) for k in range(5)]
    assert h["lr"] == pytest.approx([cosine[0] / 2, cosine[0]] + cosine)


def test_warmup_resumes_mid_ramp_with_the_same_rates_and_weights(cache, tmp_path):
    config = dict(BASE, steps=8, lr=0.01, warmup_steps=5, schedule="cosine")
    whole = train(small_model(), cache, config)
    with pytest.raises(KeyboardInterrupt):
        train(small_model(), cache, config, out_dir=str(tmp_path / "r"), on_step=_sigint_at(3))
    resumed = train(small_model(), cache, config, out_dir=str(tmp_path / "r"), resume=True)
    assert resumed.history["lr"] == whole.history["lr"]
    for name, value in weights(whole.model).items():
        np.testing.assert_array_equal(value, weights(resumed.model)[name])


def test_final_valid_predictions_are_saved_beside_the_model(cache, tmp_path):
    result = train(small_model(), cache, BASE, steps=4, out_dir=str(tmp_path / "p"))
    with np.load(tmp_path / "p" / "predictions.npz", allow_pickle=False) as f:
        saved, step = f["valid"], int(f["step"])
    last = mc.load_model(tmp_path / "p" / "last.npz")
    probs, _ = evaluate(last, cache.split("valid"), cache.mean, cache.std)
    assert step == 4 and saved.dtype == np.float32
    np.testing.assert_array_equal(saved, probs)
    assert result.history["evals"][-1]["valid"]["image_accuracy"] == pytest.approx(
        metrics.accuracy(cache.split("valid").labels, metrics.predict_labels(saved)))


def test_train_eval_subset_takes_whole_patients(cache):
    split = cache.split("train")
    rows = patient_subset(split, 40, seed=3)
    assert len(rows) >= 40 and np.all(np.diff(rows) > 0)
    chosen = set(split.patient_ids[rows])
    everyone = np.flatnonzero(np.isin(split.patient_ids, list(chosen)))
    np.testing.assert_array_equal(rows, everyone)
    np.testing.assert_array_equal(rows, patient_subset(split, 40, seed=3))
    assert len(patient_subset(split, None, seed=3)) == len(split.labels)


def test_evaluate_matches_metric_table_on_model_probabilities(cache):
    model = small_model()
    split = cache.split("valid")
    probs, table = evaluate(model, split, cache.mean, cache.std, batch_size=7)
    x = ((split.images.astype(np.float32) - np.float32(cache.mean)) / np.float32(cache.std))[:, None]
    np.testing.assert_allclose(probs, model.predict_proba(x), rtol=1e-5, atol=1e-6)
    expected = metrics.metric_table(probs, split.labels, split.patient_ids, split.study_ids, split.body_parts)
    assert table == expected


def test_mura_class_weights_follow_the_paper_per_body_part():
    labels = np.array([1, 1, 1, 0, 1, 0, 0, 0, 1])  # 1 normal, 0 abnormal
    parts = np.array(["HAND"] * 4 + ["WRIST"] * 5)
    weights, table = mura_class_weights(labels, parts)
    # HAND: A = 1 abnormal, N = 3 normal; WRIST: A = 3, N = 2.
    assert table["HAND"] == {"abnormal": 3 / 4, "normal": 1 / 4, "n_abnormal": 1, "n_normal": 3}
    assert table["WRIST"] == {"abnormal": 2 / 5, "normal": 3 / 5, "n_abnormal": 3, "n_normal": 2}
    expected = [1 / 4, 1 / 4, 1 / 4, 3 / 4, 3 / 5, 2 / 5, 2 / 5, 2 / 5, 3 / 5]
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    assert weights.dtype == np.float32
    for part in ("HAND", "WRIST"):  # the two classes of a part carry the same total weight
        rows = parts == part
        assert weights[rows & (labels == 1)].sum() == pytest.approx(weights[rows & (labels == 0)].sum())


def test_mura_class_weights_reach_the_training_loss(cache):
    config = dict(BASE, steps=1, eval_every=None, class_weights="mura")
    h = train(small_model(), cache, config).history
    split = cache.split("train")
    weights, table = mura_class_weights(split.labels, split.body_parts)
    assert h["data"]["class_weights"] == table
    batch = next(iter(iterate_batches(split, BASE["batch_size"], mean=cache.mean, std=cache.std,
                                      shuffle=True, seed=BASE["seed"], epoch=0, drop_last=True)))
    fresh = small_model()  # same weights and dropout stream as the run's first step
    loss, _ = mc.loss_and_grads(fresh, batch.x, batch.t, training=True, weights=weights[batch.index])
    assert h["loss"][0] == pytest.approx(loss, rel=1e-6)
    plain, _ = mc.loss_and_grads(small_model(), batch.x, batch.t, training=True)
    assert abs(plain - loss) > 1e-3, "the weights change the loss"


def test_no_class_weights_is_the_plain_loss_and_the_default(cache):
    assert TrainConfig().class_weights == "none"
    plain = train(small_model(), cache, dict(BASE, steps=4, eval_every=None)).history
    named = train(small_model(), cache, dict(BASE, steps=4, eval_every=None, class_weights="none")).history
    assert plain["loss"] == named["loss"] and plain["data"]["class_weights"] is None
