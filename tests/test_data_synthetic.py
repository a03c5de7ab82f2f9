"""The synthetic MURA-layout generator: layout, counts, quirks, determinism, a learnable signal."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mura_core.data import (
    BODY_PARTS,
    SkippedImageWarning,
    build_cache,
    generate_synthetic,
    is_synthetic,
    read_split,
)
from mura_core.data.synthetic import GENERATOR_VERSION, marker_mismatch


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth")
    return out, generate_synthetic(out, n_train=400, n_valid=200, seed=0, workers=2)


@pytest.fixture(scope="module")
def synth_cache(synth, tmp_path_factory):
    out, _ = synth
    with pytest.warns(SkippedImageWarning, match="truncated"):
        return build_cache(out, size=227, cache_dir=tmp_path_factory.mktemp("c"), workers=2, progress=False)


def test_layout_and_counts_match_the_summary(synth) -> None:
    out, summary = synth
    root = out / "MURA-v1.1"
    assert summary["root"] == str(root) and is_synthetic(out) and is_synthetic(root)
    for split in ("train", "valid"):
        records = read_split(out, split)
        counts = summary[split]
        assert len(records) == counts["images"] == {"train": 400, "valid": 200}[split]
        assert len({r.study_key for r in records}) == counts["studies"]
        assert len({r.patient_key for r in records}) == counts["patients"]
        assert sum(r.label for r in records) == counts["normal_images"]
        assert 0.5 < counts["normal_images"] / counts["images"] < 0.7  # about MURA's 60 / 40
        first_line = (root / f"{split}_image_paths.csv").read_text().splitlines()[0]
        assert first_line.startswith(f"MURA-v1.1/{split}/XR_") and first_line.endswith(".png")
        study_line = (root / f"{split}_labeled_studies.csv").read_text().splitlines()[0]
        assert study_line.startswith(f"MURA-v1.1/{split}/") and study_line[-3:] in ("/,0", "/,1")
    train, valid = read_split(out, "train"), read_split(out, "valid")
    assert {r.body_part for r in train} == set(BODY_PARTS)
    train_ids = {int(r.patient[7:]) for r in train}
    valid_ids = {int(r.patient[7:]) for r in valid}
    assert min(train_ids) == 1 and min(valid_ids) == max(train_ids) + 1  # valid ids continue train's


def test_mura_quirks_are_present(synth) -> None:
    out, summary = synth
    train = read_split(out, "train")
    per_study = defaultdict(int)
    labels_per_patient_part = defaultdict(set)
    parts_per_patient = defaultdict(set)
    for r in train:
        per_study[r.study_key] += 1
        labels_per_patient_part[(r.body_part, r.patient)].add(r.label)
        parts_per_patient[r.patient].add(r.body_part)
    assert set(per_study.values()) <= {1, 2, 3, 4} and max(per_study.values()) == 4
    assert any(len(v) == 2 for v in labels_per_patient_part.values())  # mixed labels
    assert any(len(v) == 2 for v in parts_per_patient.values())  # one id, two body parts
    junk = list((out / "MURA-v1.1").rglob("._*"))
    assert len(junk) == len(summary["junk_files"]) >= 2
    assert not any(r.path.endswith("/._image1.png") for r in train)
    modes, long_sides, narrow = set(), [], 0
    for r in train[:120]:
        with Image.open(r.path) as img:
            if r.path in summary["truncated"]:
                continue
            modes.add(img.mode)
            long_sides.append(max(img.size))
            narrow += min(img.size) / max(img.size) < 0.56
    assert modes == {"L", "RGB"} and max(long_sides) == 512 and min(long_sides) >= 300 and narrow > 0


def test_truncated_file_is_listed_and_the_cache_survives_it(synth, synth_cache) -> None:
    out, summary = synth
    (truncated,) = summary["truncated"]
    assert truncated in {r.path for r in read_split(out, "train")}
    train = synth_cache.split("train")
    assert [p for p, _ in train.skipped] == [truncated] and len(train) == 399
    assert len(synth_cache.split("valid")) == 200 and synth_cache.split("valid").skipped == []


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path) -> None:
    a = generate_synthetic(tmp_path / "a", n_train=8, n_valid=2, seed=5)
    b = generate_synthetic(tmp_path / "b", n_train=8, n_valid=2, seed=5)
    generate_synthetic(tmp_path / "c", n_train=8, n_valid=2, seed=6)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert files_a == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.png"))
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)
    assert a["train"] == b["train"] and a["valid"] == b["valid"]
    first = read_split(tmp_path / "a", "train")[0].path
    other = read_split(tmp_path / "c", "train")[0].path
    assert Path(first).read_bytes() != Path(other).read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_synthetic(tmp_path / "a", n_train=8, n_valid=2)
    generate_synthetic(tmp_path / "a", n_train=9, n_valid=2, overwrite=True)
    assert len(read_split(tmp_path / "a", "train")) == 9
    marker = json.loads((tmp_path / "a" / "SYNTHETIC.json").read_text())
    assert marker["train"]["images"] == 9 and "synthetic" in marker["note"]
    assert marker["generator_version"] == GENERATOR_VERSION
    assert marker_mismatch(marker, seed=0, n_train=9, n_valid=2) is None
    assert marker_mismatch(marker, seed=1, n_train=8, n_valid=2) == \
        "seed 0 instead of 1, train images 9 instead of 8"
    old = dict(marker, generator_version=GENERATOR_VERSION - 1)
    assert marker_mismatch(old, seed=0, n_train=9, n_valid=2) == \
        f"generator version {GENERATOR_VERSION - 1} instead of {GENERATOR_VERSION}"


def line_features(images: np.ndarray) -> np.ndarray:
    """A tiny fixed first layer: counts of thin dark valleys and bright ridges (darker or
    brighter than both neighbours 1 or 2 pixels away, across x or y) above a few contrasts,
    plus bright-pixel percentiles. (n, H, W) uint8 -> (n, 15) float64."""
    x = images.astype(np.float32)
    feats = []
    for d in (1, 2):
        mid_x, mid_y = x[:, d:-d, d:-d], x[:, d:-d, d:-d]
        valley = np.maximum(np.minimum(x[:, d:-d, :-2 * d] - mid_x, x[:, d:-d, 2 * d:] - mid_x),
                            np.minimum(x[:, :-2 * d, d:-d] - mid_y, x[:, 2 * d:, d:-d] - mid_y))
        ridge = np.maximum(np.minimum(mid_x - x[:, d:-d, :-2 * d], mid_x - x[:, d:-d, 2 * d:]),
                           np.minimum(mid_y - x[:, :-2 * d, d:-d], mid_y - x[:, 2 * d:, d:-d]))
        for level in (10, 20, 35):
            feats += [np.log1p((valley > level).sum((1, 2))), np.log1p((ridge > level).sum((1, 2)))]
    feats += list(np.percentile(x.reshape(len(x), -1), [90, 99, 99.9], axis=1) / 255)
    return np.stack(feats, axis=1).astype(np.float64)


def test_signal_is_learnable_but_not_trivial(synth_cache) -> None:
    """Logistic regression on the line features: clearly above chance on valid images (AUC),
    clearly below perfect (some abnormal images carry no sign)."""
    train, valid = synth_cache.split("train"), synth_cache.split("valid")
    x_train, x_valid = line_features(np.asarray(train.images)), line_features(np.asarray(valid.images))
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-9
    x_train, x_valid = (x_train - mu) / sd, (x_valid - mu) / sd
    t = train.labels.astype(np.float64)
    w, b = np.zeros(x_train.shape[1]), 0.0
    for _ in range(2000):
        g = 1 / (1 + np.exp(-(x_train @ w + b))) - t
        w -= 0.2 * (x_train.T @ g / len(t) + 1e-3 * w)
        b -= 0.2 * g.mean()
    p = 1 / (1 + np.exp(-(x_valid @ w + b)))
    y = valid.labels
    auc = (p[y == 1][:, None] > p[y == 0][None, :]).mean()
    accuracy = ((p > 0.5) == y).mean()
    majority = max(y.mean(), 1 - y.mean())
    assert auc > 0.68, auc
    assert accuracy > majority + 0.04, (accuracy, majority)
    assert accuracy < 0.95, accuracy


# --------------------------------------------------------------------------- where the signs are


def _planned(seed: int = 3, n_train: int = 60):
    from mura_core.data.synthetic import _plan

    train, _ = _plan(seed, n_train, 2)
    return [s for _, _, specs in train for s in specs]


def test_the_sign_mask_does_not_change_the_images() -> None:
    """Rendering with the sign-mask hook in place gives the images generator version 2 drew
    (their size, mean and spread recorded from the generator before the hook; a change needs a
    version bump). Statistics, not digests: NumPy's float32 exp and sin differ in the last bit
    between builds and processors, which moves a pixel by one level now and then, while a
    changed draw moves every statistic by whole levels."""
    from mura_core.data.synthetic import render_radiograph

    recorded = {"train/XR_WRIST/patient00003/study1_positive/image1.png": ((512, 468), 36.438, 36.253),
                "train/XR_WRIST/patient00003/study1_positive/image2.png": ((512, 363), 32.334, 35.156),
                "train/XR_HAND/patient00004/study1_positive/image2.png": ((512, 320), 60.590, 41.397),
                "train/XR_ELBOW/patient00001/study1_negative/image1.png": ((512, 407), 38.429, 28.176)}
    specs = {s.relpath: s for s in _planned(n_train=40)}
    for path, (shape, mean, std) in recorded.items():
        pixels = render_radiograph(specs[path]).astype(np.float64)
        assert pixels.shape == shape, path
        assert abs(pixels.mean() - mean) < 0.02 and abs(pixels.std() - std) < 0.02, path


def test_sign_masks_cover_the_drawn_metal_and_the_dark_fracture_line() -> None:
    from mura_core.data.synthetic import render_radiograph, sign_mask

    specs = _planned()
    implants = [s for s in specs if s.sign == "implant"][:4]
    fractures = [s for s in specs if s.sign == "fracture"][:4]
    assert implants and fractures
    for spec in implants:
        image, mask = render_radiograph(spec).astype(np.float64), sign_mask(spec)
        assert mask.shape == image.shape and 0 < mask.mean() < 0.1
        assert image[mask].mean() > 215, "metal is drawn near white"
    for spec in fractures:
        image, mask = render_radiograph(spec).astype(np.float64), sign_mask(spec)
        assert 0 < mask.mean() < 0.05
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        box = (slice(max(rows[0] - 12, 0), rows[-1] + 13), slice(max(cols[0] - 12, 0), cols[-1] + 13))
        around = image[box][~mask[box]]
        bone = around[around > np.percentile(around, 75)]
        assert image[mask].mean() < bone.mean() - 20, "the line darkens the bone it crosses"
    for spec in [s for s in specs if not s.sign][:3]:
        assert not sign_mask(spec).any()
    assert np.array_equal(sign_mask(implants[0]), sign_mask(implants[0]))


def test_sign_masks_at_the_network_input_follow_the_marker(synth, synth_cache) -> None:
    from mura_core.data.preprocess import preprocess_image
    from mura_core.data.synthetic import image_specs, sign_mask, sign_masks

    out, _ = synth
    valid = synth_cache.split("valid")
    paths = [r.path for r in valid.records]
    masks, signs = sign_masks(out, paths, synth_cache.size)
    marker = json.loads((out / "SYNTHETIC.json").read_text())["signs"]
    assert signs == [marker.get("/".join(Path(p).parts[-5:]), "") for p in paths]
    assert masks.shape == (len(paths), 227, 227) and masks.dtype == bool
    has = np.array([bool(s) for s in signs])
    assert not masks[~has].any()
    assert np.all(valid.labels[has] == 0), "only abnormal images carry a sign"
    assert masks[has].any(axis=(1, 2)).mean() > 0.9
    first = int(np.flatnonzero(has)[0])
    spec = image_specs(out / "MURA-v1.1")["/".join(Path(paths[first]).parts[-5:])]
    expected = preprocess_image(Image.fromarray(sign_mask(spec).astype(np.uint8) * 255), 227) >= 128
    assert np.array_equal(masks[first], expected)


def test_sign_masks_need_the_set_the_generator_wrote(synth, tmp_path) -> None:
    from mura_core.data.synthetic import image_specs

    with pytest.raises(ValueError, match="not a synthetic set"):
        image_specs(tmp_path)
    out, _ = synth
    copy = tmp_path / "copy"
    copy.mkdir()
    marker = json.loads((out / "SYNTHETIC.json").read_text())
    (copy / "SYNTHETIC.json").write_text(json.dumps(dict(marker, generator_version=1)))
    with pytest.raises(ValueError, match="another generator.*generate it again"):
        image_specs(copy)
    (copy / "SYNTHETIC.json").write_text(json.dumps(dict(marker, signs={})))
    with pytest.raises(ValueError, match="not the ones this generator draws"):
        image_specs(copy)
