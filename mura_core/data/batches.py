"""Mini-batches from a cached split: float32 NCHW, standardized, with labels and record indices.

The order of an epoch depends only on (seed, epoch): ``np.random.default_rng([seed, epoch])``
permutes the records. Augmentation draws from ``default_rng([seed, epoch, batch number])``, so
batch b of an epoch is the same whether the epoch ran from its start or was resumed with
``start_batch=b``.
"""
from __future__ import annotations

import math
from typing import Iterator, NamedTuple

import numpy as np
from PIL import Image

MAX_ROTATION_DEGREES = 10.0
MAX_CROP_ZOOM = 1.15  # crop mode: a random square of side size/zoom, resized back to size


class Batch(NamedTuple):
    """x: (B, 1, H, W) float32, standardized. t: (B,) float32, 1 normal / 0 abnormal.
    index: (B,) int64 row numbers in the split (records[index[i]] describes x[i])."""

    x: np.ndarray
    t: np.ndarray
    index: np.ndarray


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Number of batches one epoch of ``n`` records gives."""
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def epoch_order(n: int, *, shuffle: bool, seed: int, epoch: int,
                indices: np.ndarray | None = None) -> np.ndarray:
    """The (n_selected,) int64 record indices of one epoch, in visiting order."""
    order = np.arange(n, dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64).copy()
    if indices is not None and len(order) and (order.min() < 0 or order.max() >= n):
        raise IndexError(f"indices must lie in [0, {n}), got min {order.min()} max {order.max()}")
    if shuffle:
        order = order[np.random.default_rng([seed, epoch]).permutation(len(order))]
    return order


def augment_images(images: np.ndarray, rng: np.random.Generator, mode: str = "pad") -> np.ndarray:
    """Random horizontal flip and rotation of up to +-10 degrees (black fill); in ``crop`` mode
    also a random crop (zoom 1 to 1.15 at a random position). images: (B, H, W) uint8 ->
    (B, H, W) uint8, a new array."""
    out = np.empty_like(images)
    n, height, width = images.shape
    flips = rng.random(n) < 0.5
    angles = np.deg2rad(rng.uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES, n))
    zooms = rng.uniform(1.0, MAX_CROP_ZOOM, n) if mode == "crop" else np.ones(n)
    shifts = rng.uniform(-1.0, 1.0, (n, 2))
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    for i in range(n):
        # Affine map from output pixel to input pixel: rotate and shrink about the centre,
        # then move the centre within the margin that the zoom leaves.
        cos, sin, s = math.cos(angles[i]), math.sin(angles[i]), 1.0 / zooms[i]
        margin_x, margin_y = (width - width * s) / 2.0, (height - height * s) / 2.0
        src_cx, src_cy = cx + shifts[i, 0] * margin_x, cy + shifts[i, 1] * margin_y
        a, b = s * cos, s * sin
        d, e = -s * sin, s * cos
        coeffs = (a, b, src_cx - a * cx - b * cy, d, e, src_cy - d * cx - e * cy)
        img = Image.fromarray(images[i]).transform((width, height), Image.AFFINE, coeffs,
                                                   Image.BILINEAR, fillcolor=0)
        arr = np.asarray(img)
        out[i] = arr[:, ::-1] if flips[i] else arr
    return out


def iterate_batches(
    split,
    batch_size: int,
    *,
    mean: float,
    std: float,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    augment: bool = False,
    drop_last: bool = False,
    indices: np.ndarray | None = None,
    start_batch: int = 0,
) -> Iterator[Batch]:
    """Yield Batch(x, t, index) over a CachedSplit (or anything with ``images`` (N, H, W)
    uint8, ``labels`` (N,) and optionally ``mode``).

    x = (image - mean) / std as float32 (B, 1, H, W); mean and std in pixel units (0..255),
    normally the cache's train statistics. shuffle: permute per (seed, epoch). augment: flip,
    rotation (and random crop in crop mode), for training only. drop_last: drop a final
    partial batch (training); keep it for evaluation. indices: restrict to these rows (e.g. a
    subset), visited in the given order unless shuffled. start_batch: skip the first batches of
    the epoch without reading them (resuming a run mid-epoch gives the same remaining batches).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not std > 0:
        raise ValueError(f"std must be positive, got {std}")
    images, labels = split.images, np.asarray(split.labels, dtype=np.float32)
    order = epoch_order(len(labels), shuffle=shuffle, seed=seed, epoch=epoch, indices=indices)
    total = num_batches(len(order), batch_size, drop_last)
    mode = getattr(split, "mode", "pad")
    shift, scale = np.float32(mean), np.float32(1.0 / std)
    for b in range(start_batch, total):
        index = order[b * batch_size:(b + 1) * batch_size]
        # Sorted reads touch the memory map in file order; then restore the batch order.
        sort = np.argsort(index, kind="stable")
        raw = np.empty((len(index),) + images.shape[1:], dtype=np.uint8)
        raw[sort] = images[index[sort]]
        if augment:
            raw = augment_images(raw, np.random.default_rng([seed, epoch, b]), mode)
        x = raw.astype(np.float32)
        x -= shift
        x *= scale
        yield Batch(x[:, None, :, :], labels[index], index)
