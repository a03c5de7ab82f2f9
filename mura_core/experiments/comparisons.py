"""Comparisons of the report: variants (architectures, or values of a swept knob) trained
from several seeds, their table rows and each against a reference, decided with statistics.

A variant is trained from each of a list of seeds (``train_variants``); ``run_all`` hands all
the specs to an executor (``executors``: this process or a Dask cluster) and returns the runs
in spec order. Its valid predictions (seeds x images) go to ``evaluation.stats``: every metric
with a bootstrap interval over patients and seeds, and each variant against the reference
one (the baseline, or the sweep's centre value) with the interval of the difference and
McNemar's test.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..evaluation import stats
from .executors import LocalExecutor
from .store import Run, RunSpec

SWEEP_KNOBS = {"batch_size": "batch size", "lr": "learning rate", "momentum": "momentum"}
#: The valid metrics a comparison reports, with intervals.
COMPARED = ("image_accuracy", "patient_accuracy", "study_accuracy", "study_kappa")


def run_all(specs: list[RunSpec], cache, runs_dir, *, backend: str = "numpy", executor=None,
            log=print) -> list[Run]:
    """The runs of ``specs``, in the same order, by ``executor`` (default: one after another
    in this process). Specs that differ only in their label (the centre value of three
    sweeps, say) are the same run: it is trained once and handed back under each label."""
    executor = executor if executor is not None else LocalExecutor()
    unique: dict[RunSpec, int] = {}
    for spec in specs:
        unique.setdefault(spec.replace(label=""), len(unique))
    firsts = {}
    for spec in specs:
        firsts.setdefault(spec.replace(label=""), spec)
    done = executor.run(list(firsts.values()), cache, runs_dir, backend=backend, log=log)
    out = []
    for spec in specs:
        run = done[unique[spec.replace(label="")]]
        out.append(run if run.spec == spec else dataclasses.replace(run, spec=spec))
    return out


def seeded(spec: RunSpec, seeds) -> list[RunSpec]:
    """``spec`` once per seed."""
    return [spec.replace(seed=int(s)) for s in seeds]


def train_variants(variants: dict[str, RunSpec], seeds, cache, runs_dir, *,
                   backend: str = "numpy", executor=None, log=print) -> dict[str, list[Run]]:
    """Every variant (name -> spec) from every seed, all handed to the executor at once;
    name -> its runs, in seed order."""
    names = list(variants)
    specs = [s for name in names for s in seeded(variants[name].replace(label=name), seeds)]
    runs = run_all(specs, cache, runs_dir, backend=backend, executor=executor, log=log)
    k = len(list(seeds))
    return {name: runs[i * k:(i + 1) * k] for i, name in enumerate(names)}


def architecture_specs(names, base: RunSpec) -> dict[str, RunSpec]:
    """The same settings for every architecture in ``names``."""
    return {name: base.replace(arch=name) for name in names}


def sweep_label(knob: str, value) -> str:
    """'learning rate 0.002': how a sweep's run is named."""
    return f"{SWEEP_KNOBS[knob]} {value:g}"


def sweep_specs(knob: str, values, base: RunSpec) -> dict[str, RunSpec]:
    """One spec per value of ``knob`` (named by ``sweep_label``), ``base`` otherwise. Every
    run sees the examples of ``base`` (its steps times its batch size): a batch of 64 takes
    half the steps of a batch of 32, and its warm-up and evaluation points cover the same
    examples. The value equal to ``base``'s gives ``base`` itself (the same stored run)."""
    if knob not in SWEEP_KNOBS:
        raise ValueError(f"cannot sweep {knob!r}; choose one of {', '.join(SWEEP_KNOBS)}")
    examples = base.steps * base.batch_size
    out = {}
    for value in values:
        batch = int(value) if knob == "batch_size" else base.batch_size
        scale = base.batch_size / batch
        out[sweep_label(knob, value)] = base.replace(**{
            knob: type(getattr(base, knob))(value),
            "steps": max(1, examples // batch),
            "eval_every": None if base.eval_every is None else max(1, round(base.eval_every * scale)),
            "warmup_steps": int(round(base.warmup_steps * scale)),
        })
    return out


def variant_probs(runs: list[Run]) -> np.ndarray | None:
    """(seeds, valid images) P(normal) of a variant's runs; None when a run has none."""
    if any(r.valid_probs is None for r in runs):
        return None
    return np.stack([r.valid_probs for r in runs])


def _final(run: Run, split: str, key: str):
    last = run.last_eval
    if last is None:
        return None
    value = last.get(split, {}).get(key)
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) \
        else value


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def final_train_loss(history: dict, window: int = 10) -> float | None:
    """Mean training loss over the last ``window`` steps (None when there is none or it is
    not finite)."""
    loss = np.asarray(history.get("loss") or [], dtype=np.float64)[-window:]
    if loss.size == 0 or not np.all(np.isfinite(loss)):
        return None
    return float(loss.mean())


def variant_row(name: str, runs: list[Run], grouping: stats.Grouping, seed: int = 0) -> dict:
    """One table row of a variant: parameters, time per step, steps, seeds, final loss and
    train accuracy (means over seeds), and every valid metric of ``COMPARED``: its mean over
    the seeds with the two-level bootstrap interval (``{metric}``, ``{metric}_low``,
    ``{metric}_high``) and each seed's value (``{metric}_seeds``). A variant with a diverged
    run has no valid metrics."""
    first = runs[0]
    row = {
        "name": name,
        "params": (first.history.get("model") or {}).get("num_parameters"),
        "seconds_per_step": _mean(r.seconds_per_step for r in runs),
        "steps": int(first.spec.steps),
        "seeds": len(runs),
        "final_train_loss": None if any(r.diverged for r in runs) else _mean(
            final_train_loss(r.history) for r in runs),
        "train_accuracy": _mean(_final(r, "train", "image_accuracy") for r in runs),
        "diverged": any(r.diverged for r in runs),
        "diverged_at_step": next((r.history.get("diverged_at_step") for r in runs
                                  if r.diverged), None),
        "reused": all(r.reused for r in runs),
    }
    probs = None if row["diverged"] else variant_probs(runs)
    cis = stats.intervals(grouping, probs, COMPARED, seed=seed) if probs is not None else {}
    for metric in COMPARED:
        ci = cis.get(metric, {})
        row[metric], row[f"{metric}_low"], row[f"{metric}_high"] = (
            ci.get("value"), ci.get("low"), ci.get("high"))
        row[f"{metric}_seeds"] = ci.get("seeds")
    return row


def comparisons(variants: dict[str, list[Run]], reference: str, grouping: stats.Grouping,
                metric: str = "image_accuracy", seed: int = 0) -> list[dict]:
    """Each variant against ``reference`` on the same valid images and seeds
    (``stats.compare``: the interval of the difference and McNemar's p), one dict per
    variant other than the reference, with its ``name``."""
    ref = variant_probs(variants[reference]) if not any(
        r.diverged for r in variants[reference]) else None
    out = []
    for name, runs in variants.items():
        if name == reference:
            continue
        probs = None if any(r.diverged for r in runs) else variant_probs(runs)
        if ref is None or probs is None:
            out.append({"name": name, "metric": metric, "verdict": None, "diverged": True})
            continue
        out.append({"name": name, "diverged": False,
                    **stats.compare(grouping, probs, ref, metric, seed=seed)})
    return out


def architecture_summary(variants: dict[str, list[Run]], grouping: stats.Grouping,
                         seed: int = 0) -> dict:
    """{"table": one ``variant_row`` per architecture, "comparisons": each against the
    baseline (``comparisons``)}."""
    return {"table": [variant_row(name, runs, grouping, seed) for name, runs in variants.items()],
            "comparisons": comparisons(variants, "baseline", grouping, seed=seed)}


def sweep_summary(knob: str, values, variants: dict[str, list[Run]], centre, grouping: stats.Grouping,
                  seed: int = 0) -> dict:
    """{"rows": per value its ``variant_row`` with ``value``, batch size, lr, momentum, steps
    and examples; "comparisons": each value against the ``centre`` value}."""
    rows = []
    for value, (name, runs) in zip(values, variants.items()):
        spec = runs[0].spec
        rows.append({**variant_row(name, runs, grouping, seed), "value": value,
                     "batch_size": spec.batch_size, "lr": spec.lr, "momentum": spec.momentum,
                     "examples": spec.steps * spec.batch_size})
    return {"rows": rows,
            "comparisons": comparisons(variants, sweep_label(knob, centre), grouping, seed=seed)}


def sweep_plan(base: RunSpec, **values) -> dict[str, dict[str, RunSpec]]:
    """The sweeps around ``base``, one knob at a time: knob -> ``sweep_specs`` of its values
    (``values``: knob -> list, e.g. ``batch_size=[16, 32, 64]``)."""
    return {knob: sweep_specs(knob, knob_values, base) for knob, knob_values in values.items()}


def sweep_summaries(plan: dict[str, dict[str, RunSpec]], trained: dict[str, list[Run]],
                    base: RunSpec, grouping: stats.Grouping, seed: int = 0) -> dict[str, dict]:
    """knob -> ``sweep_summary`` of its runs (``trained``: variant name -> its runs, from
    ``train_variants`` of every sweep's specs), each value against ``base``'s, with
    ``histories`` (variant name -> its runs' histories) for the figure."""
    out = {}
    for knob, specs in plan.items():
        variants = {name: trained[name] for name in specs}
        values = [getattr(spec, knob) for spec in specs.values()]
        out[knob] = {**sweep_summary(knob, values, variants, getattr(base, knob), grouping, seed),
                     "centre": getattr(base, knob), "histories": histories(variants)}
    return out


def histories(variants: dict[str, list[Run]]) -> dict[str, list[dict]]:
    """Variant name -> the histories of its runs, for ``plots.plot_runs``."""
    return {name: [r.history for r in runs] for name, runs in variants.items()}


