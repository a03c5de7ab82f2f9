"""Picking images to show: a few of each class from several body parts, and a small batch
for the gradient check."""
from __future__ import annotations

import numpy as np


def pick_samples(split, per_class: int, seed: int = 0) -> np.ndarray:
    """Row indices of ``per_class`` normal and ``per_class`` abnormal images of a cached split,
    each from a different body part where possible (normal ones first)."""
    rng = np.random.default_rng([seed, 11])
    labels = np.asarray(split.labels)
    chosen = []
    for label in (1, 0):
        rows = rng.permutation(np.flatnonzero(labels == label))
        seen, picked = set(), []
        for row in rows:  # first pass: one per body part
            if split.body_parts[row] not in seen:
                seen.add(split.body_parts[row])
                picked.append(int(row))
            if len(picked) == per_class:
                break
        for row in rows:  # then fill up
            if len(picked) == per_class:
                break
            if int(row) not in picked:
                picked.append(int(row))
        chosen += picked
    return np.array(chosen, dtype=np.int64)


def gradcheck_batch(cache, size: int, n: int = 2, seed: int = 0):
    """``n`` train images (normal and abnormal alternating), resized to ``size`` and
    standardized, as float64 ``(n, 1, size, size)``, with their float64 labels ``(n,)``."""
    from PIL import Image

    split = cache.split("train")
    rows = pick_samples(split, max(1, (n + 1) // 2), seed)[:n]
    small = [np.asarray(Image.fromarray(np.asarray(split.images[i])).resize((size, size),
                                                                            Image.BILINEAR))
             for i in rows]
    x = (np.stack(small).astype(np.float64) - cache.mean) / cache.std
    return x[:, None], np.asarray(split.labels[rows], dtype=np.float64)
