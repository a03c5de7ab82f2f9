"""``python -m mura_core train --data ROOT --out runs/NAME [--arch baseline] [--steps S] ...``
(every option of TrainConfig, with its default and help; see ``train --help``).

Exit status (``cli``'s convention): 0 success; 1 a failed run (training diverged); 2 bad input
(settings, files, a run folder in use or holding another run, a place that cannot be written, a
model file whose weights are not finite); 130 / 143 stopped by Ctrl+C / SIGTERM (a checkpoint
was written when a step had run; ``--resume`` continues).

``train`` checks, before the cache build: every setting, the data folder, that ``--out`` can
be written, takes its lock (a second ``train`` on it is refused naming the first), and that
``--out`` is empty, resumable or to be overwritten (``train.check_run_folder``).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..nn.backend import BACKENDS
from ..nn.models import ARCHITECTURES
from ..resources import check_worker_count
from . import CommandFailed, add_config_options, command, config_from_args
from .data import check_cache_size


def _train(args) -> int:
    from ..data.mura import find_mura_root
    from ..files import check_free_space, check_writable_folder
    from ..locks import hold_folder
    from ..nn.backend import resolve_backend
    from ..nn.models import build_model
    from ..signals import exit_status
    from ..training import TrainConfig, TrainingDiverged
    from ..training.config import check_seed
    from ..training.runfolder import CHECKPOINT_NAME, run_disk_bytes

    # Every setting and place is checked before the (slow) cache build.
    config = config_from_args(TrainConfig, args)
    config.validate()
    if args.model_seed is not None:
        check_seed(args.model_seed, "--model-seed")
    find_mura_root(args.data)
    check_cache_size(args.size)
    check_worker_count(args.workers)
    backend = resolve_backend(args.backend)  # BackendUnavailable: one line, exit 2
    check_memory(args, config, backend)
    model = build_model(args.arch, input_size=args.size,
                        seed=args.model_seed if args.model_seed is not None else args.seed,
                        backend=backend, width=args.width, dropout=args.dropout)
    out = Path(config.out_dir)
    check_writable_folder(out, "run folder")
    check_free_space(out, run_disk_bytes(model), "run folder",
                     "free some space or choose another --out")
    try:
        # The trainer takes this lock again for the run; holding it from here on keeps a
        # second process out during the cache build too.
        with hold_folder(out, "run folder"):
            result, seconds = _train_in(out, args, config, model, backend)
    except KeyboardInterrupt as exc:
        if (out / CHECKPOINT_NAME).exists():
            print(f"interrupted; continue with the same command and --resume (checkpoint: "
                  f"{out / CHECKPOINT_NAME})", file=sys.stderr)
        else:
            print("interrupted before the first checkpoint; nothing to resume: run the same "
                  "command again to start", file=sys.stderr)
        return exit_status(exc)
    except TrainingDiverged as exc:
        raise CommandFailed(str(exc)) from None
    _print_result(result, seconds, config)
    return 0


def check_memory(args, config, backend: str) -> None:
    """ValueError when even the least memory a step or an evaluation batch takes
    (``models.memory_bytes``) is more than this machine (on CuPy: the GPU) has available;
    before the model is built or any image decoded."""
    from ..formatting import data_size
    from ..nn.backend import device_memory_free
    from ..nn.models import memory_bytes
    from ..resources import available_memory

    step = memory_bytes(args.arch, args.size, config.batch_size, args.width)
    evaluation = memory_bytes(args.arch, args.size, config.eval_batch_size, args.width,
                              training=False)
    available = device_memory_free(backend) if backend == "cupy" else available_memory()
    if available is not None and max(step, evaluation) > available:
        where = "the GPU has" if backend == "cupy" else "this machine has"
        what, option, batch = (("a training step", "--batch-size", config.batch_size)
                               if step >= evaluation else
                               ("an evaluation batch", "--eval-batch-size", config.eval_batch_size))
        raise ValueError(
            f"{what} of {args.arch} on {batch} images of {args.size}x{args.size} ({option} "
            f"{batch}, --size {args.size}) needs at least {data_size(max(step, evaluation))} of "
            f"memory, but {where} {data_size(available)} available; use a smaller {option} or "
            "--size")


def _train_in(out: Path, args, config, model, backend: str):
    """The part of ``train`` that runs with the run folder locked: (TrainResult, seconds the
    training took in this process)."""
    from ..data.cache import build_cache
    from ..training import Trainer, check_run_folder
    from ..training.checkpoint import check_steps_left, checkpoint_step
    from ..training.runfolder import CHECKPOINT_NAME

    found = check_run_folder(out, config.resume, config.overwrite)
    done = checkpoint_step(out / CHECKPOINT_NAME) if config.resume and found else 0
    if config.steps is not None:  # known before the cache is built
        check_steps_left(out / CHECKPOINT_NAME, done, config.steps)
    cache = build_cache(args.data, size=args.size, mode=args.mode, cache_dir=args.cache_dir,
                        workers=args.workers, progress=config.progress)
    trainer = Trainer(model, cache, config)
    check_steps_left(out / CHECKPOINT_NAME, done, trainer.total_steps)
    if config.resume and not found:
        print(f"no checkpoint in {out}: starting from step 0")
    length = f"for {trainer.total_steps} steps" if not done else \
        f"from step {done} to step {trainer.total_steps}"
    print(f"training {args.arch} ({model.num_parameters():,} parameters, {backend}) on "
          f"{len(cache.split('train'))} train / {len(cache.split('valid'))} valid images "
          f"({cache.size}x{cache.size} {cache.mode}) {length} "
          f"({trainer.steps_per_epoch} per epoch), batch {config.batch_size}, lr {config.lr:g}, "
          f"momentum {config.momentum:g}; output in {out}")
    start = time.perf_counter()
    return trainer.run(), time.perf_counter() - start


def _print_result(result, seconds: float, config) -> None:
    from ..evaluation import metrics
    from ..training.runfolder import HISTORY_NAME

    h = result.history
    last = h["evals"][-1]
    per_step = h["timing"]["time_per_step_s"]
    print(f"done: {h['step']} steps ({h['epoch']:.2f} epochs) in {seconds:.1f} s this session"
          f"{f', {per_step:.3f} s per step' if per_step else ''}")
    print(f"metrics at step {last['step']} (train: {h['data']['train_eval_images']} images of "
          f"{h['data']['train_eval_patients']} patients drawn from train):")
    print(metrics.format_metric_table({"train": last["train"], "valid": last["valid"]}))
    best = h["best"]
    if best is not None:
        kappa = best.get("valid_study_kappa")
        print(f"best valid study kappa {'n/a' if kappa is None else f'{kappa:.3f}'} (accuracy "
              f"per image {100 * best['valid_image_accuracy']:.1f} %) at step {best['step']}: "
              f"{result.best_path}")
    print(f"last model: {result.last_path}; history: {Path(config.out_dir) / HISTORY_NAME}")


def add_commands(subparsers) -> None:
    """Register ``train``."""
    from ..training import TrainConfig

    tr = subparsers.add_parser("train", help="train a network on a MURA folder (real or synthetic)",
                               description="Train with BCE and SGD; checkpoints, history.json, best.npz "
                                           "and last.npz go to --out. Ctrl+C writes a checkpoint; "
                                           "--resume continues.")
    tr.add_argument("--data", required=True, help="the MURA-v1.1 folder or its parent")
    tr.add_argument("--arch", choices=sorted(ARCHITECTURES), default="baseline")
    add_config_options(tr, TrainConfig, names={"out_dir": "out"}, required=("out_dir",))
    tr.add_argument("--backend", choices=BACKENDS, default="auto")
    tr.add_argument("--size", type=int, default=227, help="input side in pixels (default 227)")
    tr.add_argument("--mode", choices=("pad", "crop"), default="pad", help="preprocessing (default pad)")
    tr.add_argument("--width", type=float, default=None,
                    help="feature-map multiplier (default: the architecture's)")
    tr.add_argument("--dropout", type=float, default=0.5)
    tr.add_argument("--model-seed", type=int, default=None, help="initial weights (default: --seed)")
    tr.add_argument("--cache-dir", default=None,
                    help="preprocessed-image cache folder (default: see data cache)")
    tr.add_argument("--workers", type=int, default=None, help="processes for the cache build")
    tr.set_defaults(func=command(_train))
