"""Indexing MURA v1.1: CSVs in the real format, folder scan, labels, keys, errors."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mura_core.data import (
    ABNORMAL,
    NORMAL,
    ImageRecord,
    MuraFormatError,
    find_mura_root,
    read_split,
)

# (split, body part, patient, study folder, images): a patient with mixed labels, the same
# patient id under two body parts, studies of 1 to 3 images.
TINY_STUDIES = [
    ("train", "XR_WRIST", "patient00001", "study1_positive", 2),
    ("train", "XR_WRIST", "patient00001", "study2_negative", 1),
    ("train", "XR_HAND", "patient00001", "study1_negative", 1),
    ("train", "XR_ELBOW", "patient00002", "study1_negative", 3),
    ("valid", "XR_FINGER", "patient00003", "study1_positive", 1),
    ("valid", "XR_SHOULDER", "patient00004", "study1_negative", 2),
]


def write_tiny_mura(parent: Path, studies=TINY_STUDIES, csv: bool = True, junk: bool = True) -> Path:
    """Write parent/MURA-v1.1 with small PNGs (varied sizes, gray and RGB) and, when ``csv``,
    the four CSVs exactly as MURA distributes them. Returns the MURA-v1.1 path."""
    root = parent / "MURA-v1.1"
    rng = np.random.default_rng(0)
    rows = {"train": ([], []), "valid": ([], [])}
    for k, (split, part, patient, study, n) in enumerate(studies):
        folder = root / split / part / patient / study
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(1, n + 1):
            h, w = 24 + 4 * k, 16 + 3 * i
            pixels = rng.integers(0, 256, (h, w), dtype=np.uint8)
            img = Image.fromarray(pixels)
            (img.convert("RGB") if (k + i) % 2 else img).save(folder / f"image{i}.png")
            rows[split][0].append(f"MURA-v1.1/{split}/{part}/{patient}/{study}/image{i}.png")
        positive = 1 if study.endswith("positive") else 0
        rows[split][1].append(f"MURA-v1.1/{split}/{part}/{patient}/{study}/,{positive}")
    if junk:
        first = studies[0]
        junk = root / first[0] / first[1] / first[2] / first[3] / "._image1.png"
        junk.write_bytes(b"\x00\x05\x16\x07junk")
    if csv:
        for split, (images, labels) in rows.items():
            (root / f"{split}_image_paths.csv").write_text("".join(line + "\n" for line in images))
            (root / f"{split}_labeled_studies.csv").write_text("".join(line + "\n" for line in labels))
    return root


def expected_records(root: Path, split: str) -> list[ImageRecord]:
    """The records TINY_STUDIES should give, written out by hand from the table."""
    out = []
    for s, part, patient, study, n in TINY_STUDIES:
        if s != split:
            continue
        label = ABNORMAL if study.endswith("_positive") else NORMAL
        for i in range(1, n + 1):
            path = str(root / s / part / patient / study / f"image{i}.png")
            out.append(ImageRecord(path, label, part, patient, study.split("_")[0], s))
    return out


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny_mura(tmp_path)


def test_csv_records_are_exactly_the_expected_ones(tiny: Path) -> None:
    for split in ("train", "valid"):
        assert read_split(tiny, split) == expected_records(tiny, split)


def test_labels_are_inverted_from_mura(tiny: Path) -> None:
    """MURA's positive (abnormal, CSV label 1) is t = 0 here; negative is t = 1."""
    assert NORMAL == 1 and ABNORMAL == 0
    records = read_split(tiny, "train")
    positive = [r for r in records if "study1_positive" in r.path]
    negative = [r for r in records if "_negative" in r.path]
    assert positive and all(r.label == 0 for r in positive)
    assert negative and all(r.label == 1 for r in negative)
    assert all(isinstance(r.label, int) for r in records)


def test_parent_folder_and_mura_folder_both_work(tiny: Path) -> None:
    assert find_mura_root(tiny) == tiny
    assert find_mura_root(tiny.parent) == tiny
    assert read_split(tiny.parent, "valid") == read_split(tiny, "valid")
    assert all(os.path.isabs(r.path) and os.path.isfile(r.path) for r in read_split(tiny.parent, "train"))


def test_folder_scan_matches_csv_and_skips_junk(tiny: Path) -> None:
    from_csv = {split: read_split(tiny, split) for split in ("train", "valid")}
    for name in ("train_image_paths.csv", "train_labeled_studies.csv", "valid_image_paths.csv",
                 "valid_labeled_studies.csv"):
        (tiny / name).unlink()
    (tiny / "train" / "XR_ELBOW" / "patient00002" / "study1_negative" / "notes.txt").write_text("x")
    for split in ("train", "valid"):
        scanned = read_split(tiny, split)
        assert sorted(scanned, key=lambda r: r.path) == sorted(from_csv[split], key=lambda r: r.path)
        assert not any(os.path.basename(r.path).startswith("._") for r in scanned)


def test_keys_tell_apart_body_parts_and_splits(tiny: Path) -> None:
    records = read_split(tiny, "train")
    wrist = next(r for r in records if r.body_part == "XR_WRIST" and r.study == "study1")
    hand = next(r for r in records if r.body_part == "XR_HAND")
    assert wrist.patient == hand.patient == "patient00001"
    assert wrist.patient_key == hand.patient_key == "train/patient00001"
    assert wrist.study_key == "train/XR_WRIST/patient00001/study1"
    assert hand.study_key == "train/XR_HAND/patient00001/study1"
    assert len({r.study_key for r in records}) == 4


def test_csv_label_contradicting_the_folder_is_an_error_naming_the_study(tiny: Path) -> None:
    csv_path = tiny / "train_labeled_studies.csv"
    csv_path.write_text(csv_path.read_text().replace("study2_negative/,0", "study2_negative/,1"))
    with pytest.raises(MuraFormatError, match="train/XR_WRIST/patient00001/study2_negative"):
        read_split(tiny, "train")


def test_malformed_csv_path_names_the_file_and_line(tiny: Path) -> None:
    (tiny / "valid_image_paths.csv").write_text("MURA-v1.1/valid/XR_FINGER/patient00003/image1.png\n")
    with pytest.raises(MuraFormatError, match=r"valid_image_paths.csv, line 1"):
        read_split(tiny, "valid")


def test_missing_root_says_how_to_get_data(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        read_split(tmp_path / "nowhere", "train")
    assert "python -m mura_core data synth" in str(info.value)


def test_folder_that_is_not_mura_says_what_was_expected(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a MURA v1.1 folder") as info:
        find_mura_root(tmp_path / "empty")
    assert "train_image_paths.csv" in str(info.value) and "data synth" in str(info.value)


def test_split_without_images_is_an_error(tmp_path: Path) -> None:
    root = write_tiny_mura(tmp_path, csv=False)
    shutil.rmtree(root / "valid")
    (root / "valid" / "XR_HAND").mkdir(parents=True)
    with pytest.raises(MuraFormatError, match="no valid images found"):
        read_split(root, "valid")
    with pytest.raises(ValueError, match="split must be one of"):
        read_split(root, "test")
