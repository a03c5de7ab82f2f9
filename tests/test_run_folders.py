"""A run folder is never lost or mixed: one ``train`` per folder, a folder holds one run (or
is refused), ``--resume`` continues only on the run's own data, places are checked before
work, and SIGTERM and SIGKILL leave a folder that says what happened. Real processes where
locks and signals are concerned."""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from processes import cli, history_of, one_error_line, start_cli, wait_for

import mura_core as mc
from mura_core.__main__ import main
from mura_core.data import build_cache, generate_synthetic
from mura_core.locks import lock_holder
from mura_core.training import load_history

pytestmark = pytest.mark.filterwarnings("ignore::mura_core.data.SkippedImageWarning")
SIZE = 32


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """Two small synthetic sets (A and B) with their caches built, so the commands below
    start training at once."""
    base = tmp_path_factory.mktemp("runfolders")
    sets = {}
    for name, seed in (("a", 1), ("b", 2)):
        root = base / f"data-{name}"
        generate_synthetic(root, n_train=48, n_valid=16, seed=seed, workers=1)
        build_cache(root, size=SIZE, cache_dir=base / f"cache-{name}", progress=False, workers=1)
        sets[name] = {"root": str(root), "cache": str(base / f"cache-{name}")}
    return sets


def train_args(data: dict, out, *extra, steps: int = 6) -> list[str]:
    return ["train", "--data", data["root"], "--cache-dir", data["cache"], "--size", str(SIZE),
            "--width", "0.125", "--steps", str(steps), "--batch-size", "8", "--lr", "0.01",
            "--out", str(out), "--backend", "numpy", "--workers", "1", "--no-progress",
            "--train-eval-size", "0", *extra]


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def long_run(data, out, *extra):
    """A train that runs until stopped, evaluating (and writing history.json) every step."""
    return start_cli(*train_args(data, out, "--eval-every", "1", *extra, steps=100_000))


def stop(proc, signum=signal.SIGINT) -> str:
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    return err


# --- 1. one train per run folder ---------------------------------------------------------------

def test_a_second_train_on_the_same_out_is_refused_naming_the_first(synth, tmp_path):
    out = tmp_path / "c"
    first = long_run(synth["a"], out, "--seed", "3")
    try:
        wait_for(lambda: (lock_holder(out) or {}).get("pid") == first.pid, first, what="the lock")
        second = cli(*train_args(synth["a"], out, "--seed", "4", "--eval-every", "3", steps=12))
    finally:
        stop(first)
    assert second.returncode == 2
    error = one_error_line(second.stderr)
    assert f"{out} (run folder) is in use by process {first.pid} on host " in error
    assert ", started " in error
    history = history_of(out)
    assert history["config"]["seed"] == 3 and history["status"] == "interrupted"


# --- 2. a folder holds one run, or is refused ----------------------------------------------

def test_any_earlier_run_file_means_refusal_without_resume_or_overwrite(synth, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(synth["a"], out)) == 0
    (out / "checkpoint.npz").unlink()  # what experiments keeps of a finished run
    before = files_in(out)
    assert main(train_args(synth["a"], out, "--seed", "4")) == 2
    assert "already holds a run (history.json, best.npz, last.npz, predictions.npz); resume it (--resume" \
        in capsys.readouterr().err
    assert main(train_args(synth["a"], out, "--resume", steps=9)) == 2
    assert "holds a run with no checkpoint to resume from" in capsys.readouterr().err
    assert files_in(out) == before


def test_overwrite_removes_the_earlier_run_before_a_run_that_diverges_at_once(synth, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(synth["a"], out)) == 0
    assert {"checkpoint.npz", "best.npz", "last.npz", "history.json"} <= set(files_in(out))
    capsys.readouterr()
    assert main(train_args(synth["a"], out, "--overwrite", "--lr", "1e9", "--momentum", "0.9")) == 1
    captured = capsys.readouterr()
    assert "training diverged" in captured.err
    assert "removed the earlier run's history.json, checkpoint.npz, best.npz, last.npz" in captured.out
    assert sorted(files_in(out)) == ["history.json"], "no file of the earlier run is left"
    history = load_history(out)
    assert history["status"] == "diverged" and history["config"]["lr"] == 1e9


def test_a_fresh_run_never_writes_beside_files_that_are_no_runs(synth, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.md").write_text("my notes")
    assert main(train_args(synth["a"], out, "--overwrite")) == 2
    assert "holds files that are not a run's (notes.md)" in capsys.readouterr().err
    assert sorted(files_in(out)) == ["notes.md"]


# --- 3. resume: the same data, the learning rate may change --------------------------------

def test_resume_with_other_data_is_refused_in_one_line_with_the_way_out(synth, tmp_path):
    out = tmp_path / "run"
    assert cli(*train_args(synth["a"], out)).returncode == 0
    before = files_in(out)
    done = cli(*train_args(synth["b"], out, "--resume", steps=9))
    assert done.returncode == 2
    error = one_error_line(done.stderr)
    assert "it was trained on other data (data root " in error
    assert "cache key" in error and "train mean" in error
    assert f"resume with the run's data (--data {Path(synth['a']['root']).resolve() / 'MURA-v1.1'})" in error
    assert "--overwrite" in error
    assert files_in(out) == before


def test_a_diverged_run_resumes_from_its_kept_checkpoint_at_the_advised_rate(synth, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(synth["a"], out, steps=5)) == 0  # a good run: checkpoint at step 5
    too_high = train_args(synth["a"], out, "--resume", steps=10)
    too_high[too_high.index("--lr") + 1] = "1e9"
    assert main(too_high) == 1
    err = capsys.readouterr().err
    # a tenth of 1e9, but no more than the rate the kept checkpoint was trained at
    assert "(step 5), is kept" in err and "--resume --lr 0.01)" in err
    assert load_history(out)["status"] == "diverged"
    advised = err.split("--resume --lr ")[1].split(")")[0]
    assert main(train_args(synth["a"], out, "--resume", "--lr", advised, steps=10)) == 0
    history = load_history(out)
    assert history["status"] == "completed" and history["step"] == 10
    assert np.isfinite(history["loss"]).all() and history["lr"] == [0.01] * 10
    # a lower rate than the advice trains too, and the change is recorded
    assert main(train_args(synth["a"], out, "--resume", "--lr", "0.001", steps=15)) == 0
    history = load_history(out)
    assert history["lr_changes"][-1] == {"step": 10, "lr_from": 0.01, "lr_to": 0.001}
    assert history["lr"] == [0.01] * 10 + [0.001] * 5 and history["config"]["lr"] == 0.001


# --- 4. places that cannot be written: refused before any work -------------------------------

@pytest.fixture
def read_only(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


def test_an_unwritable_out_is_refused_before_the_cache_build(synth, tmp_path, read_only):
    data = dict(synth["a"], cache=str(tmp_path / "fresh-cache"))
    done = cli(*train_args(data, read_only / "run"), obey_permissions=True)
    assert done.returncode == 2
    error = one_error_line(done.stderr)
    assert f"cannot write the run folder {read_only / 'run'}" in error and "Permission denied" in error
    assert not (tmp_path / "fresh-cache").exists(), "refused before any image was decoded"


def test_an_unwritable_cache_folder_is_refused_before_decoding(synth, tmp_path, read_only):
    data = dict(synth["a"], cache=str(read_only / "cache"))
    done = cli(*train_args(data, tmp_path / "run"), obey_permissions=True)
    assert done.returncode == 2
    assert f"cannot write the cache folder {read_only / 'cache'}" in one_error_line(done.stderr)
    assert not (tmp_path / "run").exists(), "the run folder made for the lock is gone again"


def test_evaluate_refuses_an_unwritable_json_file_before_scoring(synth, tmp_path, read_only):
    out = tmp_path / "run"
    assert main(train_args(synth["a"], out)) == 0
    done = cli("evaluate", "--model", out / "best.npz", "--data", synth["a"]["root"],
               "--cache-dir", tmp_path / "fresh-cache", "--backend", "numpy", "--workers", "1",
               "--no-progress", "--json", read_only / "tables.json", obey_permissions=True)
    assert done.returncode == 2
    assert f"cannot write the --json file {read_only / 'tables.json'}" in one_error_line(done.stderr)
    assert not (tmp_path / "fresh-cache").exists()


# --- 5 and 7. signals, killed runs, stale files ----------------------------------------------

def test_sigterm_writes_a_checkpoint_and_exits_143(synth, tmp_path):
    out = tmp_path / "run"
    proc = long_run(synth["a"], out)
    try:
        running = wait_for(lambda: history_of(out), proc, what="history.json")
        assert running["status"] == "running" and running["process"]["pid"] == proc.pid
        err = stop(proc, signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "--resume" in err
    history = history_of(out)
    assert history["status"] == "interrupted" and "process" not in history
    assert mc.load_model(out / "checkpoint.npz").metadata["trained"]["step"] == history["step"] >= 1
    assert not (out / ".lock").exists()


def test_a_killed_run_reads_as_killed_and_resumes_cleaning_what_it_left(synth, tmp_path):
    out = tmp_path / "run"
    proc = long_run(synth["a"], out, "--checkpoint-every", "1")
    try:
        wait_for(lambda: (out / "checkpoint.npz").exists() and history_of(out), proc,
                 what="a checkpoint")
    finally:
        proc.kill()  # SIGKILL: nothing runs on the way out
        proc.wait()
    history = load_history(out)
    assert history["status"] == "killed"
    assert f"pid {proc.pid}" in history["error"] and "ended without updating its history" in history["error"]
    assert history_of(out)["status"] == "running", "the file itself is left as it was"
    stale = out / ".checkpoint.npz.0a1b2c3d4e5f.tmp"  # a write the SIGKILL cut short
    stale.write_bytes(b"\0" * 1000)
    done = cli(*train_args(synth["a"], out, "--eval-every", "1", "--checkpoint-every", "1", "--resume",
                           steps=history_of(out)["step"] + 2))
    assert done.returncode == 0, done.stderr
    assert f"left by process {proc.pid}" in done.stderr and "taking it over" in done.stderr
    assert not stale.exists()
    assert sorted(p.name for p in out.iterdir()) == ["best.npz", "checkpoint.npz", "history.json",
                                                     "last.npz", "predictions.npz"]
    assert load_history(out)["status"] == "completed"


def test_ctrl_c_during_the_cache_build_does_not_suggest_resume(synth, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("mura_core.data.cache.build_cache", interrupted)
    out = tmp_path / "run"
    assert main(train_args(synth["a"], out)) == 130
    err = capsys.readouterr().err
    assert "--resume" not in err and "nothing to resume" in err
    assert not out.exists()


def test_predict_with_nan_weights_is_a_clear_error(synth, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(synth["a"], out)) == 0
    model = mc.load_model(out / "best.npz")
    model.parameters()["fc2.W"][...] = float("nan")
    mc.save_model(model, tmp_path / "nan.npz")
    cache = build_cache(synth["a"]["root"], size=SIZE, cache_dir=synth["a"]["cache"])
    image = cache.split("valid").records[0].path
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "nan.npz"), image]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "weight 'fc2.W' holds NaN or infinite values" in one_error_line(captured.err)


def test_resume_keeps_other_settings_fixed(synth, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(synth["a"], out)) == 0
    assert main(train_args(synth["a"], out, "--resume", "--momentum", "0.5", steps=9)) == 2
    assert "momentum: 0.9 -> 0.5" in capsys.readouterr().err


def test_resume_and_overwrite_together_are_refused(synth, tmp_path, capsys):
    assert main(train_args(synth["a"], tmp_path / "run", "--resume", "--overwrite")) == 2
    assert "resume and overwrite exclude each other" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_files_keep_the_umask_mode_in_a_run_folder(synth, tmp_path):
    old = os.umask(0o022)
    try:
        assert main(train_args(synth["a"], tmp_path / "run")) == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "run").iterdir()}
    assert set(modes.values()) == {0o644}, modes


def test_a_copied_run_folder_elsewhere_still_resumes(synth, tmp_path):
    """The lock file is not part of a run: a folder copied while no process held it resumes."""
    out = tmp_path / "run"
    assert main(train_args(synth["a"], out)) == 0
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    assert main(train_args(synth["a"], copy, "--resume", steps=8)) == 0
    assert load_history(copy)["step"] == 8
