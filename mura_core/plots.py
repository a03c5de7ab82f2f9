"""Every training and evaluation figure the notebooks and the report show.

Each function builds a new ``matplotlib.figure.Figure`` (not registered with pyplot, so nothing
piles up and nothing is shown twice), returns it, and when ``path`` is given saves it as PNG
and PDF through ``save_figure``. In a notebook a returned figure displays as the cell's value
or with ``display(fig)``. ``title`` goes on top and ``caption`` under the axes: figures made
from synthetic data must say so in one of them (``caption="synthetic data"``).

Histories are the dicts written by ``mura_core.train`` (``history.json``): ``loss`` and ``lr``
per step, ``evals`` a list of ``{"step", "epoch", "train": table, "valid": table}`` with
``mura_core.metrics.metric_table`` tables.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np
from matplotlib.figure import Figure

from .evaluation.metrics import CLASS_NAMES, METRIC_NAMES


def save_figure(fig: Figure, path, formats: Iterable[str] = ("png", "pdf"), dpi: int = 150) -> list[Path]:
    """Save ``fig`` once per format beside ``path`` (its suffix, if any, is replaced).

    Creates the folder. Returns the written paths.
    """
    base = Path(path)
    if base.suffix.lower().lstrip(".") in {"png", "pdf", "svg"}:
        base = base.with_suffix("")
    base.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        out = base.with_name(f"{base.name}.{fmt}")
        fig.savefig(out, format=fmt, dpi=dpi, bbox_inches="tight")
        written.append(out)
    return written


def png_bytes(fig: Figure, dpi: int = 90) -> bytes:
    """``fig`` as PNG bytes (what an ``ipywidgets.Image`` shows)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def smooth(values: Sequence[float], weight: float = 0.9) -> np.ndarray:
    """Exponential moving average with bias correction (the first points are not pulled to 0).

    ``weight`` in [0, 1): 0 returns the values unchanged; 0.9 averages about the last 10.
    Returns float64 of the same length.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError("weight must be in [0, 1)")
    v = np.asarray(values, dtype=np.float64)
    out = np.empty_like(v)
    avg = 0.0
    for i, x in enumerate(v):
        avg = weight * avg + (1.0 - weight) * x
        out[i] = avg / (1.0 - weight ** (i + 1))
    return out


def _new_figure(ncols: int = 1, width: float = 6.4, height: float = 4.0):
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _finish(fig: Figure, title: str | None, caption: str | None, path) -> Figure:
    if title:
        fig.suptitle(title)
    if caption:
        # Constrained layout leaves room for a supxlabel, so a caption never overlaps the axes.
        fig.supxlabel(caption, fontsize="small", style="italic")
    if path is not None:
        save_figure(fig, path)
    return fig


def _eval_series(history: Mapping, split: str, metric: str, x: str):
    xs, ys = [], []
    for point in history.get("evals", []):
        table = point.get(split)
        if table is None:
            continue
        value = table[metric] if metric in table else table.get("baseline", {}).get(metric)
        if value is None:
            continue
        xs.append(point[x])
        ys.append(value)
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def _losses(history) -> np.ndarray:
    losses = history["loss"] if isinstance(history, Mapping) else history
    return np.asarray(losses, dtype=np.float64)


def plot_loss(
    history,
    *,
    smooth_weight: float = 0.9,
    show_valid: bool = True,
    title: str | None = "Training loss",
    caption: str | None = None,
    path=None,
) -> Figure:
    """Loss per step (light) with its smoothed curve (dark); the valid loss at each evaluation
    point as markers when ``history`` is a history dict and ``show_valid``.

    ``history``: a history dict, or a plain sequence of per-step losses.
    """
    loss = _losses(history)
    steps = np.arange(1, loss.size + 1)
    fig, (ax,) = _new_figure()
    ax.plot(steps, loss, color="tab:blue", alpha=0.3, linewidth=0.8, label="train loss per step")
    if loss.size:
        ax.plot(steps, smooth(loss, smooth_weight), color="tab:blue", linewidth=2.0,
                label=f"train loss, smoothed (EMA {smooth_weight:g})")
    if show_valid and isinstance(history, Mapping):
        xs, ys = _eval_series(history, "valid", "loss", "step")
        if xs.size:
            ax.plot(xs, ys, "o-", color="tab:orange", label="valid loss")
    ax.set_xlabel("step")
    ax.set_ylabel("binary cross entropy")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _finish(fig, title, caption, path)


def plot_accuracy(
    history: Mapping,
    *,
    metrics: Sequence[str] = ("image_accuracy", "patient_accuracy"),
    x: str = "epoch",
    splits: Sequence[str] = ("train", "valid"),
    baseline: bool = True,
    title: str | None = "Accuracy on train and valid",
    caption: str | None = None,
    path=None,
) -> Figure:
    """Train and valid accuracy at each evaluation point, one panel per metric.

    ``x``: ``"epoch"`` (fractional for mid-epoch points) or ``"step"``. With ``baseline``, a
    dotted line marks the valid split's majority-class accuracy for that metric.
    """
    if x not in ("epoch", "step"):
        raise ValueError("x must be 'epoch' or 'step'")
    fig, axes = _new_figure(len(metrics), width=5.2)
    colors = {"train": "tab:blue", "valid": "tab:orange"}
    for ax, metric in zip(axes, metrics):
        for split in splits:
            xs, ys = _eval_series(history, split, metric, x)
            ax.plot(xs, ys, "o-", color=colors.get(split), label=split)
        if baseline and history.get("evals"):
            base = history["evals"][-1].get(splits[-1], {}).get("baseline", {}).get(metric)
            if base is not None:
                ax.axhline(base, color="gray", linestyle=":", label=f"{splits[-1]} majority class")
        ax.set_xlabel(x)
        ax.set_ylabel(METRIC_NAMES.get(metric, metric))
        ax.set_title(METRIC_NAMES.get(metric, metric))
        ax.grid(True, alpha=0.3)
        ax.legend()
    return _finish(fig, title, caption, path)


def _divergence_step(history) -> int | None:
    """The step a run diverged at: ``diverged_at_step`` (as ``experiments`` records it), else
    the first step with a non-finite loss; None when neither tells."""
    if isinstance(history, Mapping) and history.get("diverged_at_step") is not None:
        return int(history["diverged_at_step"])
    bad = np.flatnonzero(~np.isfinite(_losses(history)))
    return int(bad[0]) + 1 if bad.size else None


def _is_diverged(history) -> bool:
    return (isinstance(history, Mapping) and history.get("status") == "diverged") \
        or not np.all(np.isfinite(_losses(history)))


def _steps_per_epoch(history) -> float | None:
    if isinstance(history, Mapping):
        if history.get("steps_per_epoch"):
            return float(history["steps_per_epoch"])
        for point in history.get("evals", []):
            if point.get("epoch"):
                return point["step"] / point["epoch"]
    return None


def _loss_limit(curves: Sequence[np.ndarray], diverged: Sequence[bool]) -> float:
    """Top of the loss axis from the runs that did not diverge (all runs when every one did):
    their curves stay in view, but a spike above 3 times their 95th percentile does not
    flatten the rest."""
    kept = [c for c, d in zip(curves, diverged) if not d] or list(curves)
    reference = np.concatenate(kept)
    return 1.05 * float(min(reference.max(), 3.0 * np.percentile(reference, 95)))


def _groups(histories: Mapping) -> dict[str, list[Mapping]]:
    """name -> list of histories (one per seed): a single history becomes a list of one; a
    group with a diverged run is split into its runs, named by seed, so each is drawn."""
    out = {}
    for name, value in histories.items():
        runs = [value] if isinstance(value, Mapping) else list(value)
        if len(runs) > 1 and any(_is_diverged(h) for h in runs):
            for i, h in enumerate(runs):
                seed = (h.get("config") or {}).get("seed", i)
                out[f"{name}, seed {seed}"] = [h]
        else:
            out[name] = runs
    return out


def _mean_band(series):
    """Mean, min and max over runs of (xs, ys) series, on the points all runs share."""
    xs = series[0][0]
    if any(len(x) != len(xs) or not np.allclose(x, xs) for x, _ in series):
        common = xs[np.all([np.isin(xs, x) for x, _ in series], axis=0)]
        series = [(common, y[np.isin(x, common)]) for x, y in series]
        xs = common
    ys = np.stack([y for _, y in series])
    return xs, ys.mean(axis=0), ys.min(axis=0), ys.max(axis=0)


def plot_runs(
    histories: Mapping[str, Mapping],
    *,
    metric: str = "image_accuracy",
    splits: Sequence[str] = ("train", "valid"),
    x: str = "step",
    show_loss: bool = True,
    smooth_weight: float = 0.9,
    title: str | None = None,
    caption: str | None = None,
    path=None,
) -> Figure:
    """Several runs on one figure: smoothed training loss (left, with ``show_loss``) and
    ``metric`` at each evaluation point (right); one color per run, train dashed, valid solid.

    ``histories``: run name -> history dict, or -> list of history dicts of the same settings
    from several seeds (drawn as their mean, with a band from the lowest to the highest seed),
    in legend order. ``x``: ``"step"`` or ``"epoch"``
    for both panels (epochs compare runs whose steps hold different numbers of images).
    A diverged run (history ``status`` "diverged", or non-finite losses) keeps the loss panel
    readable: the axis is scaled to the other runs, the run's curve stops at the top edge, an
    'x' on the top edge marks the step it diverged at and its legend entry names that step.
    """
    if not histories:
        raise ValueError("plot_runs needs at least one history")
    if x not in ("epoch", "step"):
        raise ValueError("x must be 'epoch' or 'step'")
    groups = _groups(histories)
    fig, axes = _new_figure(2 if show_loss else 1, width=5.6)
    colors = [f"C{i % 10}" for i in range(len(groups))]
    styles = {"train": "--", "valid": "-"}
    if show_loss:
        _plot_run_losses(axes[0], groups, colors, x, smooth_weight)
    ax = axes[-1]
    for color, (name, runs) in zip(colors, groups.items()):
        for split in splits:
            series = [_eval_series(h, split, metric, x) for h in runs]
            if not series[0][0].size:
                continue
            xs, mean, low, high = _mean_band(series)
            seeds = f", mean of {len(runs)} seeds" if len(runs) > 1 else ""
            ax.plot(xs, mean, styles.get(split, ":"), marker="o", markersize=3, color=color,
                    label=f"{name} ({split}{seeds})")
            if len(runs) > 1 and split == splits[-1]:
                ax.fill_between(xs, low, high, color=color, alpha=0.15, linewidth=0)
    ax.set_xlabel(x)
    ax.set_ylabel(METRIC_NAMES.get(metric, metric))
    ax.set_title(f"{METRIC_NAMES.get(metric, metric)}: " + ", ".join(
        f"{s} {'dashed' if styles.get(s) == '--' else 'solid'}" for s in splits))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _finish(fig, title, caption, path)


class _LossCurve(NamedTuple):
    name: str
    color: str
    xs: np.ndarray  # step or epoch of each point
    ys: np.ndarray  # smoothed loss of the finite steps before any divergence (mean over seeds)
    diverged: bool
    step: int | None  # the step it diverged at, when known
    x_per_step: float | None  # 1 for x="step", 1 / steps_per_epoch for x="epoch"
    band: tuple | None = None  # (lowest, highest) smoothed loss over seeds


def _loss_curve(name: str, color: str, history, x: str, smooth_weight: float) -> _LossCurve:
    loss = _losses(history)
    bad = np.flatnonzero(~np.isfinite(loss))
    # Smooth only the finite losses before the divergence: an inf or NaN would carry on.
    finite = loss[: bad[0]] if bad.size else loss
    steps_per_epoch = _steps_per_epoch(history) if x == "epoch" else 1.0
    per_step = None if steps_per_epoch is None else 1.0 / steps_per_epoch
    if finite.size and per_step is None:
        raise ValueError(f"run {name!r}: x='epoch' needs the history's steps_per_epoch "
                         "(or an evaluation point)")
    xs = np.arange(1, finite.size + 1) * (per_step or 1.0)  # no points when per_step is None
    return _LossCurve(name, color, xs, smooth(finite, smooth_weight), _is_diverged(history),
                      _divergence_step(history), per_step)


def _group_curve(name: str, color: str, runs, x: str, smooth_weight: float) -> _LossCurve:
    """One run's loss curve, or the mean of several (none diverged) with their band."""
    curves = [_loss_curve(name, color, h, x, smooth_weight) for h in runs]
    if len(curves) == 1:
        return curves[0]
    n = min(c.ys.size for c in curves)
    ys = np.stack([c.ys[:n] for c in curves])
    return curves[0]._replace(xs=curves[0].xs[:n], ys=ys.mean(axis=0),
                              band=(ys.min(axis=0), ys.max(axis=0)))


def _plot_run_losses(ax, groups: Mapping[str, list], colors, x: str,
                     smooth_weight: float) -> None:
    """The loss panel of ``plot_runs``: smoothed loss per run (or mean per group) against ``x``."""
    curves = [_group_curve(name, color, runs, x, smooth_weight)
              for color, (name, runs) in zip(colors, groups.items())]
    drawn = [c for c in curves if c.ys.size]
    top = _loss_limit([c.ys for c in drawn], [c.diverged for c in drawn]) if drawn else None
    for c in curves:
        if not c.diverged:
            if c.ys.size:
                ax.plot(c.xs, c.ys, color=c.color, label=c.name)
            if c.band is not None:
                ax.fill_between(c.xs, np.minimum(c.band[0], top), np.minimum(c.band[1], top),
                                color=c.color, alpha=0.15, linewidth=0)
            continue
        xs, ys = c.xs, c.ys
        if ys.size:
            # Up to the first point off the scale, drawn on the top edge, then nothing.
            above = np.flatnonzero(ys > top)
            cut = above[0] + 1 if above.size else ys.size
            xs, ys = xs[:cut], np.minimum(ys[:cut], top)
        label = f"{c.name} (diverged at step {c.step})" if c.step is not None else f"{c.name} (diverged)"
        ax.plot(xs, ys, color=c.color, label=label)
        if top is not None and c.step is not None and c.x_per_step is not None:
            ax.plot([c.step * c.x_per_step], [top], "x", color=c.color, markersize=9,
                    markeredgewidth=2, clip_on=False)
    if top is not None and any(c.diverged or c.ys.max() > top for c in drawn):
        low = min(float(c.ys.min()) for c in drawn)
        bottom = low - 0.05 * (top - low)
        ax.set_ylim(max(bottom, 0.0) if low >= 0.0 else bottom, top)
    ax.set_xlabel(x)
    ax.set_ylabel(f"train loss (EMA {smooth_weight:g})")
    ax.set_title("training loss")
    ax.grid(True, alpha=0.3)
    ax.legend()


def plot_confusion(
    cm,
    *,
    classes: Sequence[str] = CLASS_NAMES,
    title: str | None = "Confusion matrix",
    caption: str | None = None,
    path=None,
) -> Figure:
    """A confusion matrix (rows true class, columns predicted, as ``metrics.confusion_matrix``)
    with counts and row percentages in each cell."""
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(classes):
        raise ValueError(f"confusion matrix must be {len(classes)}x{len(classes)}, got {cm.shape}")
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    fig, (ax,) = _new_figure(width=4.6, height=4.0)
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}\n{100 * share[i, j]:.1f} %", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(classes)), labels=list(classes))
    ax.set_yticks(range(len(classes)), labels=list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(image, ax=ax, label="share of the true class")
    return _finish(fig, title, caption, path)


def image_grid(images, titles, ncols: int = 4, title: str | None = None,
               caption: str | None = None, cell: float = 2.1, title_size: float | None = None):
    """A grid of grayscale images (uint8 or float, (N, H, W)) with a title over each.

    Returns a ``matplotlib.figure.Figure`` (not registered with pyplot)."""
    from matplotlib.figure import Figure

    images = list(images)
    if len(images) != len(titles):
        raise ValueError("image_grid needs one title per image")
    ncols = max(1, min(ncols, len(images)))
    nrows = max(1, math.ceil(len(images) / ncols))
    fig = Figure(figsize=(cell * ncols, cell * nrows + (0.5 + 0.2 * title.count("\n") if title else 0)
                          + (0.3 if caption else 0)), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, text in zip(axes.ravel(), images, titles):
        ax.imshow(img, cmap="gray", vmin=0, vmax=255 if getattr(img, "dtype", None) == "uint8"
                  else None)
        ax.set_title(text, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=title_size)
    if caption:
        fig.supxlabel(caption, fontsize=8)
    return fig


def _overlay(ax, image, heat=None, alpha: float = 0.6, outline=None) -> None:
    """A grayscale image, with ``heat`` (same size, in [0, 1]) over it in the jet colours,
    transparent where the heat is 0 and ``alpha`` opaque where it is 1, and the border of the
    bool mask ``outline`` (if any) as a thin white line."""
    from matplotlib import colormaps

    image = np.asarray(image)
    ax.imshow(image, cmap="gray", vmin=0, vmax=255 if image.dtype == np.uint8 else None)
    if heat is not None:
        heat = np.clip(np.asarray(heat, dtype=np.float64), 0.0, 1.0)
        rgba = colormaps["jet"](heat)
        rgba[..., 3] = alpha * heat
        ax.imshow(rgba)
    if outline is not None and np.any(outline):
        ax.contour(np.asarray(outline, dtype=np.float32), levels=[0.5], colors="white",
                   linewidths=0.6)
    ax.axis("off")


def saliency_grid(images, maps: Mapping[str, np.ndarray], titles: Sequence[str], *,
                  outlines=None, ncols: int = 4, title: str | None = None,
                  caption: str | None = None, cell: float = 1.9) -> Figure:
    """Radiographs with their saliency maps: per image a column holding the radiograph (with
    its title) and, under it, each map of ``maps`` (name -> (N, H, W) in [0, 1]) overlaid on
    it; ``ncols`` images per row of such columns.

    images: (N, H, W) uint8 or float. outlines: None, or (N, H, W) bool masks (e.g. where a
    synthetic sign was drawn) outlined in white on every overlay."""
    images = list(images)
    if not images:
        raise ValueError("saliency_grid needs at least one image")
    if len(titles) != len(images) or any(len(m) != len(images) for m in maps.values()):
        raise ValueError("saliency_grid needs one title and one map of each kind per image")
    per_image = 1 + len(maps)
    ncols = max(1, min(ncols, len(images)))
    blocks = math.ceil(len(images) / ncols)
    fig = Figure(figsize=(cell * ncols, cell * per_image * blocks + 0.6), layout="constrained")
    axes = fig.subplots(per_image * blocks, ncols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, image in enumerate(images):
        block, col = divmod(i, ncols)
        top = axes[block * per_image, col]
        _overlay(top, image)
        top.set_title(titles[i], fontsize=7)
        for k, (name, heat) in enumerate(maps.items(), start=1):
            ax = axes[block * per_image + k, col]
            _overlay(ax, image, heat[i], outline=None if outlines is None else outlines[i])
            if col == 0:
                ax.text(-0.04, 0.5, name, transform=ax.transAxes, rotation=90, ha="right",
                        va="center", fontsize=7)
    return _finish(fig, title, caption, None)


def overlay_grid(image, rows: Sequence[tuple[str, Sequence[np.ndarray]]], columns: Sequence[str],
                 *, title: str | None = None, cell: float = 2.6) -> Figure:
    """One radiograph (H, W) in a row per entry of ``rows`` (a title, and the maps (H, W) in
    [0, 1] overlaid on it, one per column after the first): the first column is the image
    itself, ``columns`` names every column."""
    if not rows:
        raise ValueError("overlay_grid needs at least one row")
    if any(len(maps) != len(columns) - 1 for _, maps in rows):
        raise ValueError("overlay_grid needs one map per column after the image")
    fig = Figure(figsize=(cell * len(columns), cell * len(rows) + (0.5 if title else 0.2)),
                 layout="constrained")
    axes = fig.subplots(len(rows), len(columns), squeeze=False)
    for r, (text, maps) in enumerate(rows):
        for c, heat in enumerate([None, *maps]):
            _overlay(axes[r, c], image, heat)
            axes[r, c].set_title(f"{text}\n{columns[c]}" if c == 0 else columns[c], fontsize=8,
                                 loc="left" if c == 0 else "center")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def plot_explanation(image, heat, title: str, *, map_name: str = "Grad-CAM") -> Figure:
    """One radiograph beside its saliency map overlaid on it (what ``explain`` writes)."""
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    _overlay(left, image)
    left.set_title("radiograph (network input)", fontsize=9)
    _overlay(right, image, heat)
    right.set_title(f"{map_name} overlay (red: strongest)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


def plot_roc(roc: Mapping[str, Mapping], *, title: str | None = "ROC curves",
             caption: str | None = None, path=None) -> Figure:
    """ROC curves with abnormal as the finding, one panel per level (``evaluation.
    roc_summary``: "image", "study"): sensitivity against 1 - specificity, AUROC with its
    95 % interval in the legend, and the operating point at P(normal) < 0.5 called abnormal
    marked with its sensitivity and specificity."""
    fig, axes = _new_figure(len(roc), width=4.4, height=4.2)
    for ax, (level, r) in zip(axes, roc.items()):
        ax.plot([0, 1], [0, 1], ":", color="gray", label="chance")
        if r.get("fpr") is not None:
            auc = "" if r.get("auc") is None else f"AUROC {r['auc']:.3f}"
            if r.get("low") is not None:
                auc += f" (95 % CI {r['low']:.3f} to {r['high']:.3f})"
            ax.plot(r["fpr"], r["tpr"], color="tab:blue", label=auc or "ROC")
        if r.get("sensitivity") is not None and np.isfinite(r["sensitivity"]) \
                and np.isfinite(r["specificity"]):
            ax.plot([1 - r["specificity"]], [r["sensitivity"]], "o", color="tab:red",
                    label=f"threshold 0.5: sensitivity {100 * r['sensitivity']:.1f} %, "
                          f"specificity {100 * r['specificity']:.1f} %")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel("1 - specificity (normal called abnormal)")
        ax.set_ylabel("sensitivity (abnormal called abnormal)")
        plural = {"study": "studies", "patient": "patients"}.get(level, f"{level}s")
        ax.set_title(f"per {level} ({r['n']} {plural}, {r['n_abnormal']} abnormal)", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return _finish(fig, title, caption, path)
