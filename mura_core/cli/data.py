"""``python -m mura_core data synth | index | cache``.

Every option is checked before anything is decoded or written (counts within the generator's
limits, a cache size the networks can use, output folders that can be written), so a refused
command leaves no folder behind."""
from __future__ import annotations

import argparse
import time

from ..data.mura import (
    BODY_PARTS,
    NORMAL,
    SPLITS,
    ImageRecord,
    body_part_name,
    find_mura_root,
    index_source,
    read_split,
)
from ..resources import check_worker_count
from . import command


def split_counts(records: list[ImageRecord]) -> dict:
    """Counts of one split: patients, studies and images (with normal / abnormal), in total and
    per body part."""

    def counts(recs):
        studies = {r.study_key: r.label for r in recs}
        return {
            "patients": len({r.patient_key for r in recs}),
            "studies": len(studies),
            "normal_studies": sum(1 for lab in studies.values() if lab == NORMAL),
            "images": len(recs),
            "normal_images": sum(1 for r in recs if r.label == NORMAL),
        }

    by_part = {part: counts([r for r in records if r.body_part == part]) for part in BODY_PARTS}
    return {"total": counts(records), "parts": by_part}


def format_index(root) -> str:
    """Markdown tables of a MURA folder's counts, shaped like those of docs/mura.md."""
    mura_root = find_mura_root(root)
    stats = {split: split_counts(read_split(mura_root, split)) for split in SPLITS}
    sources = ", ".join(f"{split}: {index_source(mura_root, split)}" for split in SPLITS)
    lines = [f"MURA root: {mura_root} ({sources})", "", "| | train | valid |", "|---|---|---|"]
    tot = {s: stats[s]["total"] for s in SPLITS}
    lines.append("| patients | " + " | ".join(f"{tot[s]['patients']:,}" for s in SPLITS) + " |")
    for what in ("studies", "images"):
        cells = [f"{tot[s][what]:,} ({tot[s]['normal_' + what]:,} normal / "
                 f"{tot[s][what] - tot[s]['normal_' + what]:,} abnormal)" for s in SPLITS]
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    lines += ["", "| body part | train patients | train studies / images | train normal / abnormal images "
              "| valid patients | valid studies / images | valid normal / abnormal images |",
              "|---|---|---|---|---|---|---|"]
    for part in BODY_PARTS:
        cells = []
        for s in SPLITS:
            c = stats[s]["parts"][part]
            cells += [f"{c['patients']:,}", f"{c['studies']:,} / {c['images']:,}",
                      f"{c['normal_images']:,} / {c['images'] - c['normal_images']:,}"]
        lines.append(f"| {body_part_name(part).upper()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _synth(args: argparse.Namespace) -> int:
    from ..data.synthetic import check_synthetic_settings, generate_synthetic

    check_synthetic_settings(args.train, args.valid, args.seed, args.workers,
                             names=("--train", "--valid", "--seed", "--workers"))
    summary = generate_synthetic(args.out, n_train=args.train, n_valid=args.valid, seed=args.seed,
                                 workers=args.workers, overwrite=args.force, progress=not args.no_progress)
    print(f"synthetic MURA written to {summary['root']} in {summary['seconds']:.1f} s "
          f"(seed {summary['seed']})")
    for split in SPLITS:
        c = summary[split]
        print(f"  {split}: {c['images']} images ({c['normal_images']} normal / "
              f"{c['abnormal_images']} abnormal), "
              f"{c['studies']} studies, {c['patients']} patients, {c['rgb_images']} RGB files, "
              f"{c['abnormal_images_without_sign']} abnormal images without a visible sign")
    print(f"  quirks: {len(summary['junk_files'])} '._*' junk files; truncated on purpose: "
          f"{summary['truncated'][0]}")
    return 0


def _index(args: argparse.Namespace) -> int:
    print(format_index(args.root))
    return 0


def check_cache_size(size: int) -> None:
    """ValueError unless ``size`` is an input side some network can take: a cache of smaller
    images could never be trained on, and one of larger ones would not fit (``MAX_INPUT_SIZE``)."""
    from ..nn.models import INPUT_SIZE_REASON, MAX_INPUT_SIZE, smallest_input_size

    if size > MAX_INPUT_SIZE:
        raise ValueError(f"--size {size:,} is too large: {INPUT_SIZE_REASON}; use --size "
                         f"{MAX_INPUT_SIZE} or less (227 in the assignment)")
    smallest = smallest_input_size()
    if size < smallest:
        raise ValueError(f"--size {size} is too small: the networks take images of at least "
                         f"{smallest}x{smallest} pixels (227 in the assignment); use --size "
                         f"{smallest} or more")


def _cache(args: argparse.Namespace) -> int:
    from ..data.batches import iterate_batches
    from ..data.cache import build_cache

    check_cache_size(args.size)
    check_worker_count(args.workers)
    if args.time_epoch < 0:
        raise ValueError("--time-epoch must be a positive batch size (or 0: no timing), "
                         f"got {args.time_epoch}")
    cache = build_cache(args.root, size=args.size, mode=args.mode, cache_dir=args.cache_dir,
                        workers=args.workers, progress=not args.no_progress, rebuild=args.rebuild)
    verb = f"built in {cache.build_seconds:.1f} s ({cache.n_images / cache.build_seconds:.0f} images/s)" \
        if cache.built else "up to date, reused"
    print(f"cache {cache.cache_dir}: {verb}")
    print(f"  {cache.size}x{cache.size} {cache.mode}; train mean {cache.mean:.2f}, "
          f"std {cache.std:.2f} (pixel units)")
    for split in SPLITS:
        s = cache.split(split)
        print(f"  {split}: {len(s)} images, {len(s.skipped)} skipped")
        for path, reason in s.skipped:
            print(f"    skipped {path}: {reason}")
    if args.time_epoch:
        train = cache.split("train")
        start = time.perf_counter()
        n = sum(len(b.index) for b in iterate_batches(train, args.time_epoch, mean=cache.mean, std=cache.std,
                                                       shuffle=True, seed=0, epoch=0))
        plain = time.perf_counter() - start
        start = time.perf_counter()
        for _ in iterate_batches(train, args.time_epoch, mean=cache.mean, std=cache.std,
                                 shuffle=True, seed=0, epoch=0, augment=True):
            pass
        augmented = time.perf_counter() - start
        print(f"  one train epoch through iterate_batches (batch {args.time_epoch}, shuffled): {n} images in "
              f"{plain:.2f} s ({n / plain:.0f} images/s); with augmentation {augmented:.2f} s")
    return 0


def add_commands(subparsers) -> None:
    """Register ``data synth | index | cache`` on the top-level parser's subparsers."""
    data = subparsers.add_parser("data", help="generate, index and cache MURA-layout data",
                                 description="Generate, index and cache MURA-layout data.")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="{synth,index,cache}")

    synth = sub.add_parser("synth",
                           help="write a synthetic data set with MURA v1.1's layout to OUT/MURA-v1.1")
    synth.add_argument("out", help="output folder (MURA-v1.1/ and SYNTHETIC.json are written in it)")
    synth.add_argument("--train", type=int, default=2000, help="train images (default 2000)")
    synth.add_argument("--valid", type=int, default=500, help="valid images (default 500)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    synth.add_argument("--force", action="store_true", help="replace an earlier synthetic set in OUT")
    synth.add_argument("--no-progress", action="store_true")
    synth.set_defaults(func=command(_synth))

    index = sub.add_parser("index", help="print image / study / patient counts per split and body part")
    index.add_argument("root", help="the MURA-v1.1 folder or its parent")
    index.set_defaults(func=command(_index))

    cache = sub.add_parser("cache", help="decode and resize every image once into a memory-mapped cache")
    cache.add_argument("root", help="the MURA-v1.1 folder or its parent")
    cache.add_argument("--size", type=int, default=227, help="square side in pixels (default 227)")
    cache.add_argument("--mode", choices=("pad", "crop"), default="pad")
    cache.add_argument("--cache-dir", default=None,
                       help="cache folder (default: $MURA_CACHE_DIR or ./cache, "
                            "then <name>-<hash>-<size>-<mode>)")
    cache.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    cache.add_argument("--rebuild", action="store_true", help="rebuild even when the cache is up to date")
    cache.add_argument("--no-progress", action="store_true")
    cache.add_argument("--time-epoch", type=int, default=0, metavar="BATCH",
                       help="also time reading one shuffled train epoch in batches of BATCH")
    cache.set_defaults(func=command(_cache))
