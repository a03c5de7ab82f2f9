"""How much of our NumPy training step the Winograd transforms take, against one memory pass.

    python -m benchmarks.bench_transforms [--arch baseline] [--size 96] [--batch 32]
        [--steps 8] [--warmup 2] [--threads 2]

Every call of the element-wise functions of ``mura_core.nn.winograd`` (input, output and
gradient transforms, space-to-depth and back) is timed inside real training steps. Beside
each, the time of one copy of the larger of its input and output (``np.copyto``, same shape
and memory order, in the same process afterwards): what a transform fused into one pass over
memory would at least cost. The difference is what fusing them could save, an upper bound
on what is left to win from the transforms without compiled code. No test asserts a time.
"""
from __future__ import annotations

import argparse
import contextlib
import time
from collections import defaultdict

import numpy as np

from .bench_step import make_batch, markdown_table
from .measure import machine_info

#: the element-wise passes of the Winograd convolutions (everything but the products)
TRANSFORMS = ("_transform_input", "_transform_output", "_transform_output_grad",
              "_transform_input_grad", "space_to_depth", "depth_to_space")


@contextlib.contextmanager
def timed_transforms(calls: list):
    """While active, every call of a ``TRANSFORMS`` function appends (name, seconds, the
    larger of its first argument and its result) to ``calls``; the functions are restored
    on exit."""
    from mura_core.nn import winograd

    originals = {name: getattr(winograd, name) for name in TRANSFORMS}

    def wrap(name, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            seconds = time.perf_counter() - start
            arrays = [a for a in (args[0], *(result if isinstance(result, tuple) else (result,)))
                      if isinstance(a, np.ndarray)]
            calls.append((name, seconds, max(arrays, key=lambda a: a.nbytes)))
            return result
        return timed

    try:
        for name, fn in originals.items():
            setattr(winograd, name, wrap(name, fn))
        yield calls
    finally:
        for name, fn in originals.items():
            setattr(winograd, name, fn)


def one_pass_seconds(a, repeats: int = 5) -> float:
    """Median time of one copy of ``a`` into an array of its shape and memory order."""
    out = np.empty_like(a)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        np.copyto(out, a)
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def measure(arch: str, size: int, batch: int, steps: int, warmup: int) -> dict:
    """Median step (ms) with the transforms timed, and per function: calls, ms and one-pass ms
    per step."""
    import mura_core as mc

    model = mc.build_model(arch, input_size=size, seed=0)
    x, t = make_batch(batch, size)
    opt = mc.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    step_times, calls = [], []
    with timed_transforms(calls):
        for i in range(warmup + steps):
            if i == warmup:
                calls.clear()
            start = time.perf_counter()
            _, grads = mc.loss_and_grads(model, x, t, training=True)
            opt.step(grads)
            step_times.append(time.perf_counter() - start)
    per_shape = {}  # one copy per distinct array shape and order, not per call
    rows = defaultdict(lambda: {"calls": 0, "ms": 0.0, "one_pass_ms": 0.0})
    for name, seconds, array in calls:
        key = (array.shape, array.strides, array.dtype.str)
        if key not in per_shape:
            per_shape[key] = one_pass_seconds(array)
        row = rows[name]
        row["calls"] += 1
        row["ms"] += seconds * 1e3
        row["one_pass_ms"] += per_shape[key] * 1e3
    per_step = {name: {k: v / steps for k, v in row.items()} for name, row in rows.items()}
    return {"arch": arch, "size": size, "batch": batch,
            "step_ms": float(np.median(step_times[warmup:])) * 1e3, "functions": per_step}


def summary_row(record: dict) -> list[str]:
    step = record["step_ms"]
    spent = sum(f["ms"] for f in record["functions"].values())
    one_pass = sum(f["one_pass_ms"] for f in record["functions"].values())
    fused = step - spent + one_pass
    return [record["arch"], f"{step:.1f}", f"{spent:.1f}", f"{spent / step:.0%}",
            f"{one_pass:.1f}", f"{fused:.1f}", f"{fused / step:.2f}"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="baseline,deeper,wider,residual",
                        help="comma-separated architectures (default: all four)")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from threadpoolctl import threadpool_limits

    from mura_core.nn.backend import keep_freed_memory

    args = parse_args(argv)
    keep_freed_memory()  # as a NumPy model does
    machine = machine_info()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, load {machine['load_average']}; "
          f"numpy {machine['numpy']}; "
          f"{args.threads} BLAS threads; batch {args.batch}, {args.size}x{args.size}, "
          f"median of {args.steps} steps after {args.warmup}")
    summaries, details = [], []
    with threadpool_limits(limits=args.threads, user_api="blas"):
        for arch in args.arch.split(","):
            record = measure(arch, args.size, args.batch, args.steps, args.warmup)
            summaries.append(summary_row(record))
            for name, f in sorted(record["functions"].items(), key=lambda kv: -kv[1]["ms"]):
                details.append([arch, name, f"{f['calls']:.0f}", f"{f['ms']:.2f}",
                                f"{f['one_pass_ms']:.2f}"])
    print(markdown_table(["network", "step ms", "transforms ms", "share",
                          "one pass ms", "step if one pass ms", "x"], summaries,
                         right=set(range(1, 7))))
    print()
    print(markdown_table(["network", "function", "calls", "ms per step", "one pass ms"],
                         details, right={2, 3, 4}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
