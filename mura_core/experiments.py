"""Experiments of the report: training runs stored by their settings, variants trained from
several seeds, architecture comparisons and hyperparameter sweeps, decided with statistics.

A run is a ``RunSpec`` (architecture, seed, and every training setting that decides its
numbers) on one data cache, input size and backend; it lives in ``RUNS/<arch>-<hash>/``
(``history.json``, ``last.npz`` and ``predictions.npz`` as written by ``train.train``).
``train_or_load`` trains a run only when no completed run with the same identity exists, and
resumes an interrupted one; a stored run whose files do not load (a truncated history.json,
an unreadable last.npz, predictions.npz or checkpoint) is named with its error on the log and
trained again, never a reason for the report to fail. It holds the run folder's lock
throughout (``locks``). So the baseline trained in 02 is the baseline of 04 and the centre
point of 05's sweeps when the profile gives them the same settings: same seed, same settings,
same numbers.

An executor (``executors.py``) runs a list of specs, in this process or on a Dask cluster;
``run_all`` hands it the specs and returns the runs in the same order. Wherever a run trains,
it checkpoints at its evaluation points (``train_or_load``), so a run whose process died
resumes from its last evaluation instead of starting over.

A variant (an architecture, or one value of a swept knob) is trained from each of a list of
seeds; its valid predictions (seeds x images) go to ``stats``: every metric with a bootstrap
interval over patients and seeds, and each variant against the reference one (the baseline,
or the sweep's centre value) with the interval of the difference and McNemar's test.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import stats
from .files import atomic_write_text

#: Training settings that enter a run's identity (besides arch, seed, input size, backend,
#: and the cache key), all fields of ``RunSpec``.
RUN_SETTINGS = ("steps", "batch_size", "lr", "momentum", "weight_decay", "eval_every",
                "train_eval_size", "augment", "dropout", "warmup_steps", "schedule", "min_lr")
SWEEP_KNOBS = {"batch_size": "batch size", "lr": "learning rate", "momentum": "momentum"}
#: The valid metrics a comparison reports, with intervals.
COMPARED = ("image_accuracy", "patient_accuracy", "study_accuracy", "study_kappa")
#: A run folder's record of a diverged run (the trainer leaves no last.npz then).
DIVERGED_NAME = "diverged.json"


@dataclass(frozen=True)
class RunSpec:
    """One training run to do: the network, the seed (weights, data order, dropout) and every
    setting that decides its numbers; ``label`` only names it in logs and tables."""

    arch: str
    seed: int
    steps: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float = 0.0
    eval_every: int | None = None
    train_eval_size: int | None = None
    augment: bool = False
    dropout: float = 0.5
    warmup_steps: int = 0
    schedule: str = "none"
    min_lr: float = 0.0
    label: str = ""

    def settings(self) -> dict:
        return {k: getattr(self, k) for k in RUN_SETTINGS}

    def replace(self, **changes) -> "RunSpec":
        return dataclasses.replace(self, **changes)

    def run_id(self, *, input_size: int, backend: str, cache_key: str) -> str:
        """``<arch>-<12 hex digits>``: a hash of everything that decides the run's numbers."""
        identity = {"arch": self.arch, "input_size": int(input_size), "seed": int(self.seed),
                    "backend": backend, "cache_key": cache_key, **self.settings()}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return f"{self.arch}-{digest[:12]}"


@dataclass
class Run:
    """One finished (or diverged) training run: its spec, history and folder, the final
    model's valid predictions, where and how long it ran (``worker``, set by the executor,
    and ``wall_s``; None and 0 for a run reused from its folder) and the step it resumed
    from, if it did."""

    spec: RunSpec
    history: dict
    folder: Path
    reused: bool = False
    valid_probs: np.ndarray | None = None
    worker: str | None = None  # who trained it now; None for a run reused from its folder
    wall_s: float = 0.0
    resumed_from: int | None = None  # the checkpoint's step when training resumed from one

    @property
    def name(self) -> str:
        return self.spec.label or self.spec.arch

    @property
    def settings(self) -> dict:
        return self.spec.settings()

    @property
    def model_path(self) -> Path:
        return self.folder / "last.npz"

    @property
    def diverged(self) -> bool:
        return self.history.get("status") == "diverged"

    @property
    def last_eval(self) -> dict | None:
        evals = self.history.get("evals") or []
        return evals[-1] if evals else None

    @property
    def seconds_per_step(self) -> float | None:
        return (self.history.get("timing") or {}).get("time_per_step_s")

    @property
    def examples_seen(self) -> int:
        return int(self.history.get("step", 0)) * int(self.spec.batch_size)


def _completed(folder: Path, steps: int, damaged) -> tuple[dict, np.ndarray] | None:
    """(history, valid predictions) of the completed run of ``steps`` steps stored in
    ``folder``, or None. A run whose history.json, last.npz or predictions.npz does not load
    is reported through ``damaged(path, error)`` and counts as absent."""
    from .nn.serialization import read_npz  # noqa: PLC0415
    from .train import PREDICTIONS_NAME, load_history  # noqa: PLC0415

    path, model, predictions = folder / "history.json", folder / "last.npz", folder / PREDICTIONS_NAME
    if not path.exists() or not model.exists():
        return None
    try:
        history = load_history(path)
    except (OSError, ValueError) as exc:
        damaged(path, exc)
        return None
    if history.get("status") != "completed" or history.get("step") != steps:
        return None
    for file, entry in ((model, "__model__"), (predictions, "valid")):
        try:
            arrays = read_npz(file)
            if entry not in arrays:
                raise ValueError(f"no {entry!r} entry")
        except (OSError, ValueError) as exc:
            damaged(file, exc)
            return None
    return history, arrays["valid"]


def _stored_divergence(folder: Path, damaged) -> dict | None:
    """The record of a diverged run in ``folder`` (``diverged.json``), or None."""
    path = folder / "diverged.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        damaged(path, exc)
        return None


def _error_text(path: Path, exc: BaseException) -> str:
    text = str(exc)
    # ModelFileError names the file already; a JSON error does not.
    return text if str(path) in text else f"{path}: {exc.__class__.__name__}: {text}"


def run_folder(spec: RunSpec, cache, runs_dir, backend: str = "numpy") -> Path:
    """``RUNS/<run_id>``: where the run of ``spec`` on ``cache`` lives."""
    return Path(runs_dir) / spec.run_id(input_size=cache.size, backend=backend,
                                        cache_key=cache.key)


def _label(spec: RunSpec) -> str:
    return f"{spec.label or spec.arch} (seed {spec.seed})"


def _damage_log(spec: RunSpec, log):
    def damaged(path: Path, exc: BaseException) -> None:
        log(f"{_label(spec)}: the stored run does not load ({_error_text(path, exc)}); "
            "training it again")
    return damaged


def stored_run(spec: RunSpec, cache, runs_dir, *, backend: str = "numpy",
               log=print) -> Run | None:
    """The completed (or diverged) run of ``spec`` stored in its folder, or None when it
    still has to be trained (or finished). A stored run whose files do not load is named on
    the log and counts as absent."""
    folder = run_folder(spec, cache, runs_dir, backend)
    damaged = _damage_log(spec, log)
    done = _completed(folder, spec.steps, damaged)
    if done is not None:
        log(f"{_label(spec)}: reusing the completed run {folder.name}")
        return Run(spec, done[0], folder, reused=True, valid_probs=done[1], worker=None)
    history = _stored_divergence(folder, damaged)
    if history is not None:
        log(f"{_label(spec)}: reusing the diverged run {folder.name}")
        return Run(spec, history, folder, reused=True, worker=None)
    return None


def train_or_load(spec: RunSpec, cache, runs_dir, *, backend: str = "numpy",
                  progress: bool = False, checkpoint_every: int | None = None,
                  log=print) -> Run:
    """Train ``spec`` on ``cache``, or load the completed run that has exactly its identity.

    An interrupted run (its process stopped or killed) resumes from the checkpoint in its
    folder; the run then says so (``resumed_from``, and a log line). Checkpoints are written
    every ``checkpoint_every`` steps, by default at the run's evaluation points
    (``spec.eval_every``), besides the trainer's own (epoch ends, the end): where to write
    them does not change a number, so it is not part of the run's identity. The run folder is
    locked throughout (``locks``).

    A NaN/inf loss does not raise: the run comes back with ``diverged`` set and the history up
    to its last evaluation (so a sweep can show a learning rate that is too large)."""
    from .locks import hold_folder  # noqa: PLC0415

    folder = run_folder(spec, cache, runs_dir, backend)
    start = time.perf_counter()
    with hold_folder(folder, "run folder"):
        run = stored_run(spec, cache, runs_dir, backend=backend, log=log)
        if run is None:
            run = _train(spec, cache, folder, backend=backend, progress=progress,
                         checkpoint_every=checkpoint_every or spec.eval_every, log=log)
            run.wall_s = time.perf_counter() - start
    return run


def _train(spec: RunSpec, cache, folder: Path, *, backend: str, progress: bool,
           checkpoint_every: int | None, log) -> Run:
    """Train (or resume, or train again) the run of ``spec`` in the locked ``folder``."""
    from .checkpoint import checkpoint_step  # noqa: PLC0415
    from .nn.models import build_model  # noqa: PLC0415
    from .nn.serialization import ModelFileError  # noqa: PLC0415
    from .train import (CHECKPOINT_NAME, TrainingDiverged, earlier_run_files,  # noqa: PLC0415
                        load_history, train)

    label, damaged = _label(spec), _damage_log(spec, log)
    settings = {k: v for k, v in spec.settings().items() if k != "dropout"}

    def run(resume: bool):
        model = build_model(spec.arch, input_size=cache.size, seed=spec.seed, backend=backend,
                            dropout=spec.dropout)
        return train(model, cache, **settings, seed=spec.seed, out_dir=str(folder),
                     resume=resume, overwrite=not resume, progress=progress,
                     checkpoint_every=checkpoint_every)

    # An unfinished run resumes from its checkpoint; any other files left in the folder
    # (damaged, or a run killed before its first checkpoint) are replaced.
    checkpoint = folder / CHECKPOINT_NAME
    resumed_from = None
    if checkpoint.exists():
        try:
            resumed_from = checkpoint_step(checkpoint)
        except ValueError as exc:
            damaged(checkpoint, exc)
    if resumed_from is not None:
        log(f"{label}: resuming {folder.name} from its checkpoint at step {resumed_from} of "
            f"{spec.steps}")
    else:
        if earlier_run_files(folder) and not checkpoint.exists():
            log(f"{label}: {folder} holds an unfinished run with no checkpoint; training it "
                "from step 0")
        log(f"{label}: training {spec.steps} steps (batch {spec.batch_size}, lr {spec.lr:g}, "
            f"momentum {spec.momentum:g}) -> {folder}")
    try:
        try:
            result = run(resume=resumed_from is not None)
        except ModelFileError as exc:  # the checkpoint to resume from does not load
            damaged(checkpoint, exc)
            resumed_from = None
            result = run(resume=False)
    except TrainingDiverged as exc:
        history = load_history(folder) if (folder / "history.json").exists() else {
            "loss": [], "evals": []}
        history["status"] = "diverged"
        history["error"] = str(exc)
        history["diverged_at_step"] = exc.step
        atomic_write_text(folder / DIVERGED_NAME, json.dumps(history))
        log(f"{label}: diverged at step {exc.step} (lr {spec.lr:g})")
        return Run(spec, history, folder, resumed_from=resumed_from)
    # The resume checkpoint (model + momentum) and the best-so-far model are only needed while
    # the run is unfinished; last.npz, predictions.npz and history.json are what is read.
    for name in (CHECKPOINT_NAME, "best.npz"):
        (folder / name).unlink(missing_ok=True)
    done = _completed(folder, spec.steps, damaged)
    return Run(spec, result.history, folder, valid_probs=None if done is None else done[1],
               resumed_from=resumed_from)


def run_all(specs: list[RunSpec], cache, runs_dir, *, backend: str = "numpy", executor=None,
            log=print) -> list[Run]:
    """The runs of ``specs``, in the same order, by ``executor`` (default: one after another
    in this process). Specs that differ only in their label (the centre value of three
    sweeps, say) are the same run: it is trained once and handed back under each label."""
    from .executors import LocalExecutor  # noqa: PLC0415

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


# --------------------------------------------------------------------------- variants


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


# --------------------------------------------------------------------------- tables


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


def variant_row(name: str, runs: list[Run], design: stats.Design, seed: int = 0) -> dict:
    """One table row of a variant: parameters, time per step, steps, seeds, final loss and
    train accuracy (means over seeds), and every valid metric of ``COMPARED`` pooled over the
    seeds with its bootstrap interval (``{metric}`` value, ``{metric}_low``, ``{metric}_high``).
    A variant with a diverged run has no valid metrics."""
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
    cis = stats.intervals(design, probs, COMPARED, seed=seed) if probs is not None else {}
    for metric in COMPARED:
        ci = cis.get(metric, {})
        row[metric], row[f"{metric}_low"], row[f"{metric}_high"] = (
            ci.get("value"), ci.get("low"), ci.get("high"))
    return row


def comparisons(variants: dict[str, list[Run]], reference: str, design: stats.Design,
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
                    **stats.compare(design, probs, ref, metric, seed=seed)})
    return out


def architecture_summary(variants: dict[str, list[Run]], design: stats.Design,
                         seed: int = 0) -> dict:
    """{"table": one ``variant_row`` per architecture, "comparisons": each against the
    baseline (``comparisons``)}."""
    return {"table": [variant_row(name, runs, design, seed) for name, runs in variants.items()],
            "comparisons": comparisons(variants, "baseline", design, seed=seed)}


def sweep_summary(knob: str, values, variants: dict[str, list[Run]], centre, design: stats.Design,
                  seed: int = 0) -> dict:
    """{"rows": per value its ``variant_row`` with ``value``, batch size, lr, momentum, steps
    and examples; "comparisons": each value against the ``centre`` value}."""
    rows = []
    for value, (name, runs) in zip(values, variants.items()):
        spec = runs[0].spec
        rows.append({**variant_row(name, runs, design, seed), "value": value,
                     "batch_size": spec.batch_size, "lr": spec.lr, "momentum": spec.momentum,
                     "examples": spec.steps * spec.batch_size})
    return {"rows": rows,
            "comparisons": comparisons(variants, sweep_label(knob, centre), design, seed=seed)}


def histories(variants: dict[str, list[Run]]) -> dict[str, list[dict]]:
    """Variant name -> the histories of its runs, for ``plots.plot_runs``."""
    return {name: [r.history for r in runs] for name, runs in variants.items()}


def compact_history(history: dict) -> dict:
    """The loss per step and the headline metrics at each evaluation point of a history."""
    keys = ("image_accuracy", "patient_accuracy", "study_accuracy", "loss")
    return {"loss": history.get("loss", []), "status": history.get("status"),
            "evals": [{"step": e["step"], "epoch": e.get("epoch"),
                       **{split: {k: e[split].get(k) for k in keys}
                          for split in ("train", "valid") if split in e}}
                      for e in history.get("evals", [])]}


def run_record(run: Run) -> dict:
    """What the results JSON keeps of a run: its identity, where and how long it ran."""
    return {"name": run.name, "arch": run.spec.arch, "seed": run.spec.seed,
            "folder": run.folder.name, "reused": run.reused, "worker": run.worker,
            "wall_s": round(run.wall_s, 2), "resumed_from_step": run.resumed_from,
            "status": run.history.get("status")}
