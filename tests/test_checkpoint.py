"""Saving and loading models: round trips, atomic writes, and clear errors for bad files."""
import numpy as np
import pytest

import mura_core as mc
from mura_core.nn.serialization import load_weights, read_npz


@pytest.fixture
def model():
    m = mc.build_model("residual", input_size=35, seed=4)
    m.metadata = {"size": 35, "mode": "pad", "mean": 80.5, "std": 40.25}
    return m


def test_round_trip_gives_identical_predictions_and_metadata(tmp_path, model):
    x = np.random.default_rng(0).standard_normal((3, 1, 35, 35)).astype(np.float32)
    path = tmp_path / "models" / "m.npz"
    mc.save_model(model, path)
    loaded = mc.load_model(path)
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    assert loaded.metadata == model.metadata and loaded.spec == model.spec
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.npz"]  # no temp file left


def test_truncated_file_is_a_clear_error(tmp_path, model):
    path = tmp_path / "m.npz"
    mc.save_model(model, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(mc.ModelFileError, match=r"m\.npz.*truncated"):
        mc.load_model(path)


def test_non_model_files_are_clear_errors(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(mc.ModelFileError, match="notes.txt"):
        mc.load_model(text)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(mc.ModelFileError, match="other.npz: not a mura_core model"):
        mc.load_model(other)
    with pytest.raises(mc.ModelFileError, match="no such file"):
        mc.load_model(tmp_path / "missing.npz")


def test_a_file_for_another_architecture_is_refused(tmp_path, model):
    path = tmp_path / "res.npz"
    mc.save_model(model, path)
    with pytest.raises(mc.ModelFileError, match="res.npz holds a 'residual' model, not 'baseline'"):
        mc.load_model(path, expect_arch="baseline")
    baseline = mc.build_model("baseline", input_size=35)
    weights = {k[len("param/"):]: v for k, v in read_npz(path).items() if k.startswith("param/")}
    with pytest.raises(mc.ModelFileError, match="res.npz: its weights do not fit a 'baseline'"):
        load_weights(baseline, weights, path)


def test_model_files_load_without_pickle(tmp_path, model):
    path = tmp_path / "m.npz"
    mc.save_model(model, path)
    with np.load(path, allow_pickle=False) as f:
        assert "__model__" in f.files and "param/conv1.W" in f.files


def test_checkpoint_step_reads_the_step_and_names_a_model_file_or_a_damaged_one(tmp_path, model):
    from mura_core.checkpoint import checkpoint_step, save_checkpoint
    from mura_core.nn.optim import SGD

    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, model, SGD(model.parameters(), 0.1, 0.9), {"step": 7})
    assert checkpoint_step(path) == 7
    mc.save_model(model, tmp_path / "m.npz")
    with pytest.raises(ValueError, match=r"m\.npz is a model file, not a training checkpoint"):
        checkpoint_step(tmp_path / "m.npz")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"checkpoint\.npz: not a readable checkpoint"):
        checkpoint_step(path)
