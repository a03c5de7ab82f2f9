"""Training watched as it runs (``report.live``): only in a person's kernel, from the runs'
history files, with a bar per run and the loss curves."""
from __future__ import annotations

import io
import json
import os

import pytest
from tqdm import tqdm

from mura_core.progress import BATCH_ENV
from mura_core.report import live
from mura_core.report.pipeline import batch_kernels

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _history(step: int, total: int = 10, status: str = "running") -> dict:
    return {"status": status, "step": step, "total_steps": total, "steps_per_epoch": 5,
            "loss": [0.7 - 0.01 * i for i in range(step)], "lr": [0.01] * step,
            "evals": [{"step": s, "epoch": s / 5, "epoch_end": s % 5 == 0, "lr": 0.01,
                       "train": {"loss": 0.6, "image_accuracy": 0.6},
                       "valid": {"loss": 0.65, "image_accuracy": 0.55}}
                      for s in range(5, step + 1, 5)]}


def _write(folder, history) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "history.json").write_text(json.dumps(history))


class _Image:
    value = b""


def test_the_report_marks_its_kernels_as_batch_and_restores_the_environment(monkeypatch):
    monkeypatch.delenv(BATCH_ENV, raising=False)
    with batch_kernels():
        assert os.environ[BATCH_ENV] == "1"
    assert BATCH_ENV not in os.environ
    monkeypatch.setenv(BATCH_ENV, "given")
    with batch_kernels():
        pass
    assert os.environ[BATCH_ENV] == "given"


def test_outside_a_live_frontend_the_watch_shows_nothing_and_reads_nothing(tmp_path):
    _write(tmp_path / "a", _history(5))
    with live.RunWatch({"a": tmp_path / "a"}, {"a": 10}) as watch:
        pass
    assert watch.bars == {} and watch.image is None and watch.histories == {"a": None}


def test_a_poll_moves_each_bar_to_its_run_step_and_draws_the_curves_once_per_change(tmp_path):
    folders = {"baseline (seed 0)": tmp_path / "a", "residual (seed 0)": tmp_path / "b"}
    watch = live.RunWatch(folders, {label: 10 for label in folders})
    watch.bars = {label: tqdm(total=10, file=io.StringIO()) for label in folders}
    watch.image = _Image()
    assert not watch.poll(), "no history written yet: nothing changed"
    _write(folders["baseline (seed 0)"], _history(5))
    assert watch.poll()
    assert watch.bars["baseline (seed 0)"].n == 5 and watch.bars["residual (seed 0)"].n == 0
    assert watch.image.value.startswith(PNG_SIGNATURE)
    drawn = watch.image.value
    watch.image.value = b""
    assert not watch.poll() and watch.image.value == b"", "an unchanged file is not read again"
    _write(folders["residual (seed 0)"], _history(10, status="completed"))
    os.utime(folders["residual (seed 0)"] / "history.json", ns=(1, 1))  # any other mtime
    assert watch.poll() and watch.bars["residual (seed 0)"].n == 10
    assert watch.image.value.startswith(PNG_SIGNATURE) and watch.image.value != drawn


@pytest.mark.parametrize("runs", [1, 2])
def test_the_curves_of_one_or_several_runs_are_a_png_and_nothing_before_the_first_step(runs):
    histories = {f"run {i}": _history(7) for i in range(runs)}
    assert live.curves_png(histories).startswith(PNG_SIGNATURE)
    assert live.curves_png({"run 0": _history(0)}) == b""
    assert live.curves_png({"run 0": None}) == b""


def test_a_run_is_unfinished_until_its_history_says_completed_or_diverged_at_its_last_step(
        tmp_path):
    folder = tmp_path / "run"
    assert live.unfinished(folder, 10)
    _write(folder, _history(5))
    assert live.unfinished(folder, 10)
    _write(folder, _history(5, status="interrupted"))
    assert live.unfinished(folder, 10)
    _write(folder, _history(10, status="completed"))
    assert not live.unfinished(folder, 10)
    (folder / "history.json").write_text('{"status": "compl')  # not a history
    assert live.unfinished(folder, 10)


def test_an_interrupt_says_which_checkpoints_were_kept_and_how_to_go_on(tmp_path):
    import numpy as np

    from mura_core.training.runfolder import CHECKPOINT_NAME

    kept, fresh, done = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    _write(kept, _history(7))
    _write(fresh, _history(3))
    _write(done, _history(10, status="completed"))
    with open(kept / CHECKPOINT_NAME, "wb") as f:
        np.savez(f, __trainer__=json.dumps({"step": 7}))
    watch = live.RunWatch({"baseline (seed 0)": kept, "residual (seed 0)": fresh, "deeper (seed 0)": done},
                          dict.fromkeys(("baseline (seed 0)", "residual (seed 0)", "deeper (seed 0)"), 10))
    with pytest.raises(KeyboardInterrupt) as stopped:
        with watch:
            raise KeyboardInterrupt
    assert str(stopped.value) == (
        "stopped; the checkpoints kept: baseline (seed 0) at step 7 of 10; residual (seed 0) before its "
        "first checkpoint (it starts again). Run the cell again to resume.")
    assert stopped.value.__suppress_context__, "the worker pool's traceback is not repeated"
    with pytest.raises(ValueError):  # any other error goes through as it is
        with live.RunWatch({"baseline (seed 0)": kept}, {"baseline (seed 0)": 10}):
            raise ValueError("not an interrupt")
