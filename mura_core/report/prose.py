"""The generated sentences of the report: summaries of a training run and an evaluation, and
the discussions of the comparisons. Everything said is computed from measured numbers."""
from __future__ import annotations

import math

import numpy as np

from ..evaluation.metrics import METRIC_NAMES
from ..experiments.comparisons import final_train_loss
from ..formatting import duration, interval, p_value, percent

#: What each architecture variant changes, as the discussion names it.
ARCHITECTURE_CHANGES = {
    "deeper": "Depth (two more convolutions and one more fully connected layer)",
    "wider": "Width (twice the feature maps at every convolution)",
    "residual": "Residual connections",
}


def _value(row: dict, metric: str) -> str:
    """'84.8 % (80.8 to 88.4)', and with several seeds ', seeds 83.0 to 86.1 %'."""
    kind = "float" if metric == "study_kappa" else "pct"
    text = interval(row.get(metric), row.get(f"{metric}_low"), row.get(f"{metric}_high"), kind)
    seeds = [v for v in row.get(f"{metric}_seeds") or [] if v is not None]
    if len(seeds) > 1:
        text += f", seeds {seed_range(seeds, kind)}"
    return text


def seed_range(values, kind: str = "pct") -> str:
    """'83.0 to 86.1 %' (or '0.801 to 0.842'): the lowest and highest seed's value."""
    if kind == "float":
        return f"{min(values):.3f} to {max(values):.3f}"
    return f"{100 * min(values):.1f} to {100 * max(values):.1f} %"


def _signed(cmp: dict):
    """How a difference of ``cmp``'s metric reads: (format, unit)."""
    if cmp["metric"] == "study_kappa":
        return (lambda v: f"{v:+.3f}"), ""
    return (lambda v: f"{100 * v:+.1f}"), " points"


def _difference(cmp: dict) -> str:
    """'+3.1 points (95 % interval +0.4 to +5.9; per seed +2.5, +3.0, +3.8; stratified
    McNemar p = 0.012, 141 against 82 images that only one of the two gets right)'."""
    fmt, unit = _signed(cmp)
    seeds = [s["difference"] for s in cmp.get("per_seed") or [] if s.get("difference") is not None]
    per_seed = f"; per seed {', '.join(fmt(d) for d in seeds)}" if len(seeds) > 1 else ""
    test = "stratified McNemar" if len(seeds) > 1 else "McNemar"
    return (f"{fmt(cmp['difference'])}{unit} (95 % interval {fmt(cmp['low'])} to "
            f"{fmt(cmp['high'])}{per_seed}; {test} {p_value(cmp['p_value'])}, {cmp['a_only']} "
            f"against {cmp['b_only']} images that only one of the two gets right)")


#: Why a difference is not established, one phrase per failed condition of ``stats.compare``.
REASONS = {"interval": "its interval includes zero",
           "test": "the paired test does not reject equal accuracy in that direction",
           "sign": "the seed pairs do not all point the same way"}


def _detectable(cmp: dict) -> str:
    fmt, unit = _signed(cmp)
    return f"{fmt(cmp['detectable']).lstrip('+')}{unit}" if cmp.get("detectable") is not None \
        else "–"


def verdict_sentence(subject: str, cmp: dict, reference: str) -> str:
    """One sentence on ``subject`` against ``reference`` from a ``stats.compare`` result: a
    difference is stated only when its verdict says it is established (interval, paired
    test and every seed pair agree); otherwise the sentence says which of them did not, and
    the smallest difference the comparison could have detected."""
    what = f"valid {METRIC_NAMES.get(cmp['metric'], cmp['metric'])}"
    if cmp.get("diverged"):
        return (f"{subject}: no comparison with {reference}, since a run diverged (a "
                "non-finite loss) with these settings.")
    seeds = cmp.get("seeds", 1)
    agree = (f"the interval excludes zero, the paired test agrees and all {seeds} seed pairs "
             "point the same way" if seeds > 1 else "the interval excludes zero and the test "
             "agrees (one seed: a statement about these two runs)")
    if cmp.get("verdict") == "a":
        return (f"{subject} raised the {what} over {reference} by {_difference(cmp)}: {agree}, "
                "so the difference is established.")
    if cmp.get("verdict") == "b":
        return (f"{subject} lowered the {what} against {reference}, by {_difference(cmp)}: "
                f"{agree}, so the difference is established.")
    why = "; ".join(REASONS[r] for r in cmp.get("reasons") or ["interval"])
    return (f"{subject} against {reference}: the difference in {what}, {_difference(cmp)}, is "
            f"not established ({why}); this comparison could detect a difference of about "
            f"{_detectable(cmp)} (half its interval's width).")


def _cost(row: dict, base: dict) -> str:
    parts = []
    if row.get("params") and base.get("params"):
        parts.append(f"{row['params'] / base['params']:.2f}x the parameters")
    if row.get("seconds_per_step") and base.get("seconds_per_step"):
        parts.append(f"{row['seconds_per_step'] / base['seconds_per_step']:.2f}x the time per "
                     "training step")
    return " and ".join(parts)


def architecture_discussion(rows: list[dict], comparisons: list[dict], *, steps: int | None = None,
                            seeds: int = 1, synthetic: bool = False) -> str:
    """The discussion of depth, width and residual connections, from measured numbers only.

    ``rows``: ``experiments.variant_row`` of every architecture (a "baseline" row among them);
    ``comparisons``: ``experiments.comparisons`` of each against the baseline. A variant is
    said to be better or worse only where its comparison's verdict establishes it."""
    by_name = {r["name"]: r for r in rows}
    if "baseline" not in by_name:
        raise ValueError("architecture_discussion needs a 'baseline' row")
    base = by_name["baseline"]
    where = "the synthetic valid split" if synthetic else "MURA's valid split"
    trained = f"for {steps:,} steps " if steps else ""
    runs = f"from each of {seeds} seeds" if seeds > 1 else "from the same seed"
    parts = [
        f"All {len(rows)} variants were trained {trained}{runs} with the same optimizer "
        f"settings and data order, and evaluated on {where}. Valid accuracy per image"
        + (" (the mean over the seeds, with the lowest and the highest seed)" if seeds > 1
           else "") + ", with 95 % intervals from a bootstrap over "
        + ("seeds and patients within seeds" if seeds > 1 else "patients") + ": "
        + "; ".join(f"{r['name']} {_value(r, 'image_accuracy')}" for r in rows
                    if not r.get("diverged")) + "."
    ]
    established = []
    for cmp in comparisons:
        row = by_name.get(cmp["name"], {})
        subject = ARCHITECTURE_CHANGES.get(cmp["name"], cmp["name"])
        sentence = verdict_sentence(subject, cmp, "the baseline")
        cost = _cost(row, base)
        parts.append(sentence + (f" It costs {cost}." if cost else ""))
        if cmp.get("verdict"):
            established.append(cmp["name"])
    if established:
        parts.append(f"Established differences: {', '.join(established)}; every other variant "
                     "is indistinguishable from the baseline here, so no further ranking is "
                     "claimed.")
    else:
        parts.append("No variant differs from the baseline by more than these intervals, tests "
                     "and seeds can tell apart, so this comparison does not rank them.")
    return " ".join(parts)


def sweep_discussion(knob: str, rows: list[dict], comparisons: list[dict], centre: str,
                     unit: str = "") -> str:
    """The discussion of one hyperparameter sweep from measured numbers: every value's valid
    accuracy with its interval, its final training loss, and each value against ``centre``
    (the settings of the other sections) where the comparison establishes a difference."""
    if not rows:
        return f"No run of the {knob} sweep produced a validation measurement."
    def fmt(v):
        return f"{v:g}{unit}"

    measured = [r for r in rows if not r.get("diverged")]
    parts = [f"Valid accuracy per image for each {knob}: "
             + "; ".join(f"{fmt(r['value'])}: {_value(r, 'image_accuracy')}" for r in measured)
             + "." if measured else f"Every run of the {knob} sweep diverged."]
    losses = {r["value"]: r["final_train_loss"] for r in measured
              if r.get("final_train_loss") is not None and math.isfinite(r["final_train_loss"])}
    if len(losses) >= 2:
        low, high = min(losses, key=losses.get), max(losses, key=losses.get)
        parts.append(f"The final training loss ranged from {losses[low]:.3f} ({fmt(low)}) to "
                     f"{losses[high]:.3f} ({fmt(high)}).")
    diverged = [fmt(r["value"]) for r in rows if r.get("diverged")]
    if diverged:
        parts.append(f"Training diverged (a non-finite loss) at {', '.join(diverged)}.")
    for cmp in comparisons:
        parts.append(verdict_sentence(f"A {cmp['name']}", cmp, f"the centre value ({centre})"))
    return " ".join(parts)


def training_summary(run, cache) -> str:
    """A few sentences on a training run, from its history."""
    h = run.history
    timing = h.get("timing") or {}
    n_train = len(cache.split("train"))
    steps = int(h.get("step", 0))
    # A step takes a whole batch; an epoch's last, partial batch is left out (drop_last).
    epochs = h.get("epoch", steps * run.settings["batch_size"] / max(1, n_train))
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
    best = h.get("best")
    if last and best and best.get("step") != last.get("step"):
        kappa = best.get("valid_study_kappa")
        text += (f" The best evaluation by valid study kappa was at step {best['step']:,} "
                 f"(epoch {best['epoch']:.1f}: kappa {'–' if kappa is None else f'{kappa:.3f}'}, "
                 f"accuracy per image {percent(best.get('valid_image_accuracy'))}); its model "
                 "is kept beside the final one, but every table of this report uses the final "
                 "model, since a model chosen on the valid split would be measured on the split "
                 "that chose it.")
    elif last and best:
        text += (" The final model is also the best evaluation by valid study kappa; every "
                 "table of this report uses it.")
    if run.diverged:
        text += f" **Training diverged:** {h.get('error')}"
    if run.reused:
        text += (" (These numbers come from a completed run with exactly these settings, "
                 f"`{run.folder.name}`, loaded rather than trained again.)")
    return text


def sample_predictions_note(predictions: list[dict], valid_accuracy: float | None,
                            model: str = "the reloaded model") -> str:
    """What a handful of classified images can and cannot say: how many of them the model
    got right, and its accuracy over the whole valid split."""
    right = sum(p["predicted"] == p["truth"] for p in predictions)
    by_truth = {truth: [p for p in predictions if p["truth"] == truth]
                for truth in ("normal", "abnormal")}
    text = (f"These {len(predictions)} images are drawn at random "
            f"({len(by_truth['normal'])} normal, {len(by_truth['abnormal'])} abnormal, from "
            f"several body parts); {model} classifies {right} of them correctly.")
    if valid_accuracy is not None:
        text += (f" So few images say little about the model: over the whole valid split it "
                 f"classifies {percent(valid_accuracy)} of the images correctly (section 3 has "
                 "the full evaluation, per class and with intervals).")
    return text


def class_recalls(table: dict) -> tuple[float | None, float | None]:
    """(share of abnormal images called abnormal, share of normal images called normal) from a
    metric table's image confusion matrix (rows true class, columns predicted; 0 abnormal)."""
    cm = np.asarray(table.get("confusion_image") or [[0, 0], [0, 0]], dtype=np.float64)
    abnormal, normal = cm[0].sum(), cm[1].sum()
    return (cm[0, 0] / abnormal if abnormal else None, cm[1, 1] / normal if normal else None)


def evaluation_summary(tables: dict, intervals: dict | None = None) -> str:
    """A paragraph on the evaluation, from the numbers of ``evaluate_splits`` and, when given,
    the valid split's ``stats.intervals``: whether the network beats the majority class by
    more than its interval, and how it does on each class."""
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
    ci = (intervals or {}).get("image_accuracy") or {}
    if ci.get("low") is not None and base.get("image_accuracy") is not None:
        text += (f" The 95 % interval of the accuracy per image, {100 * ci['low']:.1f} to "
                 f"{100 * ci['high']:.1f} % (bootstrap over patients), lies "
                 + ("wholly above" if ci["low"] > base["image_accuracy"] else "not wholly above")
                 + " the majority class's accuracy.")
    abnormal, normal = class_recalls(valid)
    if abnormal is not None and normal is not None:
        text += (f" It calls {percent(abnormal)} of the abnormal images abnormal (sensitivity "
                 f"for abnormal) and {percent(normal)} of the normal images normal "
                 "(specificity).")
    if gap is not None:
        text += (f" Train accuracy per image is {percent(train['image_accuracy'])}, "
                 f"{abs(gap):.1f} points {'above' if gap >= 0 else 'below'} valid.")
    return text


def paper_comparison_note(synthetic: bool) -> str:
    """Why our per-body-part kappas and the MURA paper's can or cannot be read side by side."""
    if synthetic:
        return ("**The two MURA columns are not comparable with ours.** They are the paper's "
                "figures for real radiographs on MURA's hidden test set, from an ensemble of "
                "ImageNet-pretrained DenseNet-169s at 320x320 and from radiologists scored "
                "against three others; ours come from synthetic images, whose difficulty per "
                "body part is whatever the generator makes it (for instance a fracture across "
                "the thin bones of a hand or finger is barely visible). The columns stand "
                "together only to show the layout the real report would have.")
    return ("Ours are on MURA's valid split (the test split is hidden), the paper's on its test "
            "set: the same protocol (mean probability per study, threshold 0.5, Cohen's kappa) "
            "on other studies, by a far larger ImageNet-pretrained network at 320x320. The "
            "paper's intervals come from a closed-form standard error computed without its "
            "square root, much narrower than a bootstrap; ours resample whole patients.")


def localization_summary(result: dict) -> str:
    """A paragraph on ``saliency.sign_localization``: how much of the Grad-CAM maps falls on
    the signs the generator drew, against a uniform map; a concentration is claimed only
    when the interval of the ratio lies above 1."""
    total = result["rows"][-1]
    lead = (f"Of the {result['abnormal_images']} abnormal valid images, "
            f"{_count(result['without_sign'], 'was', 'were')} drawn without a sign and "
            f"{_count(result['sign_too_small'], 'has', 'have')} a sign too small to cover a "
            f"pixel at the input size; {_count(total['images'], 'remains', 'remain')}")
    if total["share"] is None:
        return lead + ", and every one of their maps is zero: the network finds no evidence " \
                      "for abnormal anywhere in them."
    text = (lead + f" ({total['zero_maps']} of them with an all-zero map, left out). On "
            f"average {percent(total['share'])} of a Grad-CAM map's mass lies on the drawn "
            f"sign, where a uniform map would put {percent(total['uniform_share'])} (the sign's "
            f"share of the image): {total['ratio']:.2f} times as much (95 % interval "
            f"{total['ratio_low']:.2f} to {total['ratio_high']:.2f}, bootstrap over images). ")
    if total["ratio_low"] > 1:
        text += "The maps do concentrate on the signs."
    elif total["ratio_high"] < 1:
        text += "The maps avoid the signs: the network looks elsewhere."
    else:
        text += "The maps are not distinguishable from a uniform one on this measure."
    text += (f" The highest point of a map lies on the sign in {percent(total['peak_inside'])} "
             f"of the images (a uniform guess: {percent(total['uniform_share'])}).")
    kinds = [r for r in result["rows"][:-1] if r["share"] is not None]
    if len(kinds) > 1:
        text += " By kind: " + "; ".join(
            f"{r['sign']}s {percent(r['share'])} against {percent(r['uniform_share'])} "
            f"({_count(r['images'], 'image', 'images')})" for r in kinds) + "."
    gradient = (result.get("input_gradient") or [None])[-1]
    if gradient and gradient["share"] is not None:
        text += (f" The input gradient of the same score puts {percent(gradient['share'])} of "
                 f"its mass on the sign ({gradient['ratio']:.2f} times a uniform map, 95 % "
                 f"interval {gradient['ratio_low']:.2f} to {gradient['ratio_high']:.2f}), and its "
                 f"highest pixel lies on the sign in {percent(gradient['peak_inside'])} of the "
                 "images.")
    return text


def _count(n: int, one: str, many: str) -> str:
    """'1 was', '3 were': a count with the word that agrees with it."""
    return f"{n} {one if n == 1 else many}"


def explorer_models_note(runs, length: str) -> str:
    """Which trained networks the explorer shows, and whether they were trained now or loaded
    from the run store (the report's own runs: section 4 trains the same settings)."""
    names = " and ".join(f"`{r.name}`" for r in runs)
    text = (f"The explorer shows {names}, each trained for {length} with section 4's settings "
            "(its seed-0 runs).")
    reused = [r for r in runs if r.reused]
    if len(reused) == len(runs):
        text += (" Both were loaded from the run store, not trained again: completed runs with "
                 "exactly these settings (the report's own, when `make report` has run)."
                 if len(runs) > 1 else " It was loaded from the run store, not trained again.")
    elif reused:
        text += f" {' and '.join(f'`{r.name}`' for r in reused)} came from the run store."
    return text
