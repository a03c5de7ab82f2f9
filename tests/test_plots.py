"""Figures: built from a history dict, saved as PNG and PDF, captions carried through."""
import numpy as np
import pytest
from matplotlib.figure import Figure

from mura_core import plots
from mura_core.evaluation import metrics as M


def _table(acc: float, patient: float) -> dict:
    return {"image_accuracy": acc, "patient_accuracy": patient, "loss": 1.0 - acc,
            "baseline": {"image_accuracy": 0.52, "patient_accuracy": 0.55}}


def _history(n_steps: int = 40, shift: float = 0.0) -> dict:
    rng = np.random.default_rng(1)
    loss = (0.7 * np.exp(-np.arange(n_steps) / 20) + 0.05 * rng.random(n_steps) + shift).tolist()
    evals = [
        {"step": s, "epoch": s / 10, "train": _table(0.5 + s / 100, 0.5 + s / 120),
         "valid": _table(0.5 + s / 150, 0.5 + s / 160)}
        for s in (10, 20, 30, 40)
    ]
    return {"loss": loss, "lr": [0.01] * n_steps, "evals": evals}


def test_smooth_is_a_debiased_moving_average():
    v = np.array([1.0, 1.0, 1.0])
    assert plots.smooth(v, 0.9) == pytest.approx(v)  # a constant stays constant from step 1
    assert plots.smooth([1.0, 3.0], 0.0).tolist() == [1.0, 3.0]
    # by hand for weight 0.5: a1 = 0.5 * 2 = 1 -> 1 / 0.5 = 2; a2 = 0.5 + 0.5 * 4 = 2.5 -> 2.5 / 0.75
    assert plots.smooth([2.0, 4.0], 0.5) == pytest.approx([2.0, 2.5 / 0.75])
    with pytest.raises(ValueError):
        plots.smooth([1.0], 1.0)


def test_plot_loss_saves_png_and_pdf_with_caption(tmp_path):
    fig = plots.plot_loss(_history(), caption="synthetic data", path=tmp_path / "loss.png")
    assert isinstance(fig, Figure)
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert (tmp_path / "loss.pdf").read_bytes()[:4] == b"%PDF"
    texts = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
    assert "synthetic data" in texts
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines[0].get_ydata()) == 40  # raw per-step loss
    assert len(lines[2].get_xdata()) == 4  # valid loss at the evaluation points


def test_plot_loss_accepts_a_plain_list():
    fig = plots.plot_loss([0.7, 0.6, 0.5], title="t")
    assert fig.axes[0].get_lines()[1].get_ydata()[0] == pytest.approx(0.7)


def test_plot_accuracy_one_panel_per_metric(tmp_path):
    fig = plots.plot_accuracy(_history(), title="Accuracy (synthetic data)", path=tmp_path / "acc")
    assert len([a for a in fig.axes if a.get_xlabel() == "epoch"]) == 2
    assert (tmp_path / "acc.png").exists() and (tmp_path / "acc.pdf").exists()
    train_line = fig.axes[0].get_lines()[0]
    assert train_line.get_xdata().tolist() == [1.0, 2.0, 3.0, 4.0]
    assert train_line.get_ydata()[-1] == pytest.approx(0.9)
    fig = plots.plot_accuracy(_history(), x="step", metrics=("image_accuracy",))
    assert fig.axes[0].get_lines()[0].get_xdata().tolist() == [10, 20, 30, 40]


def test_plot_runs_puts_every_run_on_one_figure(tmp_path):
    runs = {"baseline": _history(), "deeper": _history(shift=0.1), "wider": _history(shift=0.2)}
    fig = plots.plot_runs(runs, caption="synthetic data", path=tmp_path / "runs")
    loss_ax, acc_ax = fig.axes[0], fig.axes[1]
    assert len(loss_ax.get_lines()) == 3
    assert len(acc_ax.get_lines()) == 6  # train and valid per run
    legend = [t.get_text() for t in acc_ax.get_legend().get_texts()]
    assert legend[:2] == ["baseline (train)", "baseline (valid)"]
    assert (tmp_path / "runs.pdf").exists()


def test_plot_confusion_shows_counts(tmp_path):
    cm = M.confusion_matrix([0, 0, 0, 1, 1], [0, 1, 1, 1, 0])
    fig = plots.plot_confusion(cm, title="Valid, per image", caption="synthetic data",
                               path=tmp_path / "cm.pdf")
    cells = sorted(t.get_text() for t in fig.axes[0].texts)
    assert cells == ["1\n33.3 %", "1\n50.0 %", "1\n50.0 %", "2\n66.7 %"]
    assert (tmp_path / "cm.png").exists() and (tmp_path / "cm.pdf").exists()
    with pytest.raises(ValueError):
        plots.plot_confusion(np.zeros((3, 3)))


def _loss_panel_legend(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


@pytest.mark.parametrize("blow_up", [1e9, np.inf, np.nan])
def test_plot_runs_keeps_the_loss_axis_of_the_other_runs_when_one_diverges(blow_up):
    ok = {"lr 0.01": _history(), "lr 0.1": _history(shift=0.1)}
    bad = _history()
    bad["loss"] = bad["loss"][:25] + [4e8, blow_up]
    bad.update(status="diverged", diverged_at_step=27)
    fig = plots.plot_runs({**ok, "lr 10": bad})
    curves = [plots.smooth(h["loss"]) for h in ok.values()]
    bottom, top = fig.axes[0].get_ylim()
    assert max(c.max() for c in curves) <= top <= 1.5 * max(c.max() for c in curves)
    assert 0.0 <= bottom <= min(c.min() for c in curves)
    assert _loss_panel_legend(fig) == ["lr 0.01", "lr 0.1", "lr 10 (diverged at step 27)"]
    diverged_line, marker = fig.axes[0].get_lines()[2:]
    assert np.all(diverged_line.get_ydata() <= top) and diverged_line.get_ydata()[-1] == top
    assert marker.get_marker() == "x"
    assert marker.get_xdata().tolist() == [27] and marker.get_ydata().tolist() == [top]


def test_plot_runs_finds_the_divergence_step_from_a_non_finite_loss():
    bad = _history()
    bad["loss"] = bad["loss"][:12] + [np.inf, np.nan]
    fig = plots.plot_runs({"ok": _history(), "bad": bad})
    assert _loss_panel_legend(fig) == ["ok", "bad (diverged at step 13)"]
    assert fig.axes[0].get_ylim()[1] < 1.0


def test_plot_runs_leaves_the_loss_axis_alone_without_divergence():
    runs = {"a": _history(), "b": _history(shift=0.2)}
    fig = plots.plot_runs(runs)
    top = fig.axes[0].get_ylim()[1]
    assert top >= max(float(plots.smooth(h["loss"]).max()) for h in runs.values())


def test_plot_runs_loss_panel_follows_x_epoch():
    bad = dict(_history(), status="diverged", diverged_at_step=30)  # 10 steps per epoch
    bad["loss"] = bad["loss"][:29] + [1e9]
    fig = plots.plot_runs({"batch 16": _history(), "batch 64": bad}, x="epoch")
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_xlabel() == acc_ax.get_xlabel() == "epoch"
    line = loss_ax.get_lines()[0]
    assert line.get_xdata()[[0, -1]] == pytest.approx([0.1, 4.0])
    assert loss_ax.get_lines()[-1].get_xdata().tolist() == pytest.approx([3.0])
    with pytest.raises(ValueError, match="x must be"):
        plots.plot_runs({"a": _history()}, x="time")


def test_saliency_grid_has_a_radiograph_and_each_map_per_image(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 16, 16)).astype(np.uint8)
    maps = {"Grad-CAM": rng.random((5, 16, 16)), "input gradient": rng.random((5, 16, 16))}
    fig = plots.saliency_grid(images, maps, [f"image {i}" for i in range(5)], ncols=3,
                              title="maps", caption="synthetic data")
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 5 * 3  # radiograph, Grad-CAM and input gradient of each image
    overlays = [ax for ax in drawn if len(ax.images) == 2]
    assert len(overlays) == 10
    rgba = overlays[0].images[1].get_array()
    assert rgba.shape == (16, 16, 4) and rgba[..., 3].max() <= 0.6 + 1e-9
    assert [ax.get_title() for ax in drawn if ax.get_title()] == [f"image {i}" for i in range(5)]
    plots.save_figure(fig, tmp_path / "grid")
    assert (tmp_path / "grid.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="one title"):
        plots.saliency_grid(images, maps, ["a"])


def test_roc_plot_marks_the_operating_point_and_the_interval():
    level = {"fpr": [0.0, 0.25, 1.0], "tpr": [0.0, 0.75, 1.0], "auc": 0.81, "low": 0.7,
             "high": 0.9, "sensitivity": 0.75, "specificity": 0.75, "n": 20, "n_abnormal": 8}
    fig = plots.plot_roc({"image": level, "study": dict(level, fpr=None, tpr=None)})
    left, right = fig.axes
    labels = [line.get_label() for line in left.get_lines()]
    assert "AUROC 0.810 (95 % CI 0.700 to 0.900)" in labels
    assert "threshold 0.5: sensitivity 75.0 %, specificity 75.0 %" in labels
    point = [line for line in left.get_lines() if line.get_label().startswith("threshold")][0]
    assert point.get_xydata().tolist() == [[0.25, 0.75]]
    assert right.get_title() == "per study (20 studies, 8 abnormal)"
    assert len(right.get_lines()) == 2, "no curve where one class is missing, still the point"
