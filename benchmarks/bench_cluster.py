"""Wall time of the same training runs in this process (the local executor) and on a Dask
LocalCluster (``--scheduler local:N``), and whether their numbers are identical.

    python -m benchmarks.bench_cluster [--profile quick] [--steps 30] [--seeds 2]
        [--workers 2] [--work /tmp/mura-bench-cluster]

The runs are notebook 04's of the profile (every architecture from ``--seeds`` seeds, the
profile's input size, batch, learning rate and schedule), each shortened to ``--steps`` steps
with one evaluation at the end, on the profile's synthetic set (generated and cached under
``--work`` once). Each executor trains them afresh into its own runs folder, after a warm-up
of one step per architecture (imports, first allocations, the page cache) that its clock does
not count; the LocalCluster is started before its clock starts. The load average is printed
before and after: on a shared machine it decides the result as much as the executor does.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import warnings
from pathlib import Path

from mura_core.data import build_cache, generate_synthetic
from mura_core.experiments import comparisons, profiles, store
from mura_core.experiments.cluster import DaskExecutor, start_local_cluster
from mura_core.experiments.executors import LocalExecutor


def _specs(profile: profiles.Profile, steps: int, seeds: int) -> list[store.RunSpec]:
    knobs = profile.notebook_knobs("04_architectures")
    base = store.RunSpec(
        arch="baseline", seed=0, steps=steps, batch_size=knobs["batch_size"], lr=knobs["lr"],
        momentum=knobs["momentum"], weight_decay=knobs["weight_decay"], eval_every=steps,
        train_eval_size=knobs["eval_images"], schedule=knobs["schedule"],
        warmup_steps=min(knobs["warmup_steps"], steps // 2))
    return [base.replace(arch=arch, seed=seed) for arch in knobs["architectures"]
            for seed in range(seeds)]


def _timed(executor, specs, cache, runs_dir: Path) -> tuple[float, list]:
    """Seconds to train ``specs`` afresh into ``runs_dir``, after an untimed warm-up."""
    warm_up = list({s.arch: s.replace(steps=1, eval_every=1, train_eval_size=8)
                    for s in specs}.values())
    for folder in (runs_dir, runs_dir.with_name(runs_dir.name + "-warm-up")):
        shutil.rmtree(folder, ignore_errors=True)
    comparisons.run_all(warm_up, cache, runs_dir.with_name(runs_dir.name + "-warm-up"),
                        executor=executor, log=lambda m: None)
    start = time.perf_counter()
    runs = comparisons.run_all(specs, cache, runs_dir, executor=executor, log=lambda m: None)
    return time.perf_counter() - start, runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick", choices=list(profiles.PROFILES))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/mura-bench-cluster"))
    args = parser.parse_args(argv)

    profile = profiles.get_profile(args.profile)
    data = args.work / f"data-{profile.name}"
    if not data.exists():
        generate_synthetic(data, n_train=profile.synthetic_train, n_valid=profile.synthetic_valid,
                           seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cache = build_cache(data, size=profile.input_size, mode="pad",
                            cache_dir=args.work / f"cache-{profile.name}", progress=False)
    specs = _specs(profile, args.steps, args.seeds)
    archs = ", ".join(profile.notebook_knobs("04_architectures")["architectures"])
    print(f"{len(specs)} runs ({archs} x {args.seeds} seeds), {args.steps} steps of "
          f"{specs[0].batch_size} at "
          f"{profile.input_size}x{profile.input_size}; {os.cpu_count()} CPU cores")
    load_before = os.getloadavg()
    local_s, local = _timed(LocalExecutor(), specs, cache, args.work / "runs-local")
    cluster = start_local_cluster(args.workers, log=lambda m: None)
    try:
        dask_s, dask = _timed(DaskExecutor(cluster, progress=False), specs, cache,
                              args.work / "runs-dask")
    finally:
        cluster.close()
    load_after = os.getloadavg()
    same = all(a.history["loss"] == b.history["loss"] and a.history["evals"] == b.history["evals"]
               for a, b in zip(local, dask))
    result = {"profile": profile.name, "runs": len(specs), "steps": args.steps,
              "workers": args.workers, "cores": os.cpu_count(), "local_s": round(local_s, 1),
              "dask_s": round(dask_s, 1), "speedup": round(local_s / dask_s, 2),
              "identical": same, "load_before": [round(x, 2) for x in load_before],
              "load_after": [round(x, 2) for x in load_after]}
    print(f"local executor: {local_s:.1f} s; local:{args.workers}: {dask_s:.1f} s; speed-up "
          f"{local_s / dask_s:.2f}x; histories identical: {same}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
