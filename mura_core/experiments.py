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

from . import metrics

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
    from .models import build_model  # noqa: PLC0415
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


# --------------------------------------------------------------------------- data views


def data_counts(cache) -> list[dict]:
    """Studies and images per body part and split (normal / abnormal), plus a total row.

    Counted from the cache, i.e. the images the network actually sees (undecodable files
    left out)."""
    rows = {}
    for split in ("train", "valid"):
        part = cache.split(split)
        labels = np.asarray(part.labels)
        for body in np.unique(part.body_parts).tolist():
            mask = part.body_parts == body
            row = rows.setdefault(body, {"body_part": body.removeprefix("XR_").lower()})
            studies = {sid: lab for sid, lab in zip(part.study_ids[mask], labels[mask])}
            row[f"{split}_studies"] = len(studies)
            row[f"{split}_images"] = int(mask.sum())
            row[f"{split}_normal"] = int((labels[mask] == 1).sum())
            row[f"{split}_abnormal"] = int((labels[mask] == 0).sum())
    table = [rows[k] for k in sorted(rows)]
    total = {"body_part": "all"}
    for key in {k for r in table for k in r if k != "body_part"}:
        total[key] = sum(r.get(key, 0) for r in table)
    for r in table:
        for split in ("train", "valid"):
            for kind in ("studies", "images", "normal", "abnormal"):
                r.setdefault(f"{split}_{kind}", 0)
    return table + [total]


def pick_samples(split, per_class: int, seed: int = 0) -> np.ndarray:
    """Row indices of ``per_class`` normal and ``per_class`` abnormal images of a cached split,
    each from a different body part where possible (normal ones first)."""
    rng = np.random.default_rng([seed, 11])
    labels = np.asarray(split.labels)
    chosen = []
    for label in (1, 0):
        rows = rng.permutation(np.flatnonzero(labels == label))
        seen, picked = set(), []
        for row in rows:  # first pass: one per body part
            if split.body_parts[row] not in seen:
                seen.add(split.body_parts[row])
                picked.append(int(row))
            if len(picked) == per_class:
                break
        for row in rows:  # then fill up
            if len(picked) == per_class:
                break
            if int(row) not in picked:
                picked.append(int(row))
        chosen += picked
    return np.array(chosen, dtype=np.int64)


# --------------------------------------------------------------------------- notebook views


def gradcheck_batch(cache, size: int, n: int = 2, seed: int = 0):
    """``n`` train images (normal and abnormal alternating), resized to ``size`` and
    standardized, as float64 ``(n, 1, size, size)``, with their float64 labels ``(n,)``."""
    from PIL import Image  # noqa: PLC0415

    split = cache.split("train")
    rows = pick_samples(split, max(1, (n + 1) // 2), seed)[:n]
    small = [np.asarray(Image.fromarray(np.asarray(split.images[i])).resize((size, size),
                                                                            Image.BILINEAR))
             for i in rows]
    x = (np.stack(small).astype(np.float64) - cache.mean) / cache.std
    return x[:, None], np.asarray(split.labels[rows], dtype=np.float64)


def _duration(seconds) -> str:
    if seconds is None:
        return "an unknown time"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def training_summary(run: Run, cache) -> str:
    """A few sentences on a training run, from its history."""
    h = run.history
    timing = h.get("timing") or {}
    n_train = len(cache.split("train"))
    steps = int(h.get("step", 0))
    epochs = steps * run.settings["batch_size"] / max(1, n_train)
    text = (f"The {h.get('model', {}).get('arch', run.name)} network "
            f"({(h.get('model') or {}).get('num_parameters', 0):,} parameters) was trained for "
            f"{steps:,} steps of {run.settings['batch_size']} images, {epochs:.1f} epochs of the "
            f"{n_train:,} train images, in {_duration(timing.get('wall_s'))} "
            f"({timing.get('time_per_step_s') or float('nan'):.2f} s per training step).")
    loss = h.get("loss") or []
    if loss:
        text += (f" The training loss went from {float(np.mean(loss[:5])):.3f} (mean of the "
                 f"first 5 steps) to {final_train_loss(h):.3f} (mean of the last 10).")
    last = run.last_eval
    if last:
        valid = last["valid"]
        text += (f" At the last evaluation the valid accuracy per image was "
                 f"{_pct(valid.get('image_accuracy'))} (always predicting the majority class: "
                 f"{_pct((valid.get('baseline') or {}).get('image_accuracy'))}).")
    if run.diverged:
        text += f" **Training diverged:** {h.get('error')}"
    if run.reused:
        text += (" (These numbers come from a completed run with exactly these settings, "
                 f"`{run.folder.name}`, loaded rather than trained again.)")
    return text


def prediction_rows(split, rows, probs) -> list[dict]:
    """One dict per predicted file: where it is (body part, patient, study, image, path),
    P(normal), the predicted and the true label."""
    out = []
    for row, prob in zip(rows, probs):
        path = Path(split.records[row].path)
        body, patient, study, image = path.parts[-4:]
        out.append({"body_part": body.removeprefix("XR_").lower(),
                    "patient": patient.removeprefix("patient"), "study": study,
                    "image": image, "path": str(path), "p_normal": float(prob),
                    "predicted": "normal" if prob >= 0.5 else "abnormal",
                    "truth": "normal" if split.labels[row] == 1 else "abnormal"})
    return out


def evaluate_splits(model, cache, max_images: int | None = None, seed: int = 0) -> dict:
    """``metrics.metric_table`` of train and valid (at most ``max_images`` images each, whole
    patients). The majority-class baseline of both predicts the train split's majority."""
    from .train import evaluate, train_eval_indices  # noqa: PLC0415

    majority = metrics.majority_class(np.asarray(cache.split("train").labels).astype(np.int64))
    tables = {}
    for name in ("train", "valid"):
        split = cache.split(name)
        rows = train_eval_indices(split, max_images, seed)
        _, tables[name] = evaluate(model, split, cache.mean, cache.std, indices=rows,
                                   majority=majority)
    return tables


def metric_rows(tables: dict) -> list[dict]:
    """Rows ``{"metric", "train", "valid"}`` (formatted strings) of ``evaluate_splits``."""
    return [{"metric": label, **{split: metrics.format_metric(metrics.metric_value(t, key), kind,
                                                              missing="–")
                                 for split, t in tables.items()}}
            for label, key, kind in metrics.METRIC_ROWS]


def body_part_rows(table: dict) -> list[dict]:
    """One row per body part of a metric table (counts and accuracies)."""
    return [{"body_part": part.removeprefix("XR_").lower(), **{
        k: t.get(k) for k in ("n_images", "image_accuracy", "patient_accuracy",
                              "study_accuracy", "study_kappa")}}
            for part, t in sorted(table["per_body_part"].items())]


def evaluation_summary(tables: dict) -> str:
    """A paragraph on the evaluation, from the numbers of ``evaluate_splits``."""
    valid, train = tables["valid"], tables["train"]
    base = valid.get("baseline") or {}
    cls = "normal" if valid.get("majority_class", 1) == 1 else "abnormal"
    gap = None
    if train.get("image_accuracy") is not None and valid.get("image_accuracy") is not None:
        gap = 100 * (train["image_accuracy"] - valid["image_accuracy"])
    kappa = valid.get("study_kappa")
    text = (f"On valid the network classifies {_pct(valid.get('image_accuracy'))} of the "
            f"images, {_pct(valid.get('patient_accuracy'))} of the patients and "
            f"{_pct(valid.get('study_accuracy'))} of the studies correctly (study kappa "
            f"{'–' if kappa is None else f'{kappa:.3f}'}), against "
            f"{_pct(base.get('image_accuracy'))}, {_pct(base.get('patient_accuracy'))} and "
            f"{_pct(base.get('study_accuracy'))} for always predicting {cls}.")
    if gap is not None:
        text += (f" Train accuracy per image is {_pct(train['image_accuracy'])}, "
                 f"{abs(gap):.1f} points {'above' if gap >= 0 else 'below'} valid.")
    return text


def compact_history(history: dict) -> dict:
    """The loss per step and the headline metrics at each evaluation point of a history."""
    keys = ("image_accuracy", "patient_accuracy", "study_accuracy", "loss")
    return {"loss": history.get("loss", []), "status": history.get("status"),
            "evals": [{"step": e["step"], "epoch": e.get("epoch"),
                       **{split: {k: e[split].get(k) for k in keys}
                          for split in ("train", "valid") if split in e}}
                      for e in history.get("evals", [])]}


SWEEP_FORMATS = {"train_accuracy": _pct, "valid_accuracy": _pct,
                 "final_train_loss": lambda v: "–" if v is None else f"{v:.3f}",
                 "seconds_per_step": lambda v: "–" if v is None else f"{v:.2f}",
                 "value": lambda v: f"{v:g}"}


def sweep_report(knob: str, runs: dict) -> dict:
    """Rows, column headers, caption and discussion of one sweep (JSON-ready)."""
    from .report import sweep_discussion  # noqa: PLC0415

    label = SWEEP_KNOBS[knob]
    rows = sweep_table(knob, runs)
    examples = rows[0]["examples"] if rows else 0
    values = ", ".join(f"{r['value']:g}" for r in rows)
    return {
        "knob": knob,
        "rows": rows,
        "columns": {"value": label, "steps": "steps", "examples": "examples",
                    "final_train_loss": "final loss", "train_accuracy": "train acc.",
                    "valid_accuracy": "valid acc.", "seconds_per_step": "s / step",
                    "diverged": "diverged"},
        "caption": (f"{label.capitalize()} at {values}, "
                    f"every run seeing {examples:,} training examples: smoothed training loss "
                    "per step (left) and accuracy per image on train (dashed) and valid "
                    "(solid) against the epoch (right)"),
        "discussion": sweep_discussion(label, rows),
    }
