"""``python -m mura_core evaluate | predict``: a saved model on a data set or on image files.

    evaluate  --model runs/NAME/best.npz --data ROOT      metric table for train and valid
    predict   MODEL IMAGE...                            one line per image: path, P(normal), label

Exit status (``cli``'s convention): 0 success; 1 some images could not be predicted (each
named on stderr; the others are still predicted); 2 bad input (options, the data folder, a
model file that does not load, a --json file that cannot be written).
"""
from __future__ import annotations

import sys
import time

from ..nn.backend import BACKENDS
from ..resources import check_worker_count
from . import EXIT_FAILED, command


def _evaluate(args) -> int:
    from ..data.cache import build_cache
    from ..data.mura import find_mura_root
    from ..evaluation import metrics
    from ..evaluation.predictions import evaluate
    from ..files import check_writable_file, write_json
    from ..nn.serialization import load_model

    check_batch_size(args.batch_size)
    find_mura_root(args.data)
    check_worker_count(args.workers)
    if args.json:
        check_writable_file(args.json, "--json file")
    model = load_model(args.model, backend=args.backend)
    pre = model.metadata.get("preprocessing")
    size = model.spec["input_size"]
    mode = pre["mode"] if pre else args.mode
    cache = build_cache(args.data, size=size, mode=mode, cache_dir=args.cache_dir,
                        workers=args.workers, progress=not args.no_progress)
    if pre:
        mean, std = float(pre["mean"]), float(pre["std"])
    else:
        mean, std = cache.mean, cache.std
        print(f"note: {args.model} stores no preprocessing; using this data's train mean/std")
    majority = metrics.majority_class(cache.split("train").labels)
    tables = {}
    for name in args.splits:
        split = cache.split(name)
        start = time.perf_counter()
        _, tables[name] = evaluate(model, split, mean, std, args.batch_size, majority=majority)
        print(f"{name}: {len(split)} images scored in {time.perf_counter() - start:.1f} s")
    print(f"model {args.model} ({model.spec['arch']}, {size}x{size} {mode}) on {cache.root}")
    print(metrics.format_metric_table(tables, per_body_part=args.per_body_part))
    if args.json:
        write_json(args.json, {"model": str(args.model), "data": cache.root, **tables},
                   indent=1, allow_nan=False)
        print(f"tables written to {args.json}")
    return 0


def check_batch_size(batch_size: int) -> None:
    """ValueError unless ``--batch-size`` is a whole number of images, at least 1."""
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1 image, got {batch_size}")


def _predict(args) -> int:
    from ..evaluation.metrics import CLASS_NAMES, THRESHOLD
    from ..evaluation.predictions import predict_images
    from ..nn.serialization import load_model

    check_batch_size(args.batch_size)
    model = load_model(args.model, backend=args.backend)
    results = predict_images(model, args.images, args.batch_size)
    failed = 0
    for path, prob, error in results:
        if error is not None:
            failed += 1
            print(f"error: {error}", file=sys.stderr)
            continue
        print(f"{path}\t{prob:.4f}\t{CLASS_NAMES[int(prob >= THRESHOLD)]}")
    if failed:
        print(f"{failed} of {len(results)} files could not be predicted", file=sys.stderr)
    return EXIT_FAILED if failed else 0


def add_commands(subparsers) -> None:
    """Register ``evaluate`` and ``predict``."""
    ev = subparsers.add_parser("evaluate", help="print the metric table of a saved model on train and valid")
    ev.add_argument("--model", required=True, help="a model file, e.g. runs/NAME/best.npz")
    ev.add_argument("--data", required=True, help="the MURA-v1.1 folder or its parent")
    ev.add_argument("--splits", nargs="+", choices=("train", "valid"), default=["train", "valid"])
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--backend", choices=BACKENDS, default="auto")
    ev.add_argument("--mode", choices=("pad", "crop"), default="pad",
                    help="preprocessing when the model file stores none")
    ev.add_argument("--per-body-part", action="store_true", help="also print the metrics per body part")
    ev.add_argument("--json", default=None, help="also write the tables to this JSON file")
    ev.add_argument("--cache-dir", default=None)
    ev.add_argument("--workers", type=int, default=None)
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=command(_evaluate))

    pr = subparsers.add_parser("predict", help="P(normal) for image files with a saved model",
                               description="Prints one tab-separated line per image: path, P(normal), "
                                           "normal|abnormal. Files that cannot be read get an error line on "
                                           "stderr; the others are still predicted; exit status 1 if any "
                                           "failed.")
    pr.add_argument("model", help="a model file saved by train (best.npz, last.npz)")
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files, any size and mode")
    pr.add_argument("--backend", choices=BACKENDS, default="numpy")
    pr.add_argument("--batch-size", type=int, default=32)
    pr.set_defaults(func=command(_predict))
