"""Saving and loading models: round trips, atomic writes, and clear errors for bad files."""
import json
import os
import stat

import numpy as np
import pytest

import mura_core as mc
from mura_core.files import (
    atomic_write_text,
    check_writable_file,
    check_writable_folder,
    remove_stale_temp_files,
)
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


def test_random_bytes_are_not_a_model_file(tmp_path):
    noise = tmp_path / "noise.npz"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(mc.ModelFileError) as info:
        mc.load_model(noise)
    message = str(info.value)
    assert message.startswith(f"{noise}: not a model file") and "pickle" not in message
    array = tmp_path / "array.npy"  # an .npy array, not an .npz archive
    np.save(array, np.zeros(3))
    with pytest.raises(mc.ModelFileError, match="array.npy: not a model file"):
        mc.load_model(array)


def _rewrite(path, edit):
    """Rewrite the model file ``path`` with ``edit(arrays)`` applied (header as a dict)."""
    arrays = read_npz(path)
    header = json.loads(str(arrays["__model__"]))
    edit(arrays, header)
    arrays["__model__"] = np.array(json.dumps(header))
    np.savez(path, **arrays)


def test_a_header_without_a_spec_key_is_a_model_file_error_naming_the_file(tmp_path, model):
    path = tmp_path / "m.npz"
    mc.save_model(model, path)
    _rewrite(path, lambda arrays, header: header["spec"].pop("width"))
    with pytest.raises(mc.ModelFileError, match=r"m\.npz: the model header lacks 'width'"):
        mc.load_model(path)


def test_weights_holding_nan_are_refused_at_load(tmp_path, model):
    path = tmp_path / "nan.npz"
    mc.save_model(model, path)

    def poison(arrays, header):
        arrays["param/fc1.W"] = arrays["param/fc1.W"].copy()
        arrays["param/fc1.W"][0, 0] = np.nan

    _rewrite(path, poison)
    with pytest.raises(mc.ModelFileError, match=r"nan\.npz: weight 'fc1.W' holds NaN or infinite"):
        mc.load_model(path)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_get_the_mode_the_umask_gives(tmp_path, model, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "history.json", "{}")
        mc.save_model(model, tmp_path / "m.npz")
    finally:
        os.umask(old)
    for name in ("history.json", "m.npz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_stale_temp_files_of_the_atomic_writer_are_found_and_removed(tmp_path):
    stale = tmp_path / ".checkpoint.npz.3f9a0c1b2d4e.tmp"  # what a SIGKILL mid-write leaves
    stale.write_bytes(b"half a checkpoint")
    keep = [tmp_path / "history.json", tmp_path / ".lock", tmp_path / "notes.tmp"]
    for path in keep:
        path.write_text("x")
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert not stale.exists() and all(p.exists() for p in keep)


def test_places_are_checked_before_work_and_never_created(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match="the run folder .*file is a file, not a folder"):
        check_writable_folder(a_file, "run folder")
    with pytest.raises(NotADirectoryError, match="is a file, so no folder can be made below it"):
        check_writable_folder(a_file / "run", "run folder")
    with pytest.raises(IsADirectoryError, match="the --json file .* is a folder"):
        check_writable_file(tmp_path, "--json file")
    check_writable_folder(tmp_path / "new" / "run", "run folder")
    check_writable_file(tmp_path / "new" / "tables.json", "--json file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_checkpoint_step_reads_the_step_and_names_a_model_file_or_a_damaged_one(tmp_path, model):
    from mura_core.nn.optim import SGD
    from mura_core.training.checkpoint import checkpoint_step, save_checkpoint

    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, model, SGD(model.parameters(), 0.1, 0.9), {"step": 7})
    assert checkpoint_step(path) == 7
    mc.save_model(model, tmp_path / "m.npz")
    with pytest.raises(ValueError, match=r"m\.npz is a model file, not a training checkpoint"):
        checkpoint_step(tmp_path / "m.npz")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"checkpoint\.npz: not a readable checkpoint"):
        checkpoint_step(path)
