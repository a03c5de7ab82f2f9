"""The generated sentences of the report: summaries of a training run and an evaluation, and
the discussions of the comparisons. Everything said is computed from measured numbers."""
from __future__ import annotations

import math

import numpy as np

from ..experiments import final_train_loss
from ..formatting import duration, percent


def _best(values: dict[str, float]) -> str:
    return max(values, key=lambda k: values[k])


def _ranked(values: dict[str, float]) -> list[str]:
    return sorted(values, key=lambda k: values[k], reverse=True)


def architecture_discussion(rows: list[dict], metric: str = "valid_accuracy",
                            steps: int | None = None, synthetic: bool = False) -> str:
    """A paragraph comparing depth, width and residual connections from measured numbers.

    ``rows``: one dict per architecture with at least ``name``, ``params`` (count),
    ``seconds_per_step``, ``metric`` (valid accuracy, 0..1) and optionally ``train_accuracy``
    and ``valid_kappa``. Everything said is computed from these numbers; nothing is assumed
    about which variant wins.
    """
    by_name = {r["name"]: r for r in rows}
    if "baseline" not in by_name:
        raise ValueError("architecture_discussion needs a 'baseline' row")
    base = by_name["baseline"]
    acc = {n: r[metric] for n, r in by_name.items() if r.get(metric) is not None}
    ranked = _ranked(acc)
    where = "on synthetic data" if synthetic else "on MURA's validation split"
    trained = f"for {steps:,} steps " if steps else ""
    parts = [
        f"All {len(rows)} variants were trained {trained}from the same seed with the same "
        f"optimizer settings. Ranked by validation accuracy per image {where}: "
        + ", ".join(f"{n} {percent(acc[n])}" for n in ranked) + "."
    ]
    for name, what in (("deeper", "Depth (two more convolutions and one more fully "
                                  "connected layer)"),
                       ("wider", "Width (more feature maps at every level)"),
                       ("residual", "Residual connections")):
        if name in by_name and by_name[name].get("diverged"):
            step = by_name[name].get("diverged_at_step")
            parts.append(f"With {what[0].lower() + what[1:]}, training diverged (a non-finite "
                         f"loss{f' at step {step}' if step else ''}) with these optimizer "
                         "settings, so that variant has no validation accuracy to compare; a "
                         "smaller learning rate would be needed.")
            continue
        if name not in by_name or name not in acc or "baseline" not in acc:
            continue
        r = by_name[name]
        diff = 100 * (acc[name] - acc["baseline"])
        if abs(diff) < 0.05:
            effect = "left validation accuracy unchanged"
        else:
            effect = (f"{'raised' if diff > 0 else 'lowered'} validation accuracy by "
                      f"{abs(diff):.1f} percentage points ({percent(acc[name])} against "
                      f"{percent(acc['baseline'])} for the baseline)")
        cost = ""
        if r.get("params") and base.get("params"):
            cost += f"{r['params'] / base['params']:.2f}x the parameters"
        if r.get("seconds_per_step") and base.get("seconds_per_step"):
            cost += (", " if cost else "") + (
                f"{r['seconds_per_step'] / base['seconds_per_step']:.2f}x the time per step")
        parts.append(f"{what} {effect}" + (f", at {cost}." if cost else "."))
    if "baseline" not in acc:
        return " ".join(parts)
    if all(r.get("train_accuracy") is not None for r in rows) and len(acc) == len(rows):
        gaps = {r["name"]: r["train_accuracy"] - r[metric] for r in rows}
        widest = max(gaps, key=lambda k: gaps[k])
        if 100 * (gaps[widest] - min(gaps.values())) < 0.5:
            parts.append(f"Train accuracy exceeds validation accuracy by about the same for "
                         f"every variant ({100 * gaps[widest]:.1f} points).")
        else:
            parts.append(
                f"The largest gap between train and validation accuracy is {widest}'s "
                f"({100 * gaps[widest]:.1f} points), the smallest "
                f"{min(gaps, key=lambda k: gaps[k])}'s "
                f"({100 * min(gaps.values()):.1f} points).")
    spread = 100 * (max(acc.values()) - min(acc.values()))
    if spread < 2.0:
        parts.append(
            f"The spread between the best and the worst variant is only {spread:.1f} points: "
            "at this training length the differences are within what another seed could "
            "change, so they do not establish a ranking.")
    else:
        parts.append(f"The best variant here is {ranked[0]}, {spread:.1f} points ahead of "
                     f"the worst ({ranked[-1]}).")
    return " ".join(parts)


def sweep_discussion(knob: str, rows: list[dict], metric: str = "valid_accuracy",
                     loss: str = "final_train_loss", unit: str = "") -> str:
    """A short paragraph on one hyperparameter sweep, from measured numbers.

    ``rows``: one dict per setting with ``value`` (the knob's value), ``metric`` and
    optionally ``loss`` (the last training loss) and ``diverged`` (bool).
    """
    values = {r["value"]: r for r in rows}
    acc = {v: r[metric] for v, r in values.items() if r.get(metric) is not None}
    if not acc:
        return f"No run of the {knob} sweep produced a validation measurement."
    best = _best(acc)
    worst = min(acc, key=lambda k: acc[k])
    fmt = (lambda v: f"{v:g}{unit}")
    parts = [f"Over {', '.join(fmt(v) for v in values)} for the {knob}, the best validation "
             f"accuracy was {percent(acc[best])} at {fmt(best)} and the worst "
             f"{percent(acc[worst])} at {fmt(worst)}"]
    losses = {v: r[loss] for v, r in values.items()
              if r.get(loss) is not None and math.isfinite(r[loss])}
    if len(losses) >= 2:
        low = min(losses, key=lambda k: losses[k])
        high = max(losses, key=lambda k: losses[k])
        parts[-1] += (f"; the final training loss ranged from {losses[low]:.3f} ({fmt(low)}) "
                      f"to {losses[high]:.3f} ({fmt(high)})")
    parts[-1] += "."
    diverged = [fmt(v) for v, r in values.items() if r.get("diverged")]
    if diverged:
        parts.append(f"Training diverged (non-finite loss) at {', '.join(diverged)}.")
    if 100 * (acc[best] - acc[worst]) < 2.0:
        parts.append("The differences are under 2 points, within run-to-run noise at this "
                     "training length.")
    return " ".join(parts)



def training_summary(run, cache) -> str:
    """A few sentences on a training run, from its history."""
    h = run.history
    timing = h.get("timing") or {}
    n_train = len(cache.split("train"))
    steps = int(h.get("step", 0))
    epochs = steps * run.settings["batch_size"] / max(1, n_train)
    text = (f"The {h.get('model', {}).get('arch', run.name)} network "
            f"({(h.get('model') or {}).get('num_parameters', 0):,} parameters) was trained for "
            f"{steps:,} steps of {run.settings['batch_size']} images, {epochs:.1f} epochs of the "
            f"{n_train:,} train images, in {duration(timing.get('wall_s'))} "
            f"({timing.get('time_per_step_s') or float('nan'):.2f} s per training step).")
    loss = h.get("loss") or []
    if loss:
        text += (f" The training loss went from {float(np.mean(loss[:5])):.3f} (mean of the "
                 f"first 5 steps) to {final_train_loss(h):.3f} (mean of the last 10).")
    last = run.last_eval
    if last:
        valid = last["valid"]
        text += (f" At the last evaluation the valid accuracy per image was "
                 f"{percent(valid.get('image_accuracy'))} (always predicting the majority class: "
                 f"{percent((valid.get('baseline') or {}).get('image_accuracy'))}).")
    if run.diverged:
        text += f" **Training diverged:** {h.get('error')}"
    if run.reused:
        text += (" (These numbers come from a completed run with exactly these settings, "
                 f"`{run.folder.name}`, loaded rather than trained again.)")
    return text



def evaluation_summary(tables: dict) -> str:
    """A paragraph on the evaluation, from the numbers of ``evaluate_splits``."""
    valid, train = tables["valid"], tables["train"]
    base = valid.get("baseline") or {}
    cls = "normal" if valid.get("majority_class", 1) == 1 else "abnormal"
    gap = None
    if train.get("image_accuracy") is not None and valid.get("image_accuracy") is not None:
        gap = 100 * (train["image_accuracy"] - valid["image_accuracy"])
    kappa = valid.get("study_kappa")
    text = (f"On valid the network classifies {percent(valid.get('image_accuracy'))} of the "
            f"images, {percent(valid.get('patient_accuracy'))} of the patients and "
            f"{percent(valid.get('study_accuracy'))} of the studies correctly (study kappa "
            f"{'–' if kappa is None else f'{kappa:.3f}'}), against "
            f"{percent(base.get('image_accuracy'))}, {percent(base.get('patient_accuracy'))} and "
            f"{percent(base.get('study_accuracy'))} for always predicting {cls}.")
    if gap is not None:
        text += (f" Train accuracy per image is {percent(train['image_accuracy'])}, "
                 f"{abs(gap):.1f} points {'above' if gap >= 0 else 'below'} valid.")
    return text
