"""``python -m mura_core data synth | index | cache``."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mura_core.__main__ import main
from test_data_mura import write_tiny_mura


def test_index_prints_mura_shaped_counts(tmp_path: Path, capsys) -> None:
    write_tiny_mura(tmp_path)
    assert main(["data", "index", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # TINY_STUDIES by hand: train 2 patients, 4 studies (3 normal), 7 images (5 normal);
    # valid 2 patients, 2 studies (1 normal), 3 images (2 normal).
    assert "| patients | 2 | 2 |" in out
    assert "| studies | 4 (3 normal / 1 abnormal) | 2 (1 normal / 1 abnormal) |" in out
    assert "| images | 7 (5 normal / 2 abnormal) | 3 (2 normal / 1 abnormal) |" in out
    assert "| WRIST | 1 | 2 / 3 | 1 / 2 | 0 | 0 / 0 | 0 / 0 |" in out
    assert "(train: csv, valid: csv)" in out


def test_cache_builds_then_reuses(tmp_path: Path, capsys) -> None:
    write_tiny_mura(tmp_path / "src")
    args = ["data", "cache", str(tmp_path / "src"), "--size", "16", "--cache-dir", str(tmp_path / "c"),
            "--no-progress", "--time-epoch", "4"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "built in" in first and "train: 7 images, 0 skipped" in first and "one train epoch" in first
    assert main(args) == 0
    assert "up to date, reused" in capsys.readouterr().out


def test_synth_writes_a_set_and_refuses_to_overwrite_without_force(tmp_path: Path, capsys) -> None:
    args = ["data", "synth", str(tmp_path / "s"), "--train", "10", "--valid", "3", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "train: 10 images" in out and "valid: 3 images" in out and "truncated on purpose" in out
    assert main(args) == 2, "an existing set is bad input: exit status 2"
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--force" in err and "Traceback" not in err
    assert main(args + ["--force"]) == 0


def test_missing_folder_is_a_one_line_error_from_the_command_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mura_core", "data", "index", str(tmp_path / "nope")],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith("error: MURA folder") and "data synth" in done.stderr
    assert "Traceback" not in done.stderr
