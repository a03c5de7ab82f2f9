"""Experiments of the report: training runs stored by their settings, architecture
comparisons, hyperparameter sweeps, and the tables the notebooks show.

A run is identified by everything that decides its numbers (architecture, input size, seed,
backend, data cache key, and the training settings); it lives in ``RUNS/<arch>-<hash>/``
(``history.json`` and ``last.npz`` as written by ``train.train``). ``train_or_load`` trains a
run only when no completed run with the same settings exists, and resumes an interrupted one.
So the baseline trained in 02 is the baseline of 04 and the centre point of 05's sweeps when
the profile gives them the same settings, as it does: same seed, same settings, same numbers.

Comparisons: ``compare_architectures`` trains every variant for the same number of steps from
the same seed; ``sweep`` varies one knob (batch size, learning rate or momentum) with every run
seeing the same number of training examples.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


#: Training settings that enter a run's identity (besides arch, input size, seed, backend,
#: and the cache key).
RUN_SETTINGS = ("steps", "batch_size", "lr", "momentum", "weight_decay", "eval_every",
                "train_eval_size", "augment", "dropout")
SWEEP_KNOBS = {"batch_size": "batch size", "lr": "learning rate", "momentum": "momentum"}


@dataclass
class Run:
    """One finished (or diverged) training run."""

    name: str
    settings: dict
    history: dict
    folder: Path
    reused: bool = False

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
        return int(self.history.get("step", 0)) * int(self.settings["batch_size"])


def run_id(arch: str, settings: dict, *, input_size: int, seed: int, backend: str,
           cache_key: str) -> str:
    """``<arch>-<12 hex digits>``: a hash of everything that decides the run's numbers."""
    identity = {"arch": arch, "input_size": int(input_size), "seed": int(seed),
                "backend": backend, "cache_key": cache_key,
                **{k: settings.get(k) for k in RUN_SETTINGS}}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"{arch}-{digest[:12]}"


def _completed(folder: Path, steps: int) -> dict | None:
    path = folder / "history.json"
    if not path.exists() or not (folder / "last.npz").exists():
        return None
    history = json.loads(path.read_text())
    if history.get("status") == "completed" and history.get("step") == steps:
        return history
    return None


def train_or_load(arch: str, cache, runs_dir, *, steps: int, batch_size: int, lr: float,
                  momentum: float, weight_decay: float = 0.0, eval_every: int | None = None,
                  train_eval_size: int | None = None, augment: bool = False,
                  dropout: float = 0.5, seed: int = 0, backend: str = "numpy",
                  name: str | None = None, progress: bool = False, log=print) -> Run:
    """Train ``arch`` on ``cache`` with these settings, or load the completed run that has
    exactly them. A NaN/inf loss does not raise: the run comes back with ``diverged`` set and
    the history up to its last evaluation (so a sweep can show a learning rate that is too
    large)."""
    from .nn.models import build_model  # noqa: PLC0415
    from .train import TrainingDiverged, load_history, train  # noqa: PLC0415

    settings = dict(steps=int(steps), batch_size=int(batch_size), lr=float(lr),
                    momentum=float(momentum), weight_decay=float(weight_decay),
                    eval_every=eval_every, train_eval_size=train_eval_size, augment=augment,
                    dropout=float(dropout))
    ident = run_id(arch, settings, input_size=cache.size, seed=seed, backend=backend,
                   cache_key=cache.key)
    folder = Path(runs_dir) / ident
    label = name or arch
    history = _completed(folder, settings["steps"])
    if history is not None:
        log(f"{label}: reusing the completed run {folder.name} (same settings)")
        return Run(label, settings, history, folder, reused=True)
    diverged = folder / "diverged.json"
    if diverged.exists():
        log(f"{label}: reusing the diverged run {folder.name} (same settings)")
        return Run(label, settings, json.loads(diverged.read_text()), folder, reused=True)
    model = build_model(arch, input_size=cache.size, seed=seed, backend=backend,
                        dropout=dropout)
    log(f"{label}: training {steps} steps (batch {batch_size}, lr {lr:g}, momentum "
        f"{momentum:g}) -> {folder}")
    try:
        result = train(model, cache, steps=settings["steps"], batch_size=settings["batch_size"],
                       lr=settings["lr"], momentum=settings["momentum"],
                       weight_decay=settings["weight_decay"], eval_every=eval_every,
                       train_eval_size=train_eval_size, augment=augment, seed=seed,
                       out_dir=str(folder), resume=True, progress=progress)
    except TrainingDiverged as exc:
        history = load_history(folder) if (folder / "history.json").exists() else {
            "loss": [], "evals": []}
        history["status"] = "diverged"
        history["error"] = str(exc)
        history["diverged_at_step"] = exc.step
        diverged.write_text(json.dumps(history))
        log(f"{label}: diverged at step {exc.step} (lr {lr:g})")
        return Run(label, settings, history, folder)
    # The resume checkpoint (model + momentum) and the best-so-far model are only needed while
    # the run is unfinished; last.npz and history.json are what the notebooks read.
    for name in ("checkpoint.npz", "best.npz"):
        (folder / name).unlink(missing_ok=True)
    return Run(label, settings, result.history, folder)


def compare_architectures(names, cache, runs_dir, **settings) -> dict[str, Run]:
    """Train every architecture in ``names`` with the same settings (steps, seed, ...)."""
    return {name: train_or_load(name, cache, runs_dir, **settings) for name in names}


def sweep_settings(knob: str, values, base: dict, examples: int,
                   eval_every_examples: int) -> list[dict]:
    """The settings of each run of a sweep over ``knob``: ``base`` with ``knob`` set to each
    value, and steps / eval_every chosen so every run sees ``examples`` training examples
    (rounded down to whole batches) and is evaluated every ``eval_every_examples``."""
    if knob not in SWEEP_KNOBS:
        raise ValueError(f"cannot sweep {knob!r}; choose one of {', '.join(SWEEP_KNOBS)}")
    runs = []
    for value in values:
        s = dict(base, **{knob: value})
        s["steps"] = max(1, int(examples) // int(s["batch_size"]))
        s["eval_every"] = max(1, int(eval_every_examples) // int(s["batch_size"]))
        runs.append(s)
    return runs


def sweep(knob: str, values, cache, runs_dir, *, base: dict, examples: int,
          eval_every_examples: int, arch: str = "baseline", log=print, **common) -> dict:
    """Runs with ``knob`` at each of ``values`` (see ``sweep_settings``); value -> Run."""
    out = {}
    for value, s in zip(values, sweep_settings(knob, values, base, examples,
                                               eval_every_examples)):
        label = f"{SWEEP_KNOBS[knob]} {value:g}"
        out[value] = train_or_load(arch, cache, runs_dir, name=label, log=log, **common, **s)
    return out


# --------------------------------------------------------------------------- tables


def _final(run: Run, split: str, key: str):
    last = run.last_eval
    if last is None:
        return None
    value = last.get(split, {}).get(key)
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) \
        else value


def final_train_loss(history: dict, window: int = 10) -> float | None:
    """Mean training loss over the last ``window`` steps (None when there is none or it is
    not finite)."""
    loss = np.asarray(history.get("loss") or [], dtype=np.float64)[-window:]
    if loss.size == 0 or not np.all(np.isfinite(loss)):
        return None
    return float(loss.mean())


def architecture_table(runs: dict[str, Run], models: dict | None = None) -> list[dict]:
    """One row per architecture: parameters, time per step, steps, and the final train and
    valid metrics (per image accuracy, per patient, per study, study kappa)."""
    rows = []
    for name, run in runs.items():
        params = (run.history.get("model") or {}).get("num_parameters")
        rows.append({
            "name": name,
            "params": params,
            "seconds_per_step": run.seconds_per_step,
            "steps": int(run.history.get("step", 0)),
            "final_train_loss": None if run.diverged else final_train_loss(run.history),
            "train_accuracy": _final(run, "train", "image_accuracy"),
            "valid_accuracy": _final(run, "valid", "image_accuracy"),
            "valid_patient_accuracy": _final(run, "valid", "patient_accuracy"),
            "valid_study_accuracy": _final(run, "valid", "study_accuracy"),
            "valid_kappa": _final(run, "valid", "study_kappa"),
            "diverged": run.diverged,
            "diverged_at_step": run.history.get("diverged_at_step"),
            "reused": run.reused,
        })
    return rows


def sweep_table(knob: str, runs: dict) -> list[dict]:
    """One row per value of a sweep: the setting, steps, examples seen, final loss and the
    final train/valid per image accuracy."""
    rows = []
    for value, run in runs.items():
        rows.append({
            "value": value,
            "batch_size": run.settings["batch_size"],
            "lr": run.settings["lr"],
            "momentum": run.settings["momentum"],
            "steps": run.settings["steps"],
            "examples": run.settings["steps"] * run.settings["batch_size"],
            "final_train_loss": None if run.diverged else final_train_loss(run.history),
            "train_accuracy": _final(run, "train", "image_accuracy"),
            "valid_accuracy": _final(run, "valid", "image_accuracy"),
            "seconds_per_step": run.seconds_per_step,
            "diverged": run.diverged,
            "reused": run.reused,
        })
    return rows


def histories(runs: dict) -> dict[str, dict]:
    """Run name -> history, for ``plots.plot_runs``."""
    return {run.name: run.history for run in runs.values()}


def compact_history(history: dict) -> dict:
    """The loss per step and the headline metrics at each evaluation point of a history."""
    keys = ("image_accuracy", "patient_accuracy", "study_accuracy", "loss")
    return {"loss": history.get("loss", []), "status": history.get("status"),
            "evals": [{"step": e["step"], "epoch": e.get("epoch"),
                       **{split: {k: e[split].get(k) for k in keys}
                          for split in ("train", "valid") if split in e}}
                      for e in history.get("evals", [])]}
