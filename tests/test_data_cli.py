"""``python -m mura_core data synth | index | cache``."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_data_mura import write_tiny_mura

from mura_core.__main__ import main


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
    args = ["data", "cache", str(tmp_path / "src"), "--size", "32", "--cache-dir", str(tmp_path / "c"),
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


@pytest.mark.parametrize("size, message", [
    ("0", "--size 0 is too small: the networks take images of at least 27x27 pixels"),
    ("-3", "--size -3 is too small"),
    ("16", "use --size 27 or more"),
])
def test_cache_size_below_the_networks_smallest_input_is_refused_before_decoding(
        tmp_path: Path, capsys, size, message) -> None:
    from mura_core.nn.models import smallest_input_size

    assert smallest_input_size() == smallest_input_size("baseline") == 27  # the message's number
    write_tiny_mura(tmp_path / "src")
    cache_dir = tmp_path / "c"
    assert main(["data", "cache", str(tmp_path / "src"), "--size", size, "--cache-dir", str(cache_dir),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not cache_dir.exists(), "nothing decoded, no junk folder"


@pytest.mark.parametrize("option, value, message", [
    ("--train", "1", "--train must be a whole number of images from 8 to 200,000, got 1"),
    ("--valid", "1000000000", "--valid must be a whole number of images from 2 to 200,000, got 1000000000"),
    ("--seed", "-1", "--seed must be a non-negative integer, got -1"),
    ("--workers", "0", "--workers must be at least 1 worker process, got 0"),
])
def test_synth_options_outside_the_generators_limits_are_refused_before_writing(
        tmp_path: Path, capsys, option, value, message) -> None:
    args = {"--train": "10", "--valid": "3", option: value}
    out = tmp_path / "s"
    assert main(["data", "synth", str(out), *[x for kv in args.items() for x in kv], "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {message}\n"
    assert not out.exists()


def test_a_split_where_no_image_decodes_names_its_first_failure_and_leaves_nothing(
        tmp_path: Path, capsys) -> None:
    from mura_core.data import read_split

    root = write_tiny_mura(tmp_path / "src")
    valid = read_split(root, "valid")
    for record in valid:
        Path(record.path).write_text("not an image")
    cache_dir = tmp_path / "c"
    assert main(["data", "cache", str(root), "--size", "32", "--cache-dir", str(cache_dir),
                 "--no-progress", "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {root}: none of the {len(valid)} valid images could be decoded "
                          f"(the first, {valid[0].path}: ")
    assert "first failure" not in err and "\n" not in err
    assert not cache_dir.exists()


def test_a_skipped_image_is_one_warning_line_naming_it(tmp_path: Path) -> None:
    from processes import cli

    write_tiny_mura(tmp_path / "src")
    broken = sorted((tmp_path / "src").rglob("train/**/*.png"))[0]
    broken.write_bytes(broken.read_bytes()[:40])
    done = cli("data", "cache", tmp_path / "src", "--size", "32", "--cache-dir", tmp_path / "c",
               "--no-progress", "--workers", "1")
    assert done.returncode == 0, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"warning: skipped {broken}: cannot be decoded as an image"), line
    assert "train: 6 images, 1 skipped" in done.stdout
