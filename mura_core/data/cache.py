"""Preprocessed-image cache: every image decoded and resized once, then read memory-mapped.

Layout of a cache folder::

    index.json           key, settings, records, skipped files, train mean/std, build time
    train_images.npy     (N_train, size, size) uint8, opened with mmap_mode="r"
    valid_images.npy     (N_valid, size, size) uint8

Where it goes: ``cache_dir`` when given; otherwise ``$MURA_CACHE_DIR`` (or ``./cache`` in the
current directory when that variable is unset) / ``<root folder name>-<hash of its absolute
path>-<size>-<mode>``. The source folder is only read, so a read-only MURA copy works.

The key is a SHA-256 over the cache format version, the absolute source folder, the size and
mode, and every record (path, label, body part, patient, study) with its file size and mtime.
An existing cache is used only when its key matches; otherwise it is rebuilt in place. A
build decodes into temp files (``.NAME.build.tmp``) and leaves the previous cache untouched
until every image is in; then it removes the old index, moves the new arrays into place and
writes the new index last (atomically), so an interrupted build is never mistaken for a
finished one, and a build stopped by a signal, a full disk or a dead worker leaves the
previous cache as it was. A build holds the folder's lock (``locks``): a second process that
needs the same cache waits for it, then reuses it. Its folder is checked for writability and
for the disk space the build writes (every array plus a copy of the largest, for dropping
skipped rows) before any image is decoded, and the temp files' space is reserved on disk
before any is written (a write through a memory map onto a full disk would kill the process
with SIGBUS). An up-to-date cache is read without writing, so a read-only shared cache works.

Workers (``workers`` > 1, ``data.processes``): forked processes that write their rows straight
into the memory-mapped temp files. A worker that dies (killed, out of memory) fails the build
with ``CacheBuildError`` instead of leaving the pool waiting; on SIGTERM or Ctrl+C the workers
are killed at once and the temp files removed.

A file that cannot be decoded (truncated, not an image, missing) is skipped with a warning,
counted, and listed in ``index.json``; it never stops the build, unless no image of a split
can be decoded: then the build fails, naming the split and its first failure, and leaves
nothing behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..files import (
    DiskFull,
    atomic_write_text,
    check_free_space,
    check_writable_folder,
    free_space,
    is_disk_full,
    remove_stale_temp_files,
    reserve_space,
)
from ..formatting import data_size
from ..locks import hold_folder
from ..nn.models import INPUT_SIZE_REASON, MAX_INPUT_SIZE
from ..nn.serialization import TEMP_PREFIX, TEMP_SUFFIX
from ..resources import check_worker_count
from .mura import SPLITS, ImageRecord, find_mura_root, read_split
from .preprocess import MODES, preprocess_image
from .processes import map_in_processes

CACHE_VERSION = 1
INDEX_NAME = "index.json"
_MAX_WARNINGS = 20


class SkippedImageWarning(UserWarning):
    """An image was left out of the cache because it could not be decoded."""


class CacheBuildError(RuntimeError):
    """A cache build that could not finish (a worker process died); the cache folder is left
    as it was. The message says what to do."""


@dataclass
class CachedSplit:
    """One split of a cache.

    images: (N, size, size) uint8, memory-mapped read-only. labels: (N,) float32, 1 normal /
    0 abnormal. records: list of N ImageRecord, row i describes images[i]. patient_ids,
    study_ids, body_parts: (N,) str arrays for grouping (``np.unique`` works on them);
    patient_ids / study_ids hold ImageRecord.patient_key / study_key. skipped: (path, reason)
    of the files left out. size, mode: the preprocessing settings.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    records: list[ImageRecord]
    skipped: list[tuple[str, str]]
    size: int
    mode: str
    patient_ids: np.ndarray = field(init=False)
    study_ids: np.ndarray = field(init=False)
    body_parts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.patient_ids = np.array([r.patient_key for r in self.records], dtype=str)
        self.study_ids = np.array([r.study_key for r in self.records], dtype=str)
        self.body_parts = np.array([r.body_part for r in self.records], dtype=str)

    def __len__(self) -> int:
        return len(self.records)


@dataclass
class MuraCache:
    """A built (or reused) cache: ``split("train" | "valid") -> CachedSplit``.

    mean, std: float, train split pixel statistics in 0..255 units (padding included, as the
    network sees it). built: True when this call decoded the images, False when it reused them.
    """

    cache_dir: Path
    root: str
    size: int
    mode: str
    mean: float
    std: float
    key: str
    splits: dict[str, CachedSplit]
    built: bool
    build_seconds: float

    def split(self, name: str) -> CachedSplit:
        if name not in self.splits:
            raise KeyError(f"no split {name!r} in the cache at {self.cache_dir}; have {sorted(self.splits)}")
        return self.splits[name]

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of every file left out, all splits."""
        return [item for s in self.splits.values() for item in s.skipped]

    @property
    def n_images(self) -> int:
        return sum(len(s) for s in self.splits.values())


def default_cache_dir(root: str | os.PathLike, size: int, mode: str) -> Path:
    """``$MURA_CACHE_DIR`` or ``./cache``, then ``<root name>-<path hash>-<size>-<mode>``."""
    mura_root = find_mura_root(root)
    base = Path(os.environ.get("MURA_CACHE_DIR") or "cache")
    tag = hashlib.sha256(str(mura_root).encode()).hexdigest()[:8]
    inside = mura_root.name == "MURA-v1.1" and mura_root.parent.name
    name = mura_root.parent.name if inside else mura_root.name
    return Path(os.path.abspath(base / f"{name}-{tag}-{size}-{mode}"))


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


def compute_key(root: Path, size: int, mode: str, records: dict[str, list[ImageRecord]]) -> str:
    """SHA-256 hex digest over the settings and every record with its file size and mtime."""
    h = hashlib.sha256()
    h.update(json.dumps({"version": CACHE_VERSION, "root": str(root), "size": size, "mode": mode}).encode())
    for split in SPLITS:
        for r in records[split]:
            nbytes, mtime = _stat(r.path)
            h.update(f"\n{r.split}|{r.path}|{r.label}|{r.body_part}|{r.patient}|{r.study}|{nbytes}|{mtime}".encode())
    return h.hexdigest()


# -- worker side: each process opens the output files once and writes its rows directly -------

_worker_out: dict[str, np.ndarray] = {}
_worker_settings: tuple[int, str] = (0, "pad")


def _init_worker(paths: dict[str, str], size: int, mode: str) -> None:
    global _worker_settings
    _worker_out.clear()
    for split, path in paths.items():
        _worker_out[split] = np.load(path, mmap_mode="r+")
    _worker_settings = (size, mode)


def _process_one(task: tuple[str, int, str]) -> tuple[str, int, str | None, np.ndarray | None]:
    """(split, row, path) -> (split, row, reason it was skipped or None, 256-bin histogram)."""
    split, row, path = task
    size, mode = _worker_settings
    try:
        arr = preprocess_image(path, size, mode)
    except FileNotFoundError:
        return split, row, "file not found", None
    except Exception as exc:  # a corrupt file must never stop the build
        reason = str(exc).removeprefix(f"{path}: ")
        return split, row, reason, None
    _worker_out[split][row] = arr
    return split, row, None, np.bincount(arr.ravel(), minlength=256)


def _run_tasks(tasks, tmp_paths, size, mode, workers, progress, desc):
    """Yield (split, row, reason, histogram) for every task, with a progress bar."""
    try:
        yield from map_in_processes(_process_one, tasks, workers, initializer=_init_worker,
                                    initargs=(tmp_paths, size, mode), progress=progress,
                                    desc=desc)
    finally:
        _worker_out.clear()  # the memory maps of an inline build


def _new_image_file(path, shape: tuple[int, ...]):
    """A uint8 .npy of ``shape`` at ``path``, its blocks reserved on disk
    (``files.reserve_space``); the array, memory-mapped for writing."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    reserve_space(path, "cache folder", Path(path).parent, "the cache folder is as it was: "
                  "free some space, or choose another --cache-dir")
    return array


def _compact(tmp: Path, keep: np.ndarray) -> Path:
    """The built array ``tmp`` without the rows of skipped files: ``tmp`` itself when every
    row is kept, else a copy beside it (``tmp`` is removed)."""
    if keep.all():
        return tmp
    src = np.load(tmp, mmap_mode="r")
    kept_rows = np.flatnonzero(keep)
    part = tmp.with_name(tmp.name.removesuffix(".build" + TEMP_SUFFIX) + ".part" + TEMP_SUFFIX)
    dst = _new_image_file(part, (len(kept_rows),) + src.shape[1:])
    for start in range(0, len(kept_rows), 1024):
        rows = kept_rows[start:start + 1024]
        dst[start:start + len(rows)] = src[rows]
    dst.flush()
    del dst, src
    os.remove(tmp)
    return part


def space_needed(records: dict[str, list[ImageRecord]], size: int) -> int:
    """Bytes of disk a build of ``records`` at ``size`` writes at its peak: every split's
    array, and a copy of the largest (dropping the rows of skipped files)."""
    arrays = [len(records[split]) * size * size for split in SPLITS]
    return sum(arrays) + max(arrays) + 4096


def _decode_all(mura_root: Path, size: int, mode: str, records: dict[str, list[ImageRecord]],
                tmp_paths: dict[str, str], workers, progress):
    """Decode every record into the arrays ``tmp_paths`` (created here); (keep: split -> (N,)
    bool, reasons: split -> {row: why it was skipped}, histogram of the train pixels).
    ValueError when no image of a split can be decoded."""
    for split in SPLITS:
        _new_image_file(tmp_paths[split], (len(records[split]), size, size)).flush()
    tasks = [(split, row, r.path) for split in SPLITS for row, r in enumerate(records[split])]
    keep = {split: np.ones(len(records[split]), dtype=bool) for split in SPLITS}
    reasons: dict[str, dict[int, str]] = {split: {} for split in SPLITS}
    histogram = np.zeros(256, dtype=np.int64)
    desc = f"caching {mura_root.name} {size}px {mode}"
    for split, row, reason, hist in _run_tasks(tasks, tmp_paths, size, mode, workers, progress, desc):
        if reason is not None:
            keep[split][row] = False
            reasons[split][row] = reason
        elif split == "train":
            histogram += hist
    for split in SPLITS:
        if not keep[split].any():
            first = min(reasons[split])
            raise ValueError(
                f"{mura_root}: none of the {len(records[split])} {split} images could be decoded "
                f"(the first, {records[split][first].path}: {reasons[split][first]}); check that "
                "the folder holds the images its CSV files list")
    return keep, reasons, histogram


def _load(cache_dir: Path, index: dict, built: bool) -> MuraCache:
    size, mode = int(index["size"]), index["mode"]
    splits = {}
    for name, info in index["splits"].items():
        cols = info["records"]
        records = [
            ImageRecord(p, int(lab), bp, pat, st, name)
            for p, lab, bp, pat, st in zip(cols["path"], cols["label"], cols["body_part"],
                                           cols["patient"], cols["study"])
        ]
        images = np.load(cache_dir / f"{name}_images.npy", mmap_mode="r")
        if images.shape != (len(records), size, size) or images.dtype != np.uint8:
            raise ValueError(f"{cache_dir / f'{name}_images.npy'}: shape {images.shape} "
                             "does not match its index")
        labels = np.array([r.label for r in records], dtype=np.float32)
        skipped = [(p, reason) for p, reason in info["skipped"]]
        splits[name] = CachedSplit(name, images, labels, records, skipped, size, mode)
    return MuraCache(cache_dir, index["root"], size, mode, float(index["mean"]), float(index["std"]),
                     index["key"], splits, built, float(index.get("build_seconds", 0.0)))


def load_cache(cache_dir: str | os.PathLike) -> MuraCache:
    """Open an existing cache folder without re-checking its source files (for read-only use
    when the source is gone). ``build_cache`` is the safe entry point: it checks the key."""
    cache_dir = Path(cache_dir)
    index_path = cache_dir / INDEX_NAME
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path} not found: build the cache with "
                                "python -m mura_core data cache ROOT")
    with open(index_path) as fh:
        return _load(cache_dir, json.load(fh), built=False)


def _reusable(cache_dir: Path, key: str) -> MuraCache | None:
    index_path = cache_dir / INDEX_NAME
    if not index_path.is_file():
        return None
    try:
        with open(index_path) as fh:
            index = json.load(fh)
        if index.get("version") != CACHE_VERSION or index.get("key") != key:
            return None
        return _load(cache_dir, index, built=False)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # damaged cache: rebuild it


def build_cache(
    root: str | os.PathLike,
    size: int = 227,
    mode: str = "pad",
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
    rebuild: bool = False,
) -> MuraCache:
    """Decode, preprocess and store both splits of the MURA folder ``root``; reuse a cache
    whose key matches.

    size: output side in pixels; mode: ``"pad"`` or ``"crop"`` (see preprocess.py).
    cache_dir: where to write (default: see the module docstring). workers: processes
    (default: the CPUs this process may use). progress: show a tqdm bar. rebuild: ignore an
    existing cache. Returns a MuraCache whose splits hold (N, size, size) uint8 memmaps.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"the image size must be a positive whole number of pixels, got {size!r}")
    if size > MAX_INPUT_SIZE:
        raise ValueError(f"image size {size:,} is too large: {INPUT_SIZE_REASON}")
    check_worker_count(workers)
    size = int(size)
    mura_root = find_mura_root(root)
    records = {split: read_split(mura_root, split) for split in SPLITS}
    key = compute_key(mura_root, size, mode, records)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(mura_root, size, mode)
    if not rebuild:
        cached = _reusable(cache_dir, key)
        if cached is not None:
            return cached
    check_writable_folder(cache_dir, "cache folder")
    check_free_space(cache_dir, space_needed(records, size), "cache folder",
                     "free some space, or choose another --cache-dir (or $MURA_CACHE_DIR) or a "
                     "smaller --size")
    with hold_folder(cache_dir, "cache folder", wait=True):
        # Whoever held the lock before may just have built this very cache.
        cached = None if rebuild else _reusable(cache_dir, key)
        if cached is not None:
            return cached
        remove_stale_temp_files(cache_dir)
        return _build(cache_dir, mura_root, size, mode, key, records, workers, progress)


def _build(cache_dir: Path, mura_root: Path, size: int, mode: str, key: str,
           records: dict[str, list[ImageRecord]], workers, progress) -> MuraCache:
    """Decode every record into ``cache_dir`` (locked by the caller); the cache."""
    start = time.perf_counter()
    tmp_paths = {split: str(cache_dir / f"{TEMP_PREFIX}{split}_images.npy.build{TEMP_SUFFIX}")
                 for split in SPLITS}
    try:
        keep, reasons, histogram = _decode_all(mura_root, size, mode, records, tmp_paths,
                                               workers, progress)
        built = {split: _compact(Path(tmp_paths[split]), keep[split]) for split in SPLITS}
    except BaseException as exc:
        # Nothing half-built stays behind, and the previous cache, untouched, stays usable.
        remove_stale_temp_files(cache_dir)
        if isinstance(exc, BrokenProcessPool):
            raise CacheBuildError(
                f"a worker process of the cache build for {cache_dir} died (killed, or out of "
                "memory); the cache folder is as it was: run the command again, with fewer "
                "--workers if memory is short") from None
        if is_disk_full(exc) and not isinstance(exc, DiskFull):
            raise DiskFull(f"the disk of the cache folder {cache_dir} filled up during the "
                           f"build ({data_size(free_space(cache_dir))} free); the cache folder is "
                           "as it was: free some space, or choose another --cache-dir") from None
        raise

    # From here on the old cache goes: its index first, so that no reader takes the old
    # index for the new arrays.
    (cache_dir / INDEX_NAME).unlink(missing_ok=True)
    skipped_all = []
    for split in SPLITS:
        os.replace(built[split], cache_dir / f"{split}_images.npy")
        skipped_all += [(records[split][row].path, reasons[split][row]) for row in sorted(reasons[split])]
    for path, reason in skipped_all[:_MAX_WARNINGS]:
        warnings.warn(f"skipped {path}: {reason}", SkippedImageWarning, stacklevel=3)
    if len(skipped_all) > _MAX_WARNINGS:
        warnings.warn(f"... and {len(skipped_all) - _MAX_WARNINGS} more skipped images, all listed in "
                      f"{cache_dir / INDEX_NAME}", SkippedImageWarning, stacklevel=3)

    values = np.arange(256, dtype=np.float64)
    count = histogram.sum()
    mean = float((histogram * values).sum() / count)
    std = float(np.sqrt(max((histogram * (values - mean) ** 2).sum() / count, 1e-12)))
    build_seconds = time.perf_counter() - start
    index = {
        "version": CACHE_VERSION,
        "key": key,
        "root": str(mura_root),
        "size": size,
        "mode": mode,
        "mean": mean,
        "std": std,
        "build_seconds": build_seconds,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "splits": {},
    }
    for split in SPLITS:
        kept = [r for r, k in zip(records[split], keep[split]) if k]
        index["splits"][split] = {
            "n_images": len(kept),
            "n_skipped": int((~keep[split]).sum()),
            "skipped": [[records[split][row].path, reasons[split][row]] for row in sorted(reasons[split])],
            "records": {
                "path": [r.path for r in kept],
                "label": [r.label for r in kept],
                "body_part": [r.body_part for r in kept],
                "patient": [r.patient for r in kept],
                "study": [r.study for r in kept],
            },
        }
    try:
        atomic_write_text(cache_dir / INDEX_NAME, json.dumps(index))
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFull(f"the disk of the cache folder {cache_dir} filled up as the build wrote "
                       f"its {INDEX_NAME}, so the cache there will be built again next time: "
                       "free some space, or choose another --cache-dir") from None
    return _load(cache_dir, index, built=True)
