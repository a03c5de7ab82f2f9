"""Run safety: no run grows past what the machine has, none hangs, a full disk or a dead
worker is one line that loses nothing, a signal ends every long operation, and every bad
value is one line naming its option or file. Real processes where signals and worker deaths
are concerned; a full disk is faked (``os.posix_fallocate``, ``os.fsync``,
``shutil.disk_usage``) so the tests need no file system of their own."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from processes import REPO, one_error_line, wait_for
from test_run_folders import SIZE, train_args

import mura_core as mc
from mura_core.__main__ import main
from mura_core.data import build_cache, generate_synthetic, load_cache
from mura_core.files import DiskFull, NotEnoughSpace
from mura_core.formatting import data_size
from mura_core.nn.models import MAX_INPUT_SIZE, memory_bytes

pytestmark = pytest.mark.filterwarnings("ignore::mura_core.data.SkippedImageWarning")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A small synthetic set (48 train, 16 valid: enough for the cache build's process pool)
    with its cache built, and a trained model."""
    base = tmp_path_factory.mktemp("safety")
    root = base / "data"
    generate_synthetic(root, n_train=48, n_valid=16, seed=1, workers=1)
    build_cache(root, size=SIZE, cache_dir=base / "cache", progress=False, workers=1)
    data = {"root": str(root), "cache": str(base / "cache"), "base": base}
    assert main(train_args(data, base / "run", steps=3)) == 0
    data["model"] = base / "run" / "last.npz"
    data["image"] = sorted((root / "MURA-v1.1" / "valid").glob("*/*/*/image1.png"))[0]
    return data


def refused(capsys, args, status: int = 2) -> str:
    """Run ``main(args)`` in this process: it returns ``status`` and prints one error line,
    no traceback; that line."""
    assert main([str(a) for a in args]) == status
    err = capsys.readouterr().err
    return one_error_line(err)


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --- 1. sizes and memory bounded before any work ---------------------------------------------

def test_an_input_size_above_the_bound_is_refused_with_the_reason(synth, tmp_path, capsys):
    assert MAX_INPUT_SIZE == 1024
    with pytest.raises(ValueError, match="largest input size is 1,024 pixels, since memory grows"):
        mc.build_model("baseline", input_size=MAX_INPUT_SIZE + 1)
    with pytest.raises(ValueError, match="largest input size is 1,024"):
        build_cache(synth["root"], size=50_000, cache_dir=tmp_path / "c", progress=False)
    line = refused(capsys, ["data", "cache", synth["root"], "--size", "50000",
                            "--cache-dir", tmp_path / "c", "--no-progress"])
    assert line.startswith("error: --size 50,000 is too large: the largest input size is 1,024")
    assert "use --size 1024 or less" in line
    line = refused(capsys, train_args(dict(synth, cache=str(tmp_path / "c")), tmp_path / "run",
                                      "--size", "100000"))
    assert "--size 100,000 is too large" in line
    assert not (tmp_path / "c").exists() and not (tmp_path / "run").exists()


def test_a_model_file_whose_header_says_a_huge_input_is_refused_in_one_line(synth, tmp_path,
                                                                           capsys):
    model = mc.load_model(synth["model"])
    model.spec["input_size"] = 10**6
    mc.save_model(model, tmp_path / "huge.npz")
    for args in (["predict", tmp_path / "huge.npz", synth["image"]],
                 ["evaluate", "--model", tmp_path / "huge.npz", "--data", synth["root"],
                  "--cache-dir", synth["cache"], "--no-progress", "--backend", "numpy"],
                 ["explain", "--model", tmp_path / "huge.npz", synth["image"],
                  "--out", tmp_path / "maps"]):
        line = refused(capsys, args)
        assert f"{tmp_path / 'huge.npz'}: the model header describes no buildable network " \
               "(input size 1,000,000 is too large: the largest input size is 1,024" in line
    assert not (tmp_path / "maps").exists()


def test_the_memory_estimate_counts_every_weight_and_grows_with_the_batch():
    for arch in mc.ARCHITECTURES:
        model = mc.build_model(arch, input_size=64, width=0.25)
        weights = 4 * model.num_parameters()  # float32
        assert memory_bytes(arch, 64, 0, width=0.25, training=False) == weights
        assert memory_bytes(arch, 64, 0, width=0.25) == 3 * weights  # gradients, momentum
        one = memory_bytes(arch, 64, 1, width=0.25) - 3 * weights
        assert memory_bytes(arch, 64, 32, width=0.25) == 3 * weights + 32 * one
        # every layer's output of one image (the flattening is a view), within a factor 2
        outputs = sum(int(np.prod(r["output"])) for r in model.summary_rows()
                      if r["name"] not in ("input", "flatten"))
        assert 4 * outputs <= one <= 2 * 4 * outputs


def test_a_run_whose_memory_does_not_fit_is_refused_before_any_work(synth, tmp_path, capsys,
                                                                     monkeypatch):
    import mura_core.resources as resources

    monkeypatch.setattr(resources, "available_memory", lambda: 50_000_000)
    data = dict(synth, cache=str(tmp_path / "c"))
    line = refused(capsys, train_args(data, tmp_path / "run", "--size", "227",
                                      "--width", "1", "--batch-size", "32",
                                      "--eval-batch-size", "8"))
    assert line.startswith("error: a training step of baseline on 32 images of 227x227 "
                           "(--batch-size 32, --size 227) needs at least ")
    assert "of memory, but this machine has 50.0 MB available; use a smaller --batch-size or " \
           "--size" in line
    line = refused(capsys, train_args(data, tmp_path / "run", "--eval-batch-size", "1000000"))
    assert "an evaluation batch of baseline on 1000000 images" in line
    assert "use a smaller --eval-batch-size" in line
    assert not (tmp_path / "c").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("workers, message", [
    ("0", "--workers must be at least 1 worker process, got 0"),
    ("-5", "--workers must be at least 1 worker process, got -5"),
    ("100000", "--workers 100000: at most "),
])
def test_worker_counts_are_bounded_by_the_cores(synth, tmp_path, capsys, workers, message):
    for command in (["data", "cache", synth["root"], "--cache-dir", tmp_path / "c",
                     "--size", str(SIZE), "--no-progress"],
                    ["data", "synth", tmp_path / "s", "--train", "10", "--valid", "3"],
                    train_args(dict(synth, cache=str(tmp_path / "c")), tmp_path / "run")):
        line = refused(capsys, [*command, "--workers", workers])
        assert message in line
    assert not any(tmp_path.iterdir())


# --- 1 and 2. the cache build: disk space, a dead worker, SIGTERM ----------------------------

#: ``python -c`` prelude: a cache build whose every image takes 0.2 s to decode (in the
#: workers too: they are forked), run through the command line's own entry point.
SLOW_BUILD = """
import os, sys, time
import mura_core.data.cache as cache
real, main_pid = cache.preprocess_image, os.getpid()
def slow(path, size, mode):
    time.sleep(0.2)
    if os.environ.get("KILL_WORKER") and os.getpid() != main_pid and path.endswith("image1.png"):
        os.kill(os.getpid(), 9)  # a worker dies, as when the system runs out of memory
    return real(path, size, mode)
cache.preprocess_image = slow
from mura_core.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def start_slow_build(synth, cache_dir, *extra, env=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_BUILD, "data", "cache", synth["root"], "--size", str(SIZE),
         "--cache-dir", str(cache_dir), "--rebuild", "--no-progress", *extra],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def gone(pid: int) -> bool:
    """True when process ``pid`` has ended (reaped, or a zombie waiting for its parent)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status or "\nState:\tX" in status


@pytest.fixture
def built_cache(synth, tmp_path):
    """A cache folder holding a finished cache: (its folder, its files' bytes)."""
    where = tmp_path / "cache"
    build_cache(synth["root"], size=SIZE, cache_dir=where, progress=False, workers=1)
    return where, files_in(where)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_ends_a_cache_build_at_once_and_keeps_the_previous_cache(synth, built_cache,
                                                                         workers):
    where, before = built_cache
    proc = start_slow_build(synth, where, "--workers", workers)
    try:
        wait_for(lambda: (where / ".train_images.npy.build.tmp").exists(), proc,
                 what="the build's temp files")
        time.sleep(0.5)  # decoding
        workers_seen = children(proc.pid)
        assert len(workers_seen) == (0 if workers == "1" else 2)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert time.monotonic() - sent < 30
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143 and err.strip().splitlines()[-1] == "interrupted", err
    assert "Traceback" not in err, err
    assert files_in(where) == before, "no temp file left, the previous cache untouched"
    assert load_cache(where).n_images == sum(len(s) for s in load_cache(where).splits.values())
    assert all(gone(pid) for pid in workers_seen)


def test_a_worker_that_dies_fails_the_build_in_one_line_instead_of_hanging(synth, built_cache):
    where, before = built_cache
    proc = start_slow_build(synth, where, "--workers", "2", env={"KILL_WORKER": "1"})
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert one_error_line(err) == (
        f"error: a worker process of the cache build for {where} died (killed, or out of "
        "memory); the cache folder is as it was: run the command again, with fewer --workers "
        "if memory is short")
    assert files_in(where) == before


def test_a_cache_that_the_disk_cannot_hold_is_refused_before_decoding(synth, tmp_path, capsys,
                                                                      monkeypatch):
    import mura_core.files as files

    real = files.shutil.disk_usage
    monkeypatch.setattr(files.shutil, "disk_usage",
                        lambda path: real(path)._replace(free=40_000))
    where = tmp_path / "cache"
    with pytest.raises(NotEnoughSpace) as info:
        build_cache(synth["root"], size=SIZE, cache_dir=where, progress=False, workers=1)
    needed = 64 * SIZE * SIZE + 48 * SIZE * SIZE + 4096  # both splits, a copy of train
    assert str(info.value) == (
        f"the cache folder {where} needs {data_size(needed)} of disk space, but "
        "its file system has 40 kB free; free some space, or choose another --cache-dir (or "
        "$MURA_CACHE_DIR) or a smaller --size")
    line = refused(capsys, ["data", "cache", synth["root"], "--size", str(SIZE),
                            "--cache-dir", where, "--no-progress"])
    assert line == f"error: {info.value}"
    assert not where.exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_disk_that_fills_up_during_the_build_is_one_line_and_keeps_the_previous_cache(
        synth, built_cache, capsys, monkeypatch, workers):
    where, before = built_cache

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(DiskFull, match=f"the disk of the cache folder {where} is full: "
                                       r"\.train_images\.npy\.build\.tmp needs "):
        build_cache(synth["root"], size=SIZE, cache_dir=where, progress=False, workers=workers,
                    rebuild=True)
    assert files_in(where) == before
    line = refused(capsys, ["data", "cache", synth["root"], "--size", str(SIZE), "--rebuild",
                            "--cache-dir", where, "--no-progress", "--workers", str(workers)],
                   status=1)
    assert line.endswith("the cache folder is as it was: free some space, or choose another "
                         "--cache-dir")
    assert files_in(where) == before


# --- 2. a full disk in training ---------------------------------------------------------------

def no_space(*args):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_disk_that_fills_up_during_training_keeps_the_last_checkpoint(synth, tmp_path,
                                                                        monkeypatch):
    from mura_core.training import load_history, train
    from mura_core.training.checkpoint import checkpoint_step

    cache = load_cache(synth["cache"])
    out = tmp_path / "run"
    settings = dict(steps=8, batch_size=8, lr=0.01, checkpoint_every=2, train_eval_size=None,
                    progress=False, out_dir=str(out))

    def model():
        return mc.build_model("baseline", input_size=SIZE, width=0.125, seed=0)

    def fill_the_disk(step, loss):  # every write after step 3 finds the disk full
        if step == 3:
            monkeypatch.setattr(os, "fsync", no_space)

    with pytest.raises(DiskFull) as info:
        train(model(), cache, on_step=fill_the_disk, **settings)
    message = str(info.value)
    assert message.startswith(f"the disk of the run folder {out} filled up at step 4 (")
    assert message.endswith(f"its checkpoint of step 2, {out / 'checkpoint.npz'}, is kept: free "
                            "some space and continue with --resume")
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir() if p.name != ".lock") == [
        "checkpoint.npz", "history.json"], "no temp file left"
    assert checkpoint_step(out / "checkpoint.npz") == 2
    kept = mc.load_model(out / "checkpoint.npz")
    assert all(np.isfinite(v).all() for v in kept.parameters().values())
    resumed = train(model(), cache, resume=True, **settings)
    straight = train(model(), cache, **{**settings, "out_dir": None, "checkpoint_every": None})
    assert resumed.history["status"] == "completed" and load_history(out)["step"] == 8
    assert resumed.history["loss"] == straight.history["loss"], "nothing was lost"


def test_train_on_a_full_disk_is_one_line_naming_the_run_folder(synth, tmp_path, capsys,
                                                               monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(os, "fsync", no_space)
    line = refused(capsys, train_args(synth, out, "--checkpoint-every", "2"), status=1)
    assert line.startswith(f"error: the disk of the run folder {out} filled up at step 2 (")
    assert line.endswith("no checkpoint had been written yet: free some space and run the "
                         "command again")
    assert not out.exists(), "nothing was written: the folder made for the lock is gone"


def test_a_run_folder_without_the_space_of_a_run_is_refused_before_any_work(synth, tmp_path,
                                                                           capsys, monkeypatch):
    import mura_core.files as files

    real = files.shutil.disk_usage
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: real(path)._replace(free=10_000))
    out = tmp_path / "run"
    line = refused(capsys, train_args(synth, out))
    assert line.startswith(f"error: the run folder {out} needs ")
    assert line.endswith("of disk space, but its file system has 10 kB free; free some space "
                         "or choose another --out")
    assert not out.exists()


# --- 4. divergence: only good checkpoints, advice that works -----------------------------------

def test_a_checkpoint_is_good_only_near_where_the_run_started():
    from mura_core.training.divergence import GOOD_LOSS_FACTOR, is_good, suggested_rate

    assert GOOD_LOSS_FACTOR == 4.0
    assert is_good(0.69, 0.69) and is_good(2.76, 0.69) and is_good(0.0, 0.69)
    assert not is_good(2.77, 0.69) and not is_good(2e28, 0.69)
    assert not is_good(float("nan"), 0.69) and not is_good(float("inf"), 0.69)
    assert is_good(None, 0.69) and is_good(5.0, None)  # nothing measured yet
    assert suggested_rate(50) == 5 and suggested_rate(50, good_lr=0.01) == 0.01
    assert suggested_rate(0.02, good_lr=0.05) == pytest.approx(0.002)


def test_a_run_that_diverges_from_its_start_keeps_no_checkpoint_and_says_train_afresh(
        synth, tmp_path, capsys):
    out = tmp_path / "run"
    line = refused(capsys, train_args(synth, out, "--lr", "50", "--checkpoint-every", "1",
                                      steps=30), status=1)
    assert line.startswith("error: training diverged: the loss is ")
    assert line.endswith("(learning rate 50); training stopped and no good checkpoint had been "
                         "written. Lower the learning rate: train afresh at a lower rate "
                         "(--overwrite --lr 5).")
    assert not (out / "checkpoint.npz").exists()


def test_resuming_from_the_named_checkpoint_at_the_suggested_rate_trains(synth, tmp_path,
                                                                          capsys):
    import re

    from mura_core.training import load_history
    from mura_core.training.checkpoint import checkpoint_step

    out = tmp_path / "run"
    assert main(train_args(synth, out, steps=4)) == 0
    capsys.readouterr()
    line = refused(capsys, train_args(synth, out, "--resume", "--checkpoint-every", "1",
                                      "--lr", "50", steps=30), status=1)
    kept = re.search(r"the last good checkpoint, (\S+) \(step (\d+)\), is kept \(finite weights, "
                     r"loss ([0-9.e+-]+) against ([0-9.e+-]+) at the start\)", line)
    assert kept, line
    rate = re.search(r"resume from it at a lower rate \(--resume --lr ([0-9.e+-]+)\)", line)
    assert rate, line
    path, step, loss, start = Path(kept[1]), int(kept[2]), float(kept[3]), float(kept[4])
    assert path == out / "checkpoint.npz" and checkpoint_step(path) == step == 4
    assert loss <= 4 * start, "no diverging step replaced the good checkpoint"
    assert all(np.isfinite(v).all() for v in mc.load_model(path).parameters().values())
    assert float(rate[1]) == 0.01, "a tenth of 50, but no more than the good checkpoint's rate"

    assert main(train_args(synth, out, "--resume", "--lr", rate[1], steps=30)) == 0
    history = load_history(out)
    assert history["status"] == "completed" and history["step"] == 30
    assert np.isfinite(history["loss"]).all()
    assert history["loss"][-1] <= 4 * history["start_loss"]


# --- 5. every option checked before any work ----------------------------------------------------

@pytest.mark.parametrize("option, value, message", [
    ("--min-lr", "1", "error: min_lr (--min-lr, the schedules' lowest rate) must be a number "
                      "from 0 to the learning rate 0.01, got 1.0"),
    ("--min-lr", "-0.01", "must be a number from 0 to the learning rate 0.01, got -0.01"),
    ("--min-lr", "nan", "must be a number from 0 to the learning rate 0.01, got nan"),
    ("--weight-decay", "inf", "weight decay must be a number >= 0, got inf"),
    ("--width", "nan", "width (the feature-map multiplier) must be a number above 0 and at most "
                       "16 ('wider' is 2), got nan"),
    ("--width", "1e300", "must be a number above 0 and at most 16 ('wider' is 2), got 1e+300"),
    ("--dropout", "nan", "dropout probability must be in [0, 1), got nan"),
    ("--momentum", "inf", "momentum must be in [0, 1), got inf"),
    ("--lr", "nan", "learning rate must be a positive number, got nan"),
    ("--seed", "-1", "seed must be a whole number >= 0, got -1"),
    ("--model-seed", "-1", "--model-seed must be a whole number >= 0, got -1"),
])
def test_train_refuses_a_bad_number_before_any_work(synth, tmp_path, capsys, option, value,
                                                    message):
    data = dict(synth, cache=str(tmp_path / "c"))
    args = train_args(data, tmp_path / "run")
    if option in args:
        args[args.index(option) + 1] = value
    else:
        args += [option, value]
    line = refused(capsys, args)
    assert line.startswith("error: ") and line.endswith(message)
    assert not any(tmp_path.iterdir()), "nothing written"


@pytest.mark.parametrize("value", ["0", "-5"])
def test_predict_and_evaluate_refuse_a_batch_size_below_one(synth, tmp_path, capsys, value):
    for args in (["predict", synth["model"], synth["image"]],
                 ["evaluate", "--model", synth["model"], "--data", synth["root"],
                  "--cache-dir", tmp_path / "c", "--no-progress", "--backend", "numpy"]):
        line = refused(capsys, [*args, "--batch-size", value])
        assert line == f"error: --batch-size must be at least 1 image, got {value}"
    assert not (tmp_path / "c").exists()


def test_every_command_refuses_cupy_where_it_cannot_run_in_one_line(synth, tmp_path, capsys,
                                                                     monkeypatch):
    from mura_core.nn import backend

    monkeypatch.setattr(backend, "_cupy_status",
                        lambda: (None, "CuPy is not importable (ModuleNotFoundError: cupy)"))
    expected = ("error: backend 'cupy' was asked for, but CuPy is not importable "
                "(ModuleNotFoundError: cupy). Install the GPU extra (pip install -e '.[gpu]') on "
                "a machine with an NVIDIA GPU, or use backend='numpy' (--backend numpy).")
    for args in (train_args(dict(synth, cache=str(tmp_path / "c")), tmp_path / "run"),
                 ["predict", synth["model"], synth["image"]],
                 ["evaluate", "--model", synth["model"], "--data", synth["root"],
                  "--cache-dir", tmp_path / "c", "--no-progress"],
                 ["explain", "--model", synth["model"], synth["image"], "--out", tmp_path / "x"],
                 ["report", "--profile", "smoke", "--no-progress", "--out", tmp_path / "r",
                  "--figures", tmp_path / "f", "--work", tmp_path / "w"]):
        args = [a for a in args if a not in ("--backend", "numpy")]
        assert refused(capsys, [*args, "--backend", "cupy"]) == expected
    assert not any(tmp_path.iterdir()), "nothing written"


def test_report_refuses_a_negative_seed_before_generating_data(tmp_path, capsys):
    line = refused(capsys, ["report", "--profile", "smoke", "--no-progress", "--seed", "-1",
                            "--out", tmp_path / "r", "--figures", tmp_path / "f",
                            "--work", tmp_path / "w"])
    assert line == "error: --seed must be a whole number >= 0, got -1"
    assert not any(tmp_path.iterdir())


# --- 6. messages that name the file and the fix --------------------------------------------------

def copy_of_the_data(synth, tmp_path) -> Path:
    import shutil

    shutil.copytree(Path(synth["root"]) / "MURA-v1.1", tmp_path / "MURA-v1.1")
    return tmp_path / "MURA-v1.1"


def test_a_binary_csv_names_the_file_and_the_fix(synth, tmp_path, capsys):
    root = copy_of_the_data(synth, tmp_path)
    (root / "train_image_paths.csv").write_bytes(b"MURA-v1.1/train/\x96\xff\x00 binary")
    line = refused(capsys, ["data", "index", root])
    assert line == (f"error: {root / 'train_image_paths.csv'}: not a text CSV file (byte 0x96 is "
                    "not UTF-8 text): restore it from the MURA download, or remove it (the split "
                    "is then read from its folders)")
    (root / "train_image_paths.csv").unlink()  # the fix works: the folders are scanned
    assert main(["data", "index", str(root)]) == 0


def image_paths_csv(synth, tmp_path, labels_csv: bool):
    """A copy of the data (without train_labeled_studies.csv unless ``labels_csv``), its
    train_image_paths.csv and that file's rows."""
    root = copy_of_the_data(synth, tmp_path)
    if not labels_csv:
        (root / "train_labeled_studies.csv").unlink()
    path = root / "train_image_paths.csv"
    return root, path, path.read_text().splitlines(keepends=True)


@pytest.mark.parametrize("labels_csv", [True, False])
def test_a_nul_byte_in_a_csv_row_names_the_file_and_its_line(synth, tmp_path, capsys,
                                                            labels_csv):
    root, path, rows = image_paths_csv(synth, tmp_path, labels_csv)
    rows[2] = rows[2][:20] + "\0" + rows[2][20:]
    path.write_text("".join(rows))
    line = refused(capsys, ["data", "index", root])
    assert line == (f"error: {path}, line 3: the row holds a NUL byte, so it names no file: "
                    "restore it from the MURA download, or remove it (the split is then read "
                    "from its folders)")


@pytest.mark.parametrize("labels_csv", [True, False])
def test_a_csv_path_with_dot_dot_is_refused_like_other_malformed_rows(synth, tmp_path, capsys,
                                                                     labels_csv):
    root, path, rows = image_paths_csv(synth, tmp_path, labels_csv)
    parts = rows[1].split("/")
    parts[2] = ".."  # train/../patient.../image.png: inside the root, body part '..'
    rows[1] = "/".join(parts)
    path.write_text("".join(rows))
    line = refused(capsys, ["data", "index", root])
    assert line.startswith(f"error: {path}, line 2: 'train/../patient")
    assert line.endswith("holds an empty, '.' or '..' folder name; a MURA path is "
                         "train/XR_*/patientN/studyK_positive|negative/imageM.png")


def test_model_files_with_a_bad_header_or_a_folder_name_the_file_and_the_fix(synth, tmp_path,
                                                                            capsys):
    model = mc.load_model(synth["model"])
    zero_std = mc.load_model(synth["model"])
    zero_std.metadata["preprocessing"]["std"] = 0.0
    mc.save_model(zero_std, tmp_path / "std0.npz")
    text = mc.load_model(synth["model"])
    text.metadata = "trained on MURA"
    mc.save_model(text, tmp_path / "text.npz")
    damaged = "the file is damaged or was not written by train: use a model saved by train"
    cases = {
        tmp_path / "std0.npz": f"its preprocessing std 0.0 is not a number above 0 (images are "
                               f"divided by it); {damaged}",
        tmp_path / "text.npz": f"its metadata is a str ('trained on MURA'), not a table of "
                               f"settings; {damaged}",
    }
    for path, says in cases.items():
        for args in (["predict", path, synth["image"]],
                     ["explain", "--model", path, synth["image"], "--out", tmp_path / "x"],
                     ["evaluate", "--model", path, "--data", synth["root"], "--cache-dir",
                      synth["cache"], "--no-progress", "--backend", "numpy"]):
            assert refused(capsys, args) == f"error: {path}: {says}"
    run = synth["model"].parent
    assert refused(capsys, ["predict", run, synth["image"]]) == (
        f"error: {run} is a folder, not a model file: give a model file in it, e.g. "
        f"{run / 'best.npz'}")
    assert refused(capsys, ["predict", tmp_path, synth["image"]]) == (
        f"error: {tmp_path} is a folder, not a model file: give a model file saved by train, "
        f"e.g. {tmp_path / 'best.npz'}")
    assert model.metadata["preprocessing"]["std"] > 0  # the original loads
    assert not (tmp_path / "x").exists()


# --- 7. the smaller cases ---------------------------------------------------------------

def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell script starts a job with &


@pytest.mark.parametrize("signum, started_ignoring_sigint", [(signal.SIGINT, True),
                                                              (signal.SIGTERM, False)])
def test_a_stopped_report_says_interrupted_and_nothing_else(tmp_path, signum,
                                                            started_ignoring_sigint):
    out = tmp_path / "stdout.txt"
    with open(out, "w") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mura_core", "report", "--profile", "smoke", "--no-progress",
             "--no-pdf", "--out", str(tmp_path / "report"), "--figures", str(tmp_path / "fig"),
             "--work", str(tmp_path / "work"), "--only", "01_model", "02_training"],
            cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="agg"),
            stdout=stdout, stderr=subprocess.PIPE, text=True,
            preexec_fn=_ignore_sigint if started_ignoring_sigint else None)
        try:
            wait_for(lambda: "01_model ..." in out.read_text(), proc, timeout=300,
                     what="the first notebook")
            time.sleep(3)  # its kernel runs a cell
            proc.send_signal(signum)
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 128 + signum
    assert err.strip().splitlines() == ["interrupted"], err[-3000:]
    assert not (tmp_path / "report" / "report.html").exists()


def test_resume_with_fewer_steps_than_done_is_refused_before_any_work(synth, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(synth, out, steps=8)) == 0
    before = files_in(out)
    capsys.readouterr()
    line = refused(capsys, train_args(synth, out, "--resume", steps=4))
    assert line == (f"error: cannot resume {out / 'checkpoint.npz'} for 4 steps in all: the run "
                    "has done 8 already; give --steps above 8 to train on (or start afresh "
                    "with --overwrite)")
    assert files_in(out) == before
    assert main(train_args(synth, out, "--resume", steps=10)) == 0
    assert "from step 8 to step 10 (5 per epoch)" in capsys.readouterr().out


def test_report_refuses_a_missing_data_folder_and_an_unknown_notebook_with_status_2(tmp_path,
                                                                                    capsys):
    places = ["--out", tmp_path / "r", "--figures", tmp_path / "f", "--work", tmp_path / "w"]
    line = refused(capsys, ["report", "--profile", "smoke", "--data", "/nope", *places])
    assert line == ("error: --data /nope: no such folder; pass the folder that holds MURA-v1.1 "
                    "(or MURA-v1.1 itself), or leave --data out to use synthetic data")
    line = refused(capsys, ["report", "--profile", "smoke", "--only", "99_nope", *places])
    assert line.startswith("error: --only: notebook(s) not found: ")
    assert line.endswith("99_nope.ipynb; choose from 01_model, 02_training, 03_evaluation, "
                         "04_architectures, 05_hyperparameters, 06_explanations")
    assert not any(tmp_path.iterdir())


def test_explain_leaves_no_empty_out_folder_when_no_image_can_be_read(synth, tmp_path, capsys):
    (tmp_path / "text.png").write_text("not an image")
    assert main(["explain", "--model", str(synth["model"]), str(tmp_path / "nope.png"),
                 str(tmp_path / "text.png"), "--out", str(tmp_path / "maps")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"error: {tmp_path / 'nope.png'}: no such file"
    assert err[-1] == "2 of 2 files could not be explained"
    assert not (tmp_path / "maps").exists()
    assert main(["explain", "--model", str(synth["model"]), str(synth["image"]),
                 str(tmp_path / "text.png"), "--out", str(tmp_path / "maps")]) == 1
    assert [p.name for p in (tmp_path / "maps").iterdir()] == ["image1_gradcam.png"]


def test_a_synthetic_set_the_disk_cannot_hold_leaves_nothing_and_one_line(tmp_path, capsys,
                                                                         monkeypatch):
    import mura_core.data.synthetic as synthetic

    real, written = synthetic._write_image, []

    def fills_up(task):
        if len(written) == 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(real(task))

    monkeypatch.setattr(synthetic, "_write_image", fills_up)
    out = tmp_path / "synth"
    line = refused(capsys, ["data", "synth", out, "--train", "40", "--valid", "8",
                            "--workers", "1", "--no-progress"], status=1)
    assert line == (f"error: the disk of the output folder {out} filled up while the synthetic "
                    "set was written, and nothing of it is kept: free some space, write fewer "
                    "images (--train, --valid) or choose another folder")
    assert len(written) == 20 and list(out.iterdir()) == []


def test_any_other_full_disk_is_one_line_with_status_1(synth, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "fsync", no_space)
    line = refused(capsys, ["evaluate", "--model", synth["model"], "--data", synth["root"],
                            "--cache-dir", synth["cache"], "--no-progress", "--backend", "numpy",
                            "--json", tmp_path / "tables.json"], status=1)
    assert line == ("error: the disk filled up (No space left on device): free some space, or "
                    "choose another output folder")
    assert list(tmp_path.iterdir()) == []
