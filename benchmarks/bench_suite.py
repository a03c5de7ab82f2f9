"""What ``make bench`` measures: every architecture at the quick size and at the assignment's,
against PyTorch CPU on the same network and machine, beside the physical limit.

    python -m benchmarks.bench_suite [--sizes 64,96,227] [--archs baseline,deeper,wider,residual]
        [--steps 10] [--warmup 2] [--threads 2] [--eval-images 1500] [--eval-size 96]
        [--json benchmarks/results/suite.json]

For each (architecture, size; 64 is what the quick profile trains, 227 the assignment's):
one training step and one inference step of batch 32, float32,
on our NumPy backend and on PyTorch CPU, each in its own process (``bench_step``'s workers),
and the ratio ours / PyTorch from the same run. Beside them, the floating-point operations of
the step (``bench_step.layer_flops`` over every convolution and fully connected layer,
forward and backward, as a direct convolution computes them) and the time they would take at
this machine's single-GEMM throughput (the best of a few large float32 matrix products on the
same threads, measured in this run): the step's physical limit on this machine, which a
Winograd layer may beat since it does fewer multiplications than it is counted for. Last, the
evaluation pass of ``--eval-images`` valid images at ``--eval-size``, as the trainer runs it
(``evaluation.predictions.predict_split``: standardization and evaluation-mode forward).
Nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .bench_step import (
    INSTALL_TORCH,
    flatten_row,
    layer_flops,
    markdown_table,
    spawn_worker,
    torch_version,
)
from .measure import machine_info

ARCHS = ("baseline", "deeper", "wider", "residual")
GEMM_SIZES = (1024, 2048, 3072)


def _layer_step_flops(layer, shape: tuple, batch: int) -> float:
    """Forward + backward operations of ``layer`` (and the layers inside it) on (C, H, W)
    or (F,) inputs of ``shape``."""
    from mura_core.nn.layers import Residual, Sequential

    if isinstance(layer, Sequential):
        total = 0.0
        for _, inner in layer.layers:
            total += _layer_step_flops(inner, shape, batch)
            shape = inner.output_shape(shape)
        return total
    if isinstance(layer, Residual):
        skip = 0.0 if layer.shortcut is None else _layer_step_flops(layer.shortcut, shape, batch)
        return _layer_step_flops(layer.block, shape, batch) + skip
    counted = layer_flops(layer, (batch, *shape), (batch, *layer.output_shape(shape)))
    return 0.0 if counted is None else sum(counted)


def step_flops(arch: str, size: int, batch: int) -> float:
    """Floating-point operations of one training step (forward + backward of every
    convolution and fully connected layer), counted as a direct convolution does them."""
    import mura_core as mc

    model = mc.build_model(arch, input_size=size, seed=0)
    return _layer_step_flops(model.body, (1, size, size), batch)


def gemm_throughput(threads: int, seconds: float = 1.0) -> float:
    """The best float32 GEMM rate (FLOP/s) of a few square products on ``threads`` threads."""
    from threadpoolctl import threadpool_limits

    best = 0.0
    rng = np.random.default_rng(0)
    with threadpool_limits(limits=threads, user_api="blas"):
        for n in GEMM_SIZES:
            a, b = rng.random((n, n), np.float32), rng.random((n, n), np.float32)
            a @ b
            calls, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                a @ b
                calls += 1
            best = max(best, 2.0 * n ** 3 * calls / (time.perf_counter() - start))
    return best


def evaluation_pass(size: int, images: int, threads: int, batch: int = 64) -> dict:
    """Seconds to predict ``images`` valid images at ``size`` with the baseline, as the
    trainer's evaluation points do (best of three passes after one untimed)."""
    from threadpoolctl import threadpool_limits

    import mura_core as mc
    from mura_core.evaluation.predictions import predict_split

    rng = np.random.default_rng(0)
    split = SimpleNamespace(images=rng.integers(0, 256, (images, size, size), dtype=np.uint8),
                            labels=np.ones(images, np.float32), mode="pad")
    model = mc.build_model("baseline", input_size=size, seed=0)
    times = []
    with threadpool_limits(limits=threads, user_api="blas"):
        for _ in range(4):
            start = time.perf_counter()
            predict_split(model, split, 100.0, 50.0, batch)
            times.append(time.perf_counter() - start)
    return {"images": images, "size": size, "batch": batch, "seconds": min(times[1:]),
            "images_per_s": images / min(times[1:])}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_suite", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="64,96,227")
    p.add_argument("--archs", default=",".join(ARCHS))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--eval-images", type=int, default=1500)
    p.add_argument("--eval-size", type=int, default=96)
    p.add_argument("--json", default="benchmarks/results/suite.json")
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.archs = [a for a in args.archs.split(",") if a]
    return args


def _step_args(args, arch: str, size: int):
    return SimpleNamespace(arch=arch, batch=args.batch, size=size, steps=args.steps,
                           warmup=args.warmup, threads=args.threads, lr=1e-4, width=None,
                           layers=False, tf32=False)


def main(argv=None) -> int:
    args = parse_args(argv)
    machine = machine_info()
    has_torch = torch_version() is not None
    blas = [f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')})"
            for b in machine["blas"] if b.get("user_api") == "blas"]
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, load {machine['load_average']}; "
          f"numpy {machine['numpy']}, BLAS {'; '.join(blas) or 'unknown'}, "
          f"torch {torch_version() or 'absent'}; {args.threads} threads", flush=True)
    gemm = gemm_throughput(args.threads)
    print(f"single-GEMM throughput: {gemm / 1e9:.0f} GFLOP/s (float32, {args.threads} threads)",
          flush=True)
    rows = []
    for size in args.sizes:
        for arch in args.archs:
            print(f"  {arch} at {size}x{size} ...", flush=True)
            step = _step_args(args, arch, size)
            results = [spawn_worker(b, step) for b in (["numpy", "torch-cpu"] if has_torch
                                                        else ["numpy"])]
            results = [r for r in results if "train_ms" in r]
            flat = {r["backend"]: flatten_row(r) for r in results}
            flops = step_flops(arch, size, args.batch)
            ours, theirs = flat.get("numpy", {}), flat.get("torch-cpu", {})
            row = {"arch": arch, "size": size, "gflop": flops / 1e9,
                   "limit_ms": 1e3 * flops / gemm, "numpy_ms": ours.get("train_ms"),
                   "torch_ms": theirs.get("train_ms"), "numpy_infer_ms": ours.get("infer_ms"),
                   "torch_infer_ms": theirs.get("infer_ms")}
            row["train_x"] = _ratio(row["numpy_ms"], row["torch_ms"])
            row["infer_x"] = _ratio(row["numpy_infer_ms"], row["torch_infer_ms"])
            rows.append(row)
    evaluation = evaluation_pass(args.eval_size, args.eval_images, args.threads)
    print()
    print(suite_table(rows))
    print(f"\nevaluation pass: {evaluation['images']} images at {evaluation['size']}x"
          f"{evaluation['size']}, batch {evaluation['batch']}: {evaluation['seconds']:.2f} s "
          f"({evaluation['images_per_s']:.0f} images/s)")
    if not has_torch:
        print(f"PyTorch is absent: no comparison was made ({INSTALL_TORCH}).")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"machine": machine, "threads": args.threads,
                                    "gemm_gflops": gemm / 1e9, "rows": rows,
                                    "evaluation": evaluation}, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


def _ratio(ours, theirs) -> float | None:
    return None if ours is None or not theirs else ours / theirs


def _ms(value) -> str:
    return "–" if value is None else f"{value:.0f}"


def suite_table(rows: list[dict]) -> str:
    """The per-architecture table: our step, PyTorch's, the ratio, and the FLOP limit."""
    header = ["network", "input", "GFLOP / step", "limit ms", "ours ms", "PyTorch ms",
              "ours / PyTorch", "ours / limit", "infer ours / PyTorch"]
    body = []
    for r in rows:
        body.append([r["arch"], f"{r['size']}", f"{r['gflop']:.1f}", _ms(r["limit_ms"]),
                     _ms(r["numpy_ms"]), _ms(r["torch_ms"]),
                     "–" if r["train_x"] is None else f"{r['train_x']:.2f}",
                     "–" if r["numpy_ms"] is None else f"{r['numpy_ms'] / r['limit_ms']:.2f}",
                     "–" if r["infer_x"] is None else f"{r['infer_x']:.2f}"])
    return markdown_table(header, body, right=set(range(1, len(header))))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
