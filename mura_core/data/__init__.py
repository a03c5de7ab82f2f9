"""MURA v1.1 data: index the folder, preprocess and cache the images, iterate over batches,
and generate a synthetic set with the same layout.

Labels everywhere: t = 1 NORMAL, t = 0 ABNORMAL (MURA's own ``positive`` = abnormal = 1).

    records = read_split(root, "train")             # list[ImageRecord], CSV order
    cache = build_cache(root, size=227, mode="pad")  # decodes once, then reuses (key-checked)
    train = cache.split("train")                     # .images (N, 227, 227) uint8 memmap,
                                                     # .labels (N,) float32, .records, ...
    for x, t, index in iterate_batches(train, 32, mean=cache.mean, std=cache.std,
                                       shuffle=True, seed=0, epoch=e, augment=True,
                                       drop_last=True):
        ...                                          # x (B, 1, 227, 227) float32, t (B,) float32
    arr = preprocess_image("new.png", 227)           # (227, 227) uint8, for predict
    generate_synthetic("data/synthetic")             # writes data/synthetic/MURA-v1.1

Where the cache goes: see ``cache.py`` (default ``./cache/<name>-<hash>-<size>-<mode>``, or
under ``$MURA_CACHE_DIR``).
"""
from .batches import Batch, augment_images, epoch_order, iterate_batches, num_batches
from .cache import (
    CachedSplit,
    MuraCache,
    SkippedImageWarning,
    build_cache,
    default_cache_dir,
    load_cache,
)
from .mura import (
    ABNORMAL,
    BODY_PARTS,
    NORMAL,
    SPLITS,
    ImageRecord,
    MuraFormatError,
    body_part_name,
    find_mura_root,
    read_split,
)
from .preprocess import ImageDecodeError, preprocess_image
from .synthetic import generate_synthetic, is_synthetic

__all__ = [
    "ABNORMAL",
    "BODY_PARTS",
    "NORMAL",
    "SPLITS",
    "Batch",
    "CachedSplit",
    "ImageDecodeError",
    "ImageRecord",
    "MuraCache",
    "MuraFormatError",
    "SkippedImageWarning",
    "augment_images",
    "body_part_name",
    "build_cache",
    "default_cache_dir",
    "epoch_order",
    "find_mura_root",
    "generate_synthetic",
    "is_synthetic",
    "iterate_batches",
    "load_cache",
    "num_batches",
    "preprocess_image",
    "read_split",
]
