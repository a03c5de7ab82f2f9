"""The preprocessed-image cache: contents, reuse, rebuild on change, corrupt files."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data_mura import write_tiny_mura

from mura_core.data import (
    SkippedImageWarning,
    build_cache,
    load_cache,
    preprocess_image,
    read_split,
)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny_mura(tmp_path / "src")


def test_cache_holds_the_preprocessed_images_labels_and_train_statistics(tiny: Path, tmp_path: Path) -> None:
    cache = build_cache(tiny, size=20, mode="pad", cache_dir=tmp_path / "c", progress=False)
    assert cache.built and cache.size == 20 and cache.mode == "pad" and cache.skipped == []
    for split in ("train", "valid"):
        s = cache.split(split)
        assert s.records == read_split(tiny, split)
        assert isinstance(s.images, np.memmap) and s.images.dtype == np.uint8
        assert s.images.shape == (len(s), 20, 20)
        expected = np.stack([preprocess_image(r.path, 20, "pad") for r in s.records])
        np.testing.assert_array_equal(s.images, expected)
        assert s.labels.dtype == np.float32
        np.testing.assert_array_equal(s.labels, [r.label for r in s.records])
        assert list(s.patient_ids) == [r.patient_key for r in s.records]
        assert list(s.study_ids) == [r.study_key for r in s.records]
        assert list(s.body_parts) == [r.body_part for r in s.records]
    train = np.asarray(cache.split("train").images, dtype=np.float64)
    assert cache.mean == pytest.approx(train.mean(), rel=1e-9)
    assert cache.std == pytest.approx(train.std(), rel=1e-9)


def test_cache_is_reused_then_rebuilt_when_a_file_or_the_size_changes(tiny: Path, tmp_path: Path) -> None:
    where = tmp_path / "c"
    first = build_cache(tiny, size=16, cache_dir=where, progress=False)
    again = build_cache(tiny, size=16, cache_dir=where, progress=False)
    assert first.built and not again.built and again.key == first.key
    np.testing.assert_array_equal(again.split("train").images, first.split("train").images)

    target = Path(first.split("train").records[0].path)
    Image.fromarray(np.full((30, 30), 250, np.uint8)).save(target)
    os.utime(target, ns=(10**18, 10**18))
    changed = build_cache(tiny, size=16, cache_dir=where, progress=False)
    assert changed.built and changed.key != first.key
    assert (changed.split("train").images[0] == 250).all()

    resized = build_cache(tiny, size=24, cache_dir=where, progress=False)
    assert resized.built and resized.split("valid").images.shape[1:] == (24, 24)
    assert load_cache(where).size == 24


def test_interrupted_build_is_not_reused(tiny: Path, tmp_path: Path) -> None:
    where = tmp_path / "c"
    build_cache(tiny, size=16, cache_dir=where, progress=False)
    (where / "index.json").unlink()  # what a build killed before its last step leaves
    assert build_cache(tiny, size=16, cache_dir=where, progress=False).built


def test_default_cache_dir_is_under_the_current_directory(tiny: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MURA_CACHE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    cache = build_cache(tiny.parent, size=16, mode="crop", progress=False)
    assert cache.cache_dir.parent == tmp_path / "cache"
    assert cache.cache_dir.name.startswith("src-") and cache.cache_dir.name.endswith("-16-crop")
    assert not build_cache(tiny, size=16, mode="crop", progress=False).built  # same folder, either spelling


def test_corrupt_images_are_skipped_counted_and_listed(tiny: Path, tmp_path: Path) -> None:
    records = read_split(tiny, "train")
    truncated, not_png = Path(records[1].path), Path(records[3].path)
    truncated.write_bytes(truncated.read_bytes()[:60])
    not_png.write_text("not an image")
    with pytest.warns(SkippedImageWarning) as caught:
        cache = build_cache(tiny, size=16, cache_dir=tmp_path / "c", progress=False)
    messages = [str(w.message) for w in caught if w.category is SkippedImageWarning]
    assert sorted(m.split()[1].rstrip(":") for m in messages) == sorted([str(truncated), str(not_png)])
    train = cache.split("train")
    assert len(train) == len(records) - 2 and train.images.shape[0] == len(train) == len(train.labels)
    assert {p for p, _ in train.skipped} == {str(truncated), str(not_png)}
    assert all("cannot be decoded" in reason for _, reason in train.skipped)
    kept = [r for r in records if r.path not in (str(truncated), str(not_png))]
    assert train.records == kept
    np.testing.assert_array_equal(train.images, np.stack([preprocess_image(r.path, 16) for r in kept]))
    index = json.loads((tmp_path / "c" / "index.json").read_text())
    assert index["splits"]["train"]["n_skipped"] == 2
    assert sorted(p for p, _ in index["splits"]["train"]["skipped"]) == sorted([str(truncated), str(not_png)])
    assert not build_cache(tiny, size=16, cache_dir=tmp_path / "c", progress=False).built


def test_missing_listed_file_is_skipped_not_fatal(tiny: Path, tmp_path: Path) -> None:
    gone = Path(read_split(tiny, "valid")[0].path)
    gone.unlink()
    with pytest.warns(SkippedImageWarning):
        cache = build_cache(tiny, size=16, cache_dir=tmp_path / "c", progress=False)
    assert cache.split("valid").skipped == [(str(gone), "file not found")]
