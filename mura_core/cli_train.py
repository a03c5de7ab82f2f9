"""``python -m mura_core train | evaluate | predict``.

    train     --data ROOT --arch baseline --epochs E [--steps S] --batch-size B --lr L
              --momentum M --out runs/NAME [--backend auto] [--resume] [--size 227]
    evaluate  --model runs/NAME/best.npz --data ROOT      metric table for train and valid
    predict   MODEL IMAGE...                            one line per image: path, P(normal), label

Exit status: 0 success; 1 some images could not be predicted; 2 bad input (settings, files);
3 training diverged; 130 interrupted (a checkpoint was written; ``--resume`` continues).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .models import ARCHITECTURES

def _input_errors():
    """Errors that mean bad input: printed as one line, exit status 2, no traceback."""
    from .checkpoint import ModelFileError
    from .data.mura import MuraFormatError

    return (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, ModelFileError,
            MuraFormatError)


def _fail(message: str, status: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def _config_from_args(args):
    from .train import TrainConfig

    return TrainConfig(
        epochs=args.epochs, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
        lr_gamma=args.lr_gamma, lr_step_size=args.lr_step_size, plateau_patience=args.plateau_patience,
        eval_every=args.eval_every, train_eval_size=args.train_eval_size or None,
        eval_batch_size=args.eval_batch_size, checkpoint_every=args.checkpoint_every,
        out_dir=args.out, seed=args.seed, augment=args.augment, progress=not args.no_progress,
        resume=args.resume, overwrite=args.overwrite)


def _train(args) -> int:
    from . import metrics
    from .backend import resolve_backend
    from .data.cache import build_cache
    from .data.mura import find_mura_root
    from .models import build_model
    from .train import TrainingDiverged, Trainer

    try:
        # Every setting is checked before the (slow) cache build and model construction.
        config = _config_from_args(args)
        config.validate()
        find_mura_root(args.data)
        try:
            backend = resolve_backend(args.backend)
        except RuntimeError as exc:  # cupy asked for where it cannot run
            return _fail(str(exc))
        model = build_model(args.arch, input_size=args.size, seed=args.model_seed if args.model_seed is not None
                            else args.seed, backend=backend, width=args.width, dropout=args.dropout)
        cache = build_cache(args.data, size=args.size, mode=args.mode, cache_dir=args.cache_dir,
                            workers=args.workers, progress=not args.no_progress)
        trainer = Trainer(model, cache, config)
        ckpt = Path(args.out) / "checkpoint.npz"
        if args.resume and not ckpt.exists():
            print(f"no checkpoint in {args.out}: starting from step 0")
        print(f"training {args.arch} ({model.num_parameters():,} parameters, {backend}) on "
              f"{len(cache.split('train'))} train / {len(cache.split('valid'))} valid images "
              f"({cache.size}x{cache.size} {cache.mode}) for {trainer.total_steps} steps "
              f"({trainer.steps_per_epoch} per epoch), batch {config.batch_size}, lr {config.lr:g}, "
              f"momentum {config.momentum:g}; output in {args.out}")
        start = time.perf_counter()
        result = trainer.run()
    except KeyboardInterrupt:
        print(f"interrupted; continue with the same command and --resume (checkpoint: {args.out}/checkpoint.npz)",
              file=sys.stderr)
        return 130
    except TrainingDiverged as exc:
        return _fail(str(exc), 3)
    except _input_errors() as exc:
        return _fail(str(exc))
    h = result.history
    last = h["evals"][-1]
    per_step = h["timing"]["time_per_step_s"]
    print(f"done: {h['step']} steps ({h['epoch']:.2f} epochs) in {time.perf_counter() - start:.1f} s this session"
          f"{f', {per_step:.3f} s per step' if per_step else ''}")
    print(f"metrics at step {last['step']} (train: {h['data']['train_eval_images']} images of "
          f"{h['data']['train_eval_patients']} patients drawn from train):")
    print(metrics.format_metric_table({"train": last["train"], "valid": last["valid"]}))
    best = h["best"]
    if best is not None:
        print(f"best valid accuracy per image {100 * best['valid_image_accuracy']:.1f} % at step {best['step']}: "
              f"{result.best_path}")
    print(f"last model: {result.last_path}; history: {Path(args.out) / 'history.json'}")
    return 0


def _evaluate(args) -> int:
    from . import metrics
    from .checkpoint import load_model
    from .data.cache import build_cache
    from .data.mura import find_mura_root
    from .train import evaluate

    try:
        find_mura_root(args.data)
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
    except _input_errors() as exc:
        return _fail(str(exc))
    print(f"model {args.model} ({model.spec['arch']}, {size}x{size} {mode}) on {cache.root}")
    print(metrics.format_metric_table(tables, per_body_part=args.per_body_part))
    if args.json:
        from .checkpoint import atomic_write_text

        atomic_write_text(args.json, json.dumps({"model": str(args.model), "data": cache.root, **tables},
                                                indent=1, allow_nan=False))
        print(f"tables written to {args.json}")
    return 0


def predict_images(model, paths, batch_size: int = 32):
    """P(normal) for image files, preprocessed exactly as in training (the size, mode, mean and
    std stored in ``model.metadata["preprocessing"]``).

    Returns a list of ``(path, probability or None, error message or None)`` in input order; a
    file that is missing or not an image gets its error and the others are still predicted.
    """
    from .data.batches import iterate_batches
    from .data.preprocess import ImageDecodeError, preprocess_image

    pre = model.metadata.get("preprocessing")
    if not pre:
        raise ValueError("the model file stores no preprocessing (size, mode, mean, std); "
                         "use a model saved by `python -m mura_core train` (best.npz or last.npz)")
    size, mode = int(pre["size"]), pre["mode"]
    results, good, arrays = [], [], []
    for path in paths:
        try:
            if Path(path).is_dir():
                raise IsADirectoryError(f"{path}: is a folder, not an image file")
            arrays.append(preprocess_image(path, size, mode))
            good.append(len(results))
            results.append((str(path), None, None))
        except FileNotFoundError:
            results.append((str(path), None, f"{path}: no such file"))
        except (ImageDecodeError, OSError) as exc:
            results.append((str(path), None, str(exc)))
    if arrays:
        # The training batch iterator does the standardization, so it is the same arithmetic.
        batch_source = SimpleNamespace(images=np.stack(arrays), labels=np.zeros(len(arrays), np.float32), mode=mode)
        probs = np.concatenate([
            model.predict_proba(b.x, batch_size=batch_size)
            for b in iterate_batches(batch_source, batch_size, mean=float(pre["mean"]), std=float(pre["std"]))
        ])
        for row, p in zip(good, probs):
            results[row] = (results[row][0], float(p), None)
    return results


def _predict(args) -> int:
    from .checkpoint import load_model
    from .metrics import CLASS_NAMES, THRESHOLD

    try:
        model = load_model(args.model, backend=args.backend)
        results = predict_images(model, args.images, args.batch_size)
    except _input_errors() as exc:
        return _fail(str(exc))
    failed = 0
    for path, prob, error in results:
        if error is not None:
            failed += 1
            print(f"error: {error}", file=sys.stderr)
            continue
        print(f"{path}\t{prob:.4f}\t{CLASS_NAMES[int(prob >= THRESHOLD)]}")
    if failed:
        print(f"{failed} of {len(results)} files could not be predicted", file=sys.stderr)
    return 1 if failed else 0


def add_commands(subparsers) -> None:
    """Register ``train``, ``evaluate`` and ``predict``."""
    tr = subparsers.add_parser("train", help="train a network on a MURA folder (real or synthetic)",
                               description="Train with BCE and SGD; checkpoints, history.json, best.npz and "
                                           "last.npz go to --out. Ctrl+C writes a checkpoint; --resume continues.")
    tr.add_argument("--data", required=True, help="the MURA-v1.1 folder or its parent")
    tr.add_argument("--arch", choices=sorted(ARCHITECTURES), default="baseline")
    tr.add_argument("--epochs", type=int, default=1, help="passes over train (default 1)")
    tr.add_argument("--steps", type=int, default=None, help="total SGD steps (overrides --epochs)")
    tr.add_argument("--batch-size", type=int, default=32)
    tr.add_argument("--lr", type=float, default=0.002, help="learning rate (default 0.002)")
    tr.add_argument("--momentum", type=float, default=0.9)
    tr.add_argument("--weight-decay", type=float, default=0.0)
    tr.add_argument("--schedule", choices=("none", "step", "plateau"), default="none",
                    help="step: lr x gamma every --lr-step-size steps (default one epoch); plateau: lr x gamma "
                         "when valid accuracy stalls for more than --plateau-patience evaluations")
    tr.add_argument("--lr-gamma", type=float, default=0.1)
    tr.add_argument("--lr-step-size", type=int, default=None)
    tr.add_argument("--plateau-patience", type=int, default=2)
    tr.add_argument("--out", required=True, help="run folder, e.g. runs/baseline")
    tr.add_argument("--backend", choices=("numpy", "cupy", "auto"), default="auto")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    tr.add_argument("--overwrite", action="store_true", help="start afresh even though --out holds a run")
    tr.add_argument("--size", type=int, default=227, help="input side in pixels (default 227)")
    tr.add_argument("--mode", choices=("pad", "crop"), default="pad", help="preprocessing (default pad)")
    tr.add_argument("--width", type=float, default=None, help="feature-map multiplier (default: the architecture's)")
    tr.add_argument("--dropout", type=float, default=0.5)
    tr.add_argument("--seed", type=int, default=0, help="data order, augmentation, eval subset (and weights)")
    tr.add_argument("--model-seed", type=int, default=None, help="initial weights (default: --seed)")
    tr.add_argument("--augment", action="store_true", help="random flips and rotations in training")
    tr.add_argument("--eval-every", type=int, default=None, help="also evaluate every N steps")
    tr.add_argument("--train-eval-size", type=int, default=2000,
                    help="train images (whole patients) scored at each evaluation; 0 = all (default 2000)")
    tr.add_argument("--eval-batch-size", type=int, default=64)
    tr.add_argument("--checkpoint-every", type=int, default=None, help="also checkpoint every N steps")
    tr.add_argument("--cache-dir", default=None, help="preprocessed-image cache folder (default: see data cache)")
    tr.add_argument("--workers", type=int, default=None, help="processes for the cache build")
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=_train)

    ev = subparsers.add_parser("evaluate", help="print the metric table of a saved model on train and valid")
    ev.add_argument("--model", required=True, help="a model file, e.g. runs/NAME/best.npz")
    ev.add_argument("--data", required=True, help="the MURA-v1.1 folder or its parent")
    ev.add_argument("--splits", nargs="+", choices=("train", "valid"), default=["train", "valid"])
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--backend", choices=("numpy", "cupy", "auto"), default="auto")
    ev.add_argument("--mode", choices=("pad", "crop"), default="pad",
                    help="preprocessing when the model file stores none")
    ev.add_argument("--per-body-part", action="store_true", help="also print the metrics per body part")
    ev.add_argument("--json", default=None, help="also write the tables to this JSON file")
    ev.add_argument("--cache-dir", default=None)
    ev.add_argument("--workers", type=int, default=None)
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=_evaluate)

    pr = subparsers.add_parser("predict", help="P(normal) for image files with a saved model",
                               description="Prints one tab-separated line per image: path, P(normal), "
                                           "normal|abnormal. Files that cannot be read get an error line on "
                                           "stderr; the others are still predicted; exit status 1 if any failed.")
    pr.add_argument("model", help="a model file saved by train (best.npz, last.npz)")
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files, any size and mode")
    pr.add_argument("--backend", choices=("numpy", "cupy", "auto"), default="numpy")
    pr.add_argument("--batch-size", type=int, default=32)
    pr.set_defaults(func=_predict)
