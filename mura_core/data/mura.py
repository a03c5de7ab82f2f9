"""Index MURA v1.1 on disk: find the root, read a split's images and labels.

The split is read from MURA's CSVs (no header; paths start with ``MURA-v1.1/``; study paths
end with ``/``). When the CSVs are missing, the folders are scanned instead, skipping macOS
``._*`` files and anything not named ``imageN.png``.

Labels follow this project's convention: t = 1 for NORMAL, t = 0 for ABNORMAL. MURA's own
label is the opposite (``positive`` = abnormal = 1), so t = 1 - mura_label.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

BODY_PARTS = ("XR_ELBOW", "XR_FINGER", "XR_FOREARM", "XR_HAND", "XR_HUMERUS", "XR_SHOULDER", "XR_WRIST")
SPLITS = ("train", "valid")
ROOT_NAME = "MURA-v1.1"
NORMAL, ABNORMAL = 1, 0

_STUDY_DIR = re.compile(r"^(study\d+)_(positive|negative)$")
_IMAGE_NAME = re.compile(r"^image\d+\.png$")
_PATIENT_DIR = re.compile(r"^patient\d+$")
SYNTH_HINT = "To run without the real data set, generate a synthetic one: python -m mura_core data synth OUT"


def body_part_name(body_part: str) -> str:
    """The name people read: ``"XR_WRIST"`` -> ``"wrist"``."""
    return str(body_part).removeprefix("XR_").lower()


class MuraFormatError(ValueError):
    """A MURA folder or CSV that does not follow MURA v1.1's layout; the message names the file."""


@dataclass(frozen=True)
class ImageRecord:
    """One radiograph.

    path: absolute path of the PNG (str). label: 1 normal / 0 abnormal (int).
    body_part: e.g. ``"XR_WRIST"``. patient: e.g. ``"patient00001"``. study: e.g. ``"study1"``.
    split: ``"train"`` or ``"valid"``.
    """

    path: str
    label: int
    body_part: str
    patient: str
    study: str
    split: str

    @property
    def patient_key(self) -> str:
        """Unique patient id within the data set: ``"train/patient00001"``."""
        return f"{self.split}/{self.patient}"

    @property
    def study_key(self) -> str:
        """Unique study id: ``"train/XR_WRIST/patient00001/study1"`` (a patient id alone is not
        enough: the same id appears under several body parts)."""
        return f"{self.split}/{self.body_part}/{self.patient}/{self.study}"


def _looks_like_mura(folder: Path) -> bool:
    if any((folder / f"{s}_image_paths.csv").is_file() for s in SPLITS):
        return True
    return any((folder / s / part).is_dir() for s in SPLITS for part in BODY_PARTS)


def find_mura_root(path: str | os.PathLike) -> Path:
    """Return the ``MURA-v1.1`` folder given that folder or its parent (absolute Path).

    Raises FileNotFoundError saying what was expected (and how to generate a synthetic set)
    when ``path`` is missing or is neither.
    """
    folder = Path(path).expanduser()
    if not folder.exists():
        raise FileNotFoundError(
            f"MURA folder {str(folder)!r} does not exist. Point at the MURA-v1.1 folder (or the "
            f"folder that contains it), downloaded from the Stanford AIMI site. {SYNTH_HINT}"
        )
    if not folder.is_dir():
        raise NotADirectoryError(f"{str(folder)!r} is a file, not a MURA-v1.1 folder. {SYNTH_HINT}")
    for candidate in (folder, folder / ROOT_NAME):
        if candidate.is_dir() and _looks_like_mura(candidate):
            return Path(os.path.abspath(candidate))
    raise FileNotFoundError(
        f"{str(folder)!r} is not a MURA v1.1 folder: expected train_image_paths.csv / "
        f"valid_image_paths.csv or train/XR_*/ and valid/XR_*/ folders in it or in "
        f"{str(folder / ROOT_NAME)!r}. {SYNTH_HINT}"
    )


def _parse_image_path(rel: str, split: str, where: str) -> tuple[str, str, str, str, int]:
    """``train/XR_X/patientN/studyK_positive/imageM.png`` -> (body_part, patient, study, suffix_label)."""
    parts = rel.strip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise MuraFormatError(f"{where}: {rel!r} holds an empty, '.' or '..' folder name; a MURA "
                              f"path is {split}/XR_*/patientN/studyK_positive|negative/imageM.png")
    if len(parts) != 5 or parts[0] != split or not parts[1].startswith("XR_") \
            or not _PATIENT_DIR.match(parts[2]):
        raise MuraFormatError(
            f"{where}: {rel!r} is not a {split}/XR_*/patientN/studyK_positive|negative/imageM.png path"
        )
    match = _STUDY_DIR.match(parts[3])
    if match is None:
        raise MuraFormatError(f"{where}: study folder {parts[3]!r} in {rel!r} must be "
                              "studyK_positive or studyK_negative")
    label = ABNORMAL if match.group(2) == "positive" else NORMAL
    return parts[1], parts[2], match.group(1), parts[4], label


def _strip_root_prefix(csv_path: str) -> str:
    # CSV paths start with "MURA-v1.1/"; a renamed copy keeps the same first component shape.
    head, _, rest = csv_path.strip().partition("/")
    return rest if head and rest and head not in SPLITS else csv_path.strip()


def _csv_rows(path: Path, fix: str):
    """(line number, row) of every row of the CSV file ``path``; MuraFormatError naming it,
    ending with ``fix``, for a file that is not UTF-8 text, holds a NUL byte or is no CSV."""
    reader = None
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            for row in reader:
                if any("\0" in cell for cell in row):
                    raise MuraFormatError(f"{path}, line {reader.line_num}: the row holds a NUL "
                                          f"byte, so it names no file: {fix}")
                yield reader.line_num, row
    except UnicodeDecodeError as exc:
        raise MuraFormatError(f"{path}: not a text CSV file (byte 0x{exc.object[exc.start]:02x} "
                              f"is not UTF-8 text): {fix}") from None
    except csv.Error as exc:
        line = f", line {reader.line_num}" if reader is not None else ""
        raise MuraFormatError(f"{path}{line}: not a readable CSV file ({exc}): {fix}") from None


def _read_study_labels(path: Path, split: str) -> dict[str, int]:
    """``{"train/XR_X/patientN/studyK_positive": t}`` with t = 1 normal, 0 abnormal."""
    labels: dict[str, int] = {}
    fix = ("restore it from the MURA download, or remove it (the labels are then read from "
           "the study folders' names)")
    for line_no, row in _csv_rows(path, fix):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2 or row[1].strip() not in ("0", "1"):
            raise MuraFormatError(
                f"{path}, line {line_no}: expected 'MURA-v1.1/{split}/XR_*/patientN/studyK_.../,0|1' "
                f"(MURA's label: 1 = abnormal), got {','.join(row)!r}"
            )
        study = _strip_root_prefix(row[0]).strip("/")
        labels[study] = 1 - int(row[1].strip())
    return labels


def _records_from_csv(root: Path, split: str, image_csv: Path, study_csv: Path | None) -> list[ImageRecord]:
    study_labels = _read_study_labels(study_csv, split) if study_csv is not None else None
    records = []
    fix = ("restore it from the MURA download, or remove it (the split is then read from its "
           "folders)")
    for line_no, row in _csv_rows(image_csv, fix):
        if not row or not row[0].strip():
            continue
        rel = _strip_root_prefix(row[0])
        where = f"{image_csv}, line {line_no}"
        body_part, patient, study, _, suffix_label = _parse_image_path(rel, split, where)
        study_dir = rel.rsplit("/", 1)[0]
        label = suffix_label
        if study_labels is not None:
            if study_dir not in study_labels:
                raise MuraFormatError(f"{where}: study {study_dir!r} is not listed in {study_csv}")
            label = study_labels[study_dir]
            if label != suffix_label:
                raise MuraFormatError(
                    f"study {study_dir!r}: {study_csv} says "
                    f"{'normal' if label == NORMAL else 'abnormal'} (MURA label {1 - label}) but the "
                    f"folder suffix says {'normal' if suffix_label == NORMAL else 'abnormal'}; fix the CSV "
                    f"or the folder name"
                )
        records.append(ImageRecord(os.path.join(str(root), *rel.split("/")), label, body_part,
                                   patient, study, split))
    return records


def _natural_key(name: str) -> tuple:
    return tuple(int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name))


def _records_from_scan(root: Path, split: str) -> list[ImageRecord]:
    split_dir = root / split
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"{root}: neither {split}_image_paths.csv nor a {split}/ folder was found. {SYNTH_HINT}"
        )
    records = []
    for body_part in sorted(os.listdir(split_dir)):
        part_dir = split_dir / body_part
        if body_part not in BODY_PARTS or not part_dir.is_dir():
            continue
        for patient in sorted(os.listdir(part_dir), key=_natural_key):
            if not _PATIENT_DIR.match(patient) or not (part_dir / patient).is_dir():
                continue
            for study_dir in sorted(os.listdir(part_dir / patient), key=_natural_key):
                match = _STUDY_DIR.match(study_dir)
                folder = part_dir / patient / study_dir
                if match is None or not folder.is_dir():
                    continue
                label = ABNORMAL if match.group(2) == "positive" else NORMAL
                for name in sorted(os.listdir(folder), key=_natural_key):
                    if _IMAGE_NAME.match(name):  # also skips macOS "._image1.png"
                        records.append(ImageRecord(str(folder / name), label, body_part, patient,
                                                   match.group(1), split))
    return records


def read_split(root: str | os.PathLike, split: str) -> list[ImageRecord]:
    """The images of one split (``"train"`` or ``"valid"``), in the CSV's order.

    ``root``: the ``MURA-v1.1`` folder or its parent. Uses ``{split}_image_paths.csv`` and
    ``{split}_labeled_studies.csv`` when present (the label CSV must agree with the folder
    suffixes, else MuraFormatError naming the study), else scans ``{split}/XR_*/...``.
    Labels: 1 normal, 0 abnormal. Files are not opened here; a missing or corrupt image is
    reported by the cache build.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    mura_root = find_mura_root(root)
    image_csv = mura_root / f"{split}_image_paths.csv"
    study_csv = mura_root / f"{split}_labeled_studies.csv"
    if image_csv.is_file():
        records = _records_from_csv(mura_root, split, image_csv, study_csv if study_csv.is_file() else None)
        source = str(image_csv)
    else:
        records = _records_from_scan(mura_root, split)
        source = str(mura_root / split)
    if not records:
        raise MuraFormatError(
            f"{source}: no {split} images found (expected {split}/XR_*/patientN/studyK_positive|negative/"
            f"imageM.png). {SYNTH_HINT}"
        )
    return records


def index_source(root: str | os.PathLike, split: str) -> str:
    """``"csv"`` when the split is read from MURA's CSVs, ``"folder scan"`` otherwise."""
    return "csv" if (find_mura_root(root) / f"{split}_image_paths.csv").is_file() else "folder scan"
