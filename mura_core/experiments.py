"""Experiments of the report: training runs stored by their settings, architecture
comparisons, hyperparameter sweeps, and the tables the notebooks show.

A run is identified by everything that decides its numbers (architecture, input size, seed,
backend, data cache key, and the training settings); it lives in ``RUNS/<arch>-<hash>/``
(``history.json`` and ``last.npz`` as written by ``train.train``). ``train_or_load`` trains a
run only when no completed run with the same settings exists, and resumes an interrupted one;
a stored run whose files do not load (a truncated history.json, an unreadable last.npz or
checkpoint) is named with its error on the log and trained again, never a reason for the
report to fail. It holds the run folder's lock throughout (``locks``).
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


def _completed(folder: Path, steps: int, damaged) -> dict | None:
    """The history of the completed run of ``steps`` steps stored in ``folder``, or None.
    A run whose history.json or last.npz does not load is reported through ``damaged(path,
    error)`` and counts as absent."""
    from .nn.serialization import read_npz  # noqa: PLC0415
    from .train import load_history  # noqa: PLC0415

    path, model = folder / "history.json", folder / "last.npz"
    if not path.exists() or not model.exists():
        return None
    try:
        history = load_history(path)
    except (OSError, ValueError) as exc:
        damaged(path, exc)
        return None
    if history.get("status") != "completed" or history.get("step") != steps:
        return None
    try:
        if "__model__" not in read_npz(model):
            raise ValueError("no '__model__' entry: not a model file")
    except (OSError, ValueError) as exc:
        damaged(model, exc)
        return None
    return history


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


def train_or_load(arch: str, cache, runs_dir, *, steps: int, batch_size: int, lr: float,
                  momentum: float, weight_decay: float = 0.0, eval_every: int | None = None,
                  train_eval_size: int | None = None, augment: bool = False,
                  dropout: float = 0.5, seed: int = 0, backend: str = "numpy",
                  name: str | None = None, progress: bool = False, log=print) -> Run:
    """Train ``arch`` on ``cache`` with these settings, or load the completed run that has
    exactly them. A NaN/inf loss does not raise: the run comes back with ``diverged`` set and
    the history up to its last evaluation (so a sweep can show a learning rate that is too
    large)."""
    from .locks import hold_folder  # noqa: PLC0415

    settings = dict(steps=int(steps), batch_size=int(batch_size), lr=float(lr),
                    momentum=float(momentum), weight_decay=float(weight_decay),
                    eval_every=eval_every, train_eval_size=train_eval_size, augment=augment,
                    dropout=float(dropout))
    ident = run_id(arch, settings, input_size=cache.size, seed=seed, backend=backend,
                   cache_key=cache.key)
    folder = Path(runs_dir) / ident
    label = name or arch
    with hold_folder(folder, "run folder"):
        return _train_or_load_locked(arch, cache, folder, label, settings, seed=seed,
                                     backend=backend, progress=progress, log=log)


def _train_or_load_locked(arch: str, cache, folder: Path, label: str, settings: dict, *,
                          seed: int, backend: str, progress: bool, log) -> Run:
    """``train_or_load`` with ``folder`` locked: reuse, resume, or train (again)."""
    from .files import write_json  # noqa: PLC0415
    from .nn.models import build_model  # noqa: PLC0415
    from .nn.serialization import ModelFileError  # noqa: PLC0415
    from .train import (CHECKPOINT_NAME, TrainingDiverged, earlier_run_files,  # noqa: PLC0415
                        load_history, train)

    def damaged(path: Path, exc: BaseException) -> None:
        log(f"{label}: the stored run does not load ({_error_text(path, exc)}); training it again")

    history = _completed(folder, settings["steps"], damaged)
    if history is not None:
        log(f"{label}: reusing the completed run {folder.name} (same settings)")
        return Run(label, settings, history, folder, reused=True)
    history = _stored_divergence(folder, damaged)
    if history is not None:
        log(f"{label}: reusing the diverged run {folder.name} (same settings)")
        return Run(label, settings, history, folder, reused=True)
    s = settings
    log(f"{label}: training {s['steps']} steps (batch {s['batch_size']}, lr {s['lr']:g}, momentum "
        f"{s['momentum']:g}) -> {folder}")

    def run(resume: bool):
        model = build_model(arch, input_size=cache.size, seed=seed, backend=backend,
                            dropout=s["dropout"])
        return train(model, cache, steps=s["steps"], batch_size=s["batch_size"], lr=s["lr"],
                     momentum=s["momentum"], weight_decay=s["weight_decay"],
                     eval_every=s["eval_every"], train_eval_size=s["train_eval_size"],
                     augment=s["augment"], seed=seed, out_dir=str(folder), resume=resume,
                     overwrite=not resume, progress=progress)

    # An unfinished run resumes from its checkpoint; any other files left in the folder
    # (damaged, or a run killed before its first checkpoint) are replaced.
    resume = (folder / CHECKPOINT_NAME).exists()
    if not resume and earlier_run_files(folder):
        log(f"{label}: {folder} holds an unfinished run with no checkpoint; training it from step 0")
    try:
        try:
            result = run(resume)
        except ModelFileError as exc:  # the checkpoint to resume from does not load
            damaged(folder / CHECKPOINT_NAME, exc)
            result = run(resume=False)
    except TrainingDiverged as exc:
        history = load_history(folder) if (folder / "history.json").exists() else {
            "loss": [], "evals": []}
        history["status"] = "diverged"
        history["error"] = str(exc)
        history["diverged_at_step"] = exc.step
        write_json(folder / "diverged.json", history, indent=None)
        log(f"{label}: diverged at step {exc.step} (lr {s['lr']:g})")
        return Run(label, settings, history, folder)
    # The resume checkpoint (model + momentum) and the best-so-far model are only needed while
    # the run is unfinished; last.npz and history.json are what the notebooks read.
    for name in (CHECKPOINT_NAME, "best.npz"):
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
