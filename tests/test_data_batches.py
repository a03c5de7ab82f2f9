"""iterate_batches: shapes, dtypes, standardization, epoch coverage, determinism, resuming."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_data_mura import write_tiny_mura

from mura_core.data import augment_images, build_cache, iterate_batches, num_batches


def fake_split(n: int = 23, size: int = 12, mode: str = "pad") -> SimpleNamespace:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    labels = (rng.random(n) < 0.6).astype(np.float32)
    return SimpleNamespace(images=images, labels=labels, mode=mode)


def test_shapes_dtypes_and_standardization_against_float64_reference() -> None:
    split = fake_split()
    mean, std = 101.5, 37.25
    batches = list(iterate_batches(split, 5, mean=mean, std=std))
    assert [len(b.index) for b in batches] == [5, 5, 5, 5, 3]  # last partial batch kept
    for b in batches:
        assert b.x.dtype == np.float32 and b.x.shape == (len(b.index), 1, 12, 12)
        assert b.t.dtype == np.float32 and b.t.shape == (len(b.index),)
        assert b.index.dtype == np.int64
        reference = (split.images[b.index].astype(np.float64) - mean) / std
        np.testing.assert_allclose(b.x[:, 0], reference, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(b.t, split.labels[b.index])
    np.testing.assert_array_equal(np.concatenate([b.index for b in batches]), np.arange(23))


def test_drop_last_and_num_batches() -> None:
    split = fake_split()
    assert [len(b.index) for b in iterate_batches(split, 5, mean=0, std=1, drop_last=True)] == [5] * 4
    assert num_batches(23, 5) == 5 and num_batches(23, 5, drop_last=True) == 4 and num_batches(20, 5) == 4


def test_shuffled_epoch_visits_every_record_once_in_a_seeded_order() -> None:
    split = fake_split()

    def order(seed, epoch):
        return np.concatenate([b.index for b in iterate_batches(split, 4, mean=0, std=1, shuffle=True,
                                                                 seed=seed, epoch=epoch)])

    first = order(0, 0)
    assert sorted(first) == list(range(23)) and not np.array_equal(first, np.arange(23))
    np.testing.assert_array_equal(first, order(0, 0))
    assert not np.array_equal(first, order(0, 1)) and not np.array_equal(first, order(1, 0))


def test_resuming_with_start_batch_gives_the_rest_of_the_same_epoch() -> None:
    split = fake_split()
    kwargs = dict(mean=100.0, std=50.0, shuffle=True, seed=3, epoch=2, augment=True, drop_last=True)
    full = list(iterate_batches(split, 4, **kwargs))
    resumed = list(iterate_batches(split, 4, start_batch=2, **kwargs))
    assert len(resumed) == len(full) - 2
    for a, b in zip(full[2:], resumed):
        np.testing.assert_array_equal(a.index, b.index)
        np.testing.assert_array_equal(a.x, b.x)


def test_indices_restrict_the_epoch() -> None:
    split = fake_split()
    chosen = np.array([3, 7, 11, 19])
    got = np.concatenate([b.index for b in iterate_batches(split, 3, mean=0, std=1, indices=chosen)])
    np.testing.assert_array_equal(got, chosen)
    shuffled = np.concatenate([b.index for b in iterate_batches(split, 3, mean=0, std=1, indices=chosen,
                                                                  shuffle=True)])
    assert sorted(shuffled) == sorted(chosen)
    with pytest.raises(IndexError):
        next(iterate_batches(split, 3, mean=0, std=1, indices=np.array([23])))


def test_augmentation_flips_and_rotates_deterministically() -> None:
    images = np.zeros((64, 32, 32), np.uint8)
    images[:, 4:28, 2:10] = 200  # a bar on the left
    out = augment_images(images, np.random.default_rng(0))
    again = augment_images(images, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == images.shape
    np.testing.assert_array_equal(out, again)
    left = out[:, :, :16].sum(axis=(1, 2)) > out[:, :, 16:].sum(axis=(1, 2))
    assert 10 < left.sum() < 54  # about half flipped to the right
    assert not np.array_equal(out[left], images[left])  # rotated, not only copied
    cropped = augment_images(images, np.random.default_rng(0), mode="crop")
    assert not np.array_equal(cropped, out)


def test_no_augmentation_by_default_and_evaluation_is_unshuffled() -> None:
    split = fake_split()
    b = next(iterate_batches(split, 23, mean=0.0, std=1.0))
    np.testing.assert_array_equal(b.x[:, 0], split.images.astype(np.float32))


def test_batches_from_a_real_cache(tmp_path: Path) -> None:
    root = write_tiny_mura(tmp_path)
    cache = build_cache(root, size=16, cache_dir=tmp_path / "c", progress=False)
    train = cache.split("train")
    batches = list(iterate_batches(train, 4, mean=cache.mean, std=cache.std, shuffle=True, seed=0))
    x = np.concatenate([b.x for b in batches])
    assert x.dtype == np.float32 and x.shape == (len(train), 1, 16, 16)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-4  # train statistics
    index = np.concatenate([b.index for b in batches])
    np.testing.assert_array_equal(np.concatenate([b.t for b in batches]), train.labels[index])
