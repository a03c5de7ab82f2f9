"""Training and inference step of mura_core against PyTorch on the same network and machine.

    python -m benchmarks.bench_step [--arch baseline] [--batch 32] [--size 227] [--steps 5]
        [--warmup 1] [--threads T] [--backends numpy,cupy,torch-cpu,torch-cuda,numpy-plain]
        [--json benchmarks/results/latest.json] [--layers]

A training step is: forward in training mode, BCE on the logits, backward, SGD momentum 0.9
update. An inference step is a forward pass in evaluation mode, to P(normal). Each backend runs
in its own process (this module again, with a hidden ``--_worker`` flag), so its peak resident
memory (``ru_maxrss``, read right after the training steps) is its own and no library loaded
for one backend slows or inflates another. Times are the median and minimum over ``--steps``
steps after ``--warmup`` untimed ones; on a GPU the device is synchronized around each step.
Ratios (ours / PyTorch) compare rows measured in the same run: numpy with torch-cpu, cupy with
torch-cuda. ``--layers`` adds the forward and backward time of every layer of our step.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from .measure import blas_info, current_rss_mb, machine_info, peak_rss_mb, summarize_ms, time_calls

#: "numpy-plain": NumPy with ``backend.FAST_PATHS`` off, the plain pieces of ``nn.plain`` (what
#: the course's student edition runs); measured only when asked for.
OURS = ("numpy", "cupy", "numpy-plain")
TORCH = ("torch-cpu", "torch-cuda")
ALL_BACKENDS = OURS + TORCH
DEFAULT_BACKENDS = ("numpy", "cupy") + TORCH
#: which PyTorch row each of ours is compared with
REFERENCE = {"numpy": "torch-cpu", "cupy": "torch-cuda", "numpy-plain": "torch-cpu"}
ROOT = Path(__file__).resolve().parent.parent
INSTALL_TORCH = "make bench-deps (pip install torch==2.13.0 into .venv)"


# --- inputs ------------------------------------------------------------------------------
def make_batch(batch: int, size: int, seed: int = 0):
    """The same float32 batch for every backend: x (B, 1, S, S) standard normal, t (B, 1) in {0, 1}."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 1, size, size), dtype=np.float32)
    t = (rng.random((batch, 1)) < 0.5).astype(np.float32)
    return x, t


# --- our backends ------------------------------------------------------------------------
def layer_flops(layer, x_shape: tuple, y_shape: tuple) -> tuple[float, float] | None:
    """(forward, backward) floating-point operations of a Conv2D or Linear layer for one
    batch, counting a multiply-add as 2 and a convolution as the direct one computes it
    (so a Winograd layer's rate is its effective rate); backward is the weight gradient plus,
    where the layer computes it, the input gradient. None for other layers."""
    from mura_core.nn.layers import Conv2D, Linear

    if isinstance(layer, Conv2D):
        n, d, oh, ow = y_shape
        forward = 2.0 * n * d * oh * ow * layer.d_in * layer.k * layer.k
        return forward, forward * (2 if layer.input_grad else 1)
    if isinstance(layer, Linear):
        forward = 2.0 * x_shape[0] * layer.d_in * layer.d_out
        return forward, 2 * forward
    return None


def layer_breakdown(model, x, t, opt, steps: int, sync=None) -> list[dict]:
    """Forward and backward time of each layer of ``model.body`` over ``steps`` training
    steps (the same work as ``loss_and_grads`` + ``SGD.step``), in ms per step, sorted by cost.

    Rows: name, layer (description), forward_ms, backward_ms, total_ms, percent (of the sum of
    all rows); the loss and the SGD update are rows of their own. Convolutions and fully
    connected layers also carry forward_gflop / backward_gflop (per step, see
    ``layer_flops``) and the rates forward_gflops / backward_gflops (GFLOP/s).
    """
    import time

    from mura_core import bce_with_logits

    sync = sync or (lambda: None)
    body = model.body.layers
    forward, backward = defaultdict(float), defaultdict(float)
    describe = {name: layer.describe() for name, layer in body}
    flops = {}
    h = x
    for name, layer in body:  # shapes only: one untimed forward in evaluation mode
        y = layer.forward(h, False)
        counted = layer_flops(layer, tuple(h.shape), tuple(y.shape))
        if counted is not None:
            flops[name] = counted
        h = y

    def clock(table, key, fn):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        table[key] += time.perf_counter() - start
        return out

    for _ in range(steps):
        h = x
        for name, layer in body:
            h = clock(forward, name, lambda layer=layer, h=h: layer.forward(h, True))
        _, dy = clock(forward, "loss", lambda h=h: bce_with_logits(h, t))
        for name, layer in reversed(body):
            dy = clock(backward, name, lambda layer=layer, dy=dy: layer.backward(dy))
            if dy is None:
                break
        grads = model.gradients()
        clock(backward, "sgd", lambda grads=grads: opt.step(grads))
    describe["loss"] = "BCE with logits"
    describe["sgd"] = "SGD momentum update"
    names = [name for name, _ in body] + ["loss", "sgd"]
    total = sum(forward.values()) + sum(backward.values())
    rows = []
    for name in names:
        f, b = forward.get(name, 0.0), backward.get(name, 0.0)
        row = {"name": name, "layer": describe[name], "forward_ms": 1e3 * f / steps,
               "backward_ms": 1e3 * b / steps, "total_ms": 1e3 * (f + b) / steps,
               "percent": 100.0 * (f + b) / total if total else 0.0}
        if name in flops:
            ff, fb = flops[name]
            row.update({"forward_gflop": ff / 1e9, "backward_gflop": fb / 1e9,
                        "forward_gflops": ff * steps / f / 1e9 if f else None,
                        "backward_gflops": fb * steps / b / 1e9 if b else None})
        rows.append(row)
    rows.sort(key=lambda r: r["total_ms"], reverse=True)
    return rows


def run_ours(backend: str, args) -> dict:
    """Time our model on ``backend`` ('numpy' or 'cupy') in this process."""
    from threadpoolctl import threadpool_limits

    import mura_core as mc
    from mura_core.nn.backend import _cupy_status, device_name

    from .measure import cpu_model

    limits = threadpool_limits(limits=args.threads, user_api="blas")  # noqa: F841 (kept alive)
    if backend == "numpy-plain":
        from mura_core.nn import backend as nn_backend

        nn_backend.FAST_PATHS, backend = False, "numpy"
    sync = None
    if backend == "cupy":
        cupy, reason = _cupy_status()
        if cupy is None:
            return {"backend": backend, "skipped": reason}
        sync = cupy.cuda.Device().synchronize
        device = device_name("cupy")
    else:
        device = cpu_model()
    baseline_mb = current_rss_mb()
    model = mc.build_model(args.arch, input_size=args.size, seed=0, backend=backend,
                           width=args.width)
    x_host, t_host = make_batch(args.batch, args.size)
    x, t = model.xp.asarray(x_host), model.xp.asarray(t_host)
    opt = mc.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    last = {}

    def train_step():
        last["loss"], grads = mc.loss_and_grads(model, x, t, training=True)
        opt.step(grads)

    def inference_step():
        model.forward(x, training=False)

    train = time_calls(train_step, args.steps, args.warmup, sync)
    result = {"peak_mb": peak_rss_mb()}
    if backend == "cupy":
        result["gpu_mb"] = cupy.get_default_memory_pool().total_bytes() / 2**20
    infer = time_calls(inference_step, args.steps, args.warmup, sync)
    result.update({"device": device, "baseline_mb": baseline_mb, "train_ms": summarize_ms(train),
                   "infer_ms": summarize_ms(infer), "parameters": model.num_parameters(),
                   "last_loss": float(last["loss"]), "blas": blas_info()})
    if args.layers:
        result["layers"] = layer_breakdown(model, x, t, opt, args.steps, sync)
    return result


# --- PyTorch -----------------------------------------------------------------------------
def run_torch(backend: str, args) -> dict:
    """Time the PyTorch twin of the network on 'torch-cpu' or 'torch-cuda' in this process."""
    import torch

    from .measure import cpu_model
    from .torch_net import build_torch_net

    torch.set_num_threads(args.threads)
    sync = None
    if backend == "torch-cuda":
        if not torch.cuda.is_available():
            return {"backend": backend, "skipped": "PyTorch sees no CUDA device"
                    f" (torch {torch.__version__})"}
        # cuDNN convolutions default to TF32 (10-bit mantissa); ours are plain float32.
        torch.backends.cudnn.allow_tf32 = args.tf32
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        device, sync = torch.device("cuda"), torch.cuda.synchronize
        device_label = torch.cuda.get_device_name()
    else:
        device, device_label = torch.device("cpu"), cpu_model()
    baseline_mb = current_rss_mb()
    net = build_torch_net(args.arch, args.size, width=args.width).to(device)
    x_host, t_host = make_batch(args.batch, args.size)
    x, t = torch.from_numpy(x_host).to(device), torch.from_numpy(t_host).to(device)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9)
    last = {}

    def train_step():
        net.train()
        opt.zero_grad(set_to_none=True)
        last["loss"] = loss_fn(net(x), t)
        last["loss"].backward()
        opt.step()

    def inference_step():
        net.eval()
        with torch.inference_mode():
            torch.sigmoid(net(x))

    train = time_calls(train_step, args.steps, args.warmup, sync)
    result = {"peak_mb": peak_rss_mb()}
    if backend == "torch-cuda":
        result["gpu_mb"] = torch.cuda.max_memory_reserved() / 2**20
    infer = time_calls(inference_step, args.steps, args.warmup, sync)
    result.update({"device": device_label, "baseline_mb": baseline_mb,
                   "train_ms": summarize_ms(train), "infer_ms": summarize_ms(infer),
                   "parameters": sum(p.numel() for p in net.parameters()),
                   "last_loss": float(last["loss"].item()),
                   "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                   "blas": blas_info()})
    if backend == "torch-cuda":
        result["tf32"] = args.tf32
    return result


def worker_main(backend: str, args) -> None:
    """Body of the per-backend subprocess: measure, write the result as JSON to ``args._result``."""
    result = run_ours(backend, args) if backend in OURS else run_torch(backend, args)
    result.update({"backend": backend, "threads": args.threads, "batch": args.batch,
                   "size": args.size, "arch": args.arch})
    Path(args._result).write_text(json.dumps(result))


# --- driver ------------------------------------------------------------------------------
def torch_version() -> str | None:
    """The installed torch version, without importing it (None when absent)."""
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def code_revision() -> dict:
    """The commit measured and the files of mura_core/ that differ from it (None: no git)."""
    def git(*cmd):
        proc = subprocess.run(["git", "-C", str(ROOT), *cmd], capture_output=True, text=True)
        return proc.stdout if proc.returncode == 0 else None

    commit = (git("rev-parse", "--short", "HEAD") or "").strip() or None
    changed = git("status", "--porcelain", "--", "mura_core")
    return {"commit": commit,
            "mura_core_changes": None if changed is None else
            [line[3:] for line in changed.splitlines()]}


def spawn_worker(backend: str, args) -> dict:
    """Run one backend in a fresh interpreter with its threads limited to ``args.threads``."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(args.threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "benchmarks.bench_step", "--_worker", backend,
               "--_result", str(out), "--arch", args.arch, "--batch", str(args.batch),
               "--size", str(args.size), "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--threads", str(args.threads), "--lr", str(args.lr)]
        if args.width is not None:
            cmd += ["--width", str(args.width)]
        if args.layers:
            cmd.append("--layers")
        if args.tf32:
            cmd.append("--tf32")
        proc = subprocess.run(cmd, cwd=ROOT, env=env)
        if proc.returncode != 0 or not out.exists():
            return {"backend": backend, "failed": f"worker exited with code {proc.returncode}"}
        return json.loads(out.read_text())


def add_ratios(results: list[dict]) -> None:
    """Ours / PyTorch for train time, inference time and peak memory, from the same run.

    Memory compares GPU memory held by the allocator where both rows have it, else peak RSS.
    """
    by_backend = {r["backend"]: r for r in results}
    for ours, reference in REFERENCE.items():
        mine, theirs = by_backend.get(ours), by_backend.get(reference)
        if mine is None or theirs is None:
            continue
        memory = "gpu_mb" if "gpu_mb" in mine and "gpu_mb" in theirs else "peak_mb"
        mine.update({
            "reference": reference,
            "train_ratio": mine["train_ms"]["median"] / theirs["train_ms"]["median"],
            "infer_ratio": mine["infer_ms"]["median"] / theirs["infer_ms"]["median"],
            "memory_ratio": mine[memory] / theirs[memory],
            "memory_ratio_of": memory,
        })


def flatten_row(r: dict) -> dict:
    """The per-backend fields of the JSON record, in a stable order."""
    row = {
        "backend": r["backend"], "device": r["device"], "threads": r["threads"],
        "batch": r["batch"], "size": r["size"], "arch": r["arch"],
        "train_ms": r["train_ms"]["median"], "train_ms_min": r["train_ms"]["min"],
        "infer_ms": r["infer_ms"]["median"], "infer_ms_min": r["infer_ms"]["min"],
        "train_images_per_s": r["batch"] / r["train_ms"]["median"] * 1e3,
        "infer_images_per_s": r["batch"] / r["infer_ms"]["median"] * 1e3,
        "peak_mb": r["peak_mb"], "baseline_mb": r["baseline_mb"],
        "train_ms_all": r["train_ms"]["all"], "infer_ms_all": r["infer_ms"]["all"],
        "parameters": r["parameters"], "last_loss": r["last_loss"], "blas": r["blas"],
    }
    for key in ("gpu_mb", "torch", "torch_threads", "tf32", "reference", "train_ratio", "infer_ratio",
                "memory_ratio", "memory_ratio_of"):
        if key in r:
            row[key] = r[key]
    return row


def fmt_ms(ms: float) -> str:
    """Milliseconds to about three significant digits (1234, 123, 12.3, 1.23)."""
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def markdown_table(header: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> str:
    """An aligned Markdown table (readable in a terminal, pasteable into docs)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def line(cells):
        return "| " + " | ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else "-" * (w + 2)
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule] + [line(r) for r in rows])


def results_table(rows: list[dict]) -> str:
    gpu = any("gpu_mb" in r for r in rows)
    header = ["backend", "device", "threads", "train ms (min)", "infer ms (min)", "train img/s",
              "infer img/s", "peak MB (before model)"] + (["GPU MB"] if gpu else []) + \
             ["train x", "infer x", "memory x"]
    body = []
    for r in rows:
        def ratio(key, r=r):
            return f"{r[key]:.2f}" if key in r else ""

        body.append([r["backend"], r["device"], r["threads"],
                     f"{fmt_ms(r['train_ms'])} ({fmt_ms(r['train_ms_min'])})",
                     f"{fmt_ms(r['infer_ms'])} ({fmt_ms(r['infer_ms_min'])})",
                     f"{r['train_images_per_s']:.1f}", f"{r['infer_images_per_s']:.1f}",
                     f"{r['peak_mb']:.0f} ({r['baseline_mb']:.0f})"]
                    + ([f"{r['gpu_mb']:.0f}" if "gpu_mb" in r else ""] if gpu else [])
                    + [ratio("train_ratio"), ratio("infer_ratio"), ratio("memory_ratio")])
    return markdown_table(header, body, right=set(range(2, len(header))))


def layers_table(rows: list[dict]) -> str:
    """Per-layer times; GFLOP/s (direct-convolution FLOPs, see ``layer_flops``) for the
    convolutions and fully connected layers."""
    def rate(r, key):
        return f"{r[key]:.0f}" if r.get(key) else ""

    header = ["layer", "type", "forward ms", "backward ms", "total ms", "%", "fwd GFLOP/s",
              "bwd GFLOP/s"]
    body = [[r["name"], r["layer"][:44], fmt_ms(r["forward_ms"]), fmt_ms(r["backward_ms"]),
             fmt_ms(r["total_ms"]), f"{r['percent']:.1f}", rate(r, "forward_gflops"),
             rate(r, "backward_gflops")] for r in rows]
    body.append(["sum", "", fmt_ms(sum(r["forward_ms"] for r in rows)),
                 fmt_ms(sum(r["backward_ms"] for r in rows)),
                 fmt_ms(sum(r["total_ms"] for r in rows)), "100.0", "", ""])
    return markdown_table(header, body, right={2, 3, 4, 5, 6, 7})


def parse_args(argv=None):
    from .measure import blas_threads

    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_step", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="baseline", help="architecture name (default: baseline)")
    p.add_argument("--width", type=float, default=None,
                   help="feature-map multiplier (default: the architecture's own)")
    p.add_argument("--batch", type=int, default=32, help="batch size (default: 32)")
    p.add_argument("--size", type=int, default=227, help="input side in pixels (default: 227)")
    p.add_argument("--steps", type=int, default=5, help="timed steps (default: 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default: 1)")
    p.add_argument("--lr", type=float, default=1e-4,
                   help="SGD learning rate (default: 1e-4; the work does not depend on it, but "
                        "repeated steps on one random batch diverge to inf/NaN at 0.01)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for BLAS and torch (default: NumPy's BLAS threads now)")
    p.add_argument("--backends", default=",".join(DEFAULT_BACKENDS),
                   help=f"comma-separated subset of {','.join(ALL_BACKENDS)} (default: all but numpy-plain; "
                        "those that cannot run here are reported as skipped)")
    p.add_argument("--json", default="benchmarks/results/latest.json",
                   help="where to write the JSON record ('' for nowhere)")
    p.add_argument("--layers", action="store_true",
                   help="also time each layer's forward and backward of our training step")
    p.add_argument("--tf32", action="store_true",
                   help="let torch-cuda use TF32 (its cuDNN default); off: float32 like ours")
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    p.add_argument("--_result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads is None:
        args.threads = blas_threads()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in ALL_BACKENDS]
    if unknown:
        p.error(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(ALL_BACKENDS)}")
    if args.steps < 1 or args.warmup < 0 or args.batch < 1 or args.threads < 1:
        p.error("--steps, --batch and --threads must be at least 1, --warmup at least 0")
    args.backends = backends
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._worker:
        worker_main(args._worker, args)
        return 0
    machine = machine_info()
    machine["torch"] = torch_version()
    code = code_revision()
    blas = [f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')}, "
            f"{b.get('num_threads')} threads)" for b in machine["blas"] if b.get("user_api") == "blas"]
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, load {machine['load_average']}; "
          f"numpy {machine['numpy']}, BLAS {'; '.join(blas) or 'unknown'}, "
          f"torch {machine['torch'] or 'absent'}")
    env = ", ".join(f"{k}={v}" for k, v in machine["env"].items() if v is not None)
    print(f"environment: {env or '(no OpenBLAS/OpenMP variables set)'}")
    if code["commit"]:
        changes = code["mura_core_changes"]
        print(f"code: commit {code['commit']}"
              + (f", with uncommitted changes to {', '.join(changes)}" if changes else ""))
    width = "" if args.width is None else f", width {args.width:g}"
    print(f"network: {args.arch}{width}, batch {args.batch}, {args.size}x{args.size}, float32; "
          f"{args.threads} threads; median (min) of {args.steps} steps after {args.warmup} warm-up",
          flush=True)

    results, skipped, failed = [], [], []
    for backend in args.backends:
        if backend in TORCH and machine["torch"] is None:
            skipped.append({"backend": backend, "reason": "PyTorch is not installed; "
                            f"install it with {INSTALL_TORCH}"})
            continue
        if backend == "cupy" and importlib.util.find_spec("cupy") is None:
            skipped.append({"backend": backend, "reason": "CuPy is not installed "
                            "(pip install -e '.[gpu]' on a machine with an NVIDIA GPU)"})
            continue
        print(f"  running {backend} ...", flush=True)
        r = spawn_worker(backend, args)
        if "skipped" in r:
            skipped.append({"backend": backend, "reason": r["skipped"]})
        elif "failed" in r:
            failed.append({"backend": backend, "reason": r["failed"]})
        else:
            results.append(r)
    add_ratios(results)
    rows = [flatten_row(r) for r in results]

    print()
    if rows:
        print(results_table(rows))
    print("ratios: ours / PyTorch measured in this run (train and inference time, peak memory); "
          "peak MB is ru_maxrss after the training steps, in brackets the RSS before the model")
    if machine["torch"] is None:
        print(f"PyTorch is absent: no comparison was made. Install it with {INSTALL_TORCH}, "
              "then run `make bench` again.")
    for r in rows:
        if not np.isfinite(r["last_loss"]):
            print(f"warning: {r['backend']}: the loss became {r['last_loss']}: the steps ran on "
                  "inf/NaN, whose timing may not be representative (lower --lr)")
    for s in skipped + failed:
        print(f"{s['backend']}: {'failed' if s in failed else 'skipped'}: {s['reason']}")
    for r in results:
        if "layers" in r:
            print(f"\nper-layer breakdown, {r['backend']}, ms per training step "
                  f"(summed over {args.steps} steps, each layer synchronized):")
            print(layers_table(r["layers"]))

    record = {
        "config": {"arch": args.arch, "width": args.width, "batch": args.batch,
                   "size": args.size, "dtype": "float32", "steps": args.steps,
                   "warmup": args.warmup, "threads": args.threads, "backends": args.backends,
                   "lr": args.lr, "momentum": 0.9,
                   "tf32": args.tf32},
        "machine": machine,
        "code": code,
        "results": rows,
        "skipped": skipped,
        "failed": failed,
        "layers": {r["backend"]: r["layers"] for r in results if "layers" in r},
    }
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"\nwrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
