"""A synthetic data set with MURA v1.1's exact layout, for running everything without the real one.

``generate_synthetic(out)`` writes ``out/MURA-v1.1/`` (four header-less CSVs, ``train/`` and
``valid/`` with the seven ``XR_*`` body parts, ``patientNNNNN/studyK_positive|negative/imageM.png``)
and ``out/SYNTHETIC.json`` (generator version, seed, counts, and which abnormal images carry a
visible sign).

Images are radiograph-like: dark background, soft tissue, bright bones with a brighter cortex
laid out per body part (phalanges with joint gaps, two forearm bones, carpals, a humeral head),
low-frequency texture, noise, and random contrast, gamma, rotation and size. Some images of
either class carry a bright side marker in a corner. An abnormal image carries one sign:

- a fracture (a quarter of the signs): a slightly jagged dark line across a long bone (normal
  joints are dark gaps too, so darkness alone does not give the label away; on the thin bones
  of hands and fingers it is barely visible), or
- an implant (three quarters): a broad metal plate with screws, or a bright wire, along a
  bone; metal is drawn near white after the contrast change, above the brightest bone.

In an abnormal study each image carries the sign with probability 0.8 (at least one does), as
in real studies where a finding shows on some views only; so no image classifier reaches 100 %.

Everything is drawn with NumPy array operations on the bounding box of each shape; images are
rendered by a process pool. The output depends only on the generator version, the seed and
the counts; ``marker_mismatch`` tells whether an existing set still is the one asked for.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..files import DiskFull, check_writable_folder, is_disk_full
from ..resources import check_worker_count
from .mura import BODY_PARTS, ROOT_NAME
from .processes import map_in_processes

DEFAULT_TRAIN = 2000
DEFAULT_VALID = 500
#: Images per split the generator makes: (fewest, most). At least a few studies of each
#: class; at most about five times MURA's train split, which guards a typo from filling a
#: disk (a 512-pixel PNG is about 100 kB).
LIMITS = {"train": (8, 200_000), "valid": (2, 200_000)}
MARKER_NAME = "SYNTHETIC.json"
# Bump whenever the images (or their layout or labels) change for the same seed and counts:
# a set on disk is reused only when its marker holds this version, so an old set is not
# mistaken for the current one.
GENERATOR_VERSION = 2

# MURA's train images per body part, as sampling weights.
_PART_WEIGHTS = np.array([4931, 5106, 1825, 5543, 1272, 8379, 9752], dtype=np.float64)
_ABNORMAL_STUDY_P = 0.38  # about 60 / 40 normal / abnormal images, like MURA
_SIGN_P = 0.8
_FRACTURE_P = 0.25  # of the visible signs; the others are implants
_IMAGES_PER_STUDY = (np.array([1, 2, 3, 4]), np.array([0.15, 0.35, 0.35, 0.15]))
_STUDIES_PER_PATIENT = (np.array([1, 2, 3]), np.array([0.80, 0.15, 0.05]))
_SECOND_PART_P = 0.08  # the same patient id under a second body part
_APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(4070)


@dataclass(frozen=True)
class ImageSpec:
    """Everything needed to render and write one image."""

    relpath: str  # "train/XR_WRIST/patient00001/study1_positive/image1.png"
    body_part: str
    sign: str  # "" (none), "fracture" or "implant"
    height: int
    width: int
    rgb: bool
    seed: tuple[int, ...]


# -- drawing primitives: each touches only its shape's bounding box -----------------------------


def _box(h: int, w: int, pts: np.ndarray, pad: float):
    y0 = int(max(0, math.floor(pts[:, 1].min() - pad)))
    y1 = int(min(h, math.ceil(pts[:, 1].max() + pad) + 1))
    x0 = int(max(0, math.floor(pts[:, 0].min() - pad)))
    x1 = int(min(w, math.ceil(pts[:, 0].max() + pad) + 1))
    if y0 >= y1 or x0 >= x1:
        return None
    yy = np.arange(y0, y1, dtype=np.float32)[:, None]
    xx = np.arange(x0, x1, dtype=np.float32)[None, :]
    return (slice(y0, y1), slice(x0, x1)), yy, xx


def _segment_distance(yy, xx, p0, p1):
    """Distance of every pixel to the segment p0-p1 (points as (x, y))."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    len2 = max(dx * dx + dy * dy, 1e-6)
    t = np.clip(((xx - p0[0]) * dx + (yy - p0[1]) * dy) / np.float32(len2), 0.0, 1.0)
    return np.hypot(xx - (p0[0] + t * dx), yy - (p0[1] + t * dy))


def _capsule(layer: np.ndarray, p0, p1, radius: float, value: float, cortex: bool = True) -> None:
    """Add a rounded bar (a bone) to ``layer``: brighter at its edges when ``cortex``."""
    pts = np.array([p0, p1], dtype=np.float32)
    region = _box(*layer.shape, pts, radius + 2)
    if region is None:
        return
    sl, yy, xx = region
    d = _segment_distance(yy, xx, p0, p1)
    mask = np.clip((radius - d) / np.float32(1.5) + np.float32(0.5), 0.0, 1.0)
    if cortex:
        rel = np.minimum(d / np.float32(radius), 1.0)
        shade = np.float32(value) * (np.float32(0.72) + np.float32(0.45) * rel**4)
    else:
        shade = np.float32(value)
    layer[sl] += mask * shade


def _soft_capsule(layer: np.ndarray, p0, p1, radius: float, value: float, blur: float) -> None:
    """Add a blurry bar (soft tissue)."""
    pts = np.array([p0, p1], dtype=np.float32)
    region = _box(*layer.shape, pts, radius + 3 * blur)
    if region is None:
        return
    sl, yy, xx = region
    d = _segment_distance(yy, xx, p0, p1)
    layer[sl] += np.float32(value) * np.clip((radius - d) / np.float32(blur) + np.float32(0.5), 0.0, 1.0)


def _dark_line(layer: np.ndarray, center, direction, half_length: float, width: float, depth: float, rng):
    """Multiply ``layer`` by (1 - depth) along a slightly jagged line (a fracture).

    Returns (the slices of its bounding box, the line's weight in [0, 1] there), or None when
    it lies outside the image."""
    ux, uy = direction
    ends = np.array([[center[0] - ux * half_length, center[1] - uy * half_length],
                     [center[0] + ux * half_length, center[1] + uy * half_length]], dtype=np.float32)
    region = _box(*layer.shape, ends, width + 4)
    if region is None:
        return None
    sl, yy, xx = region
    u = (xx - center[0]) * ux + (yy - center[1]) * uy
    v = -(xx - center[0]) * uy + (yy - center[1]) * ux
    amp, freq, phase = rng.uniform(0.3, 1.0) * width, rng.uniform(0.08, 0.25), rng.uniform(0, 2 * np.pi)
    v = v + np.float32(amp) * np.sin(np.float32(freq) * u + np.float32(phase))
    line = np.clip((width / 2 - np.abs(v)) / np.float32(0.8) + np.float32(0.5), 0.0, 1.0)
    line *= np.clip((half_length - np.abs(u)) / np.float32(2.0), 0.0, 1.0)
    layer[sl] *= 1 - np.float32(depth) * line
    return sl, line


# -- scenes: bones of each body part in a frame (a along the limb, b across), unit = long side --


def _bones(part: str, rng) -> tuple[list, list]:
    """(bones, long_bones): bones are (a0, b0, a1, b1, radius) in image-long-side units."""
    u = rng.uniform
    bones, long_idx = [], []

    def add(a0, b0, a1, b1, r, long=False):
        if long:
            long_idx.append(len(bones))
        bones.append((a0, b0, a1, b1, r))

    def chain(a, b, direction, lengths, radii, gap, n_long):
        """Bones end to end along ``direction``, ``gap`` apart (a joint space) between ends."""
        da, db = math.cos(direction), math.sin(direction)
        for j, (length, r) in enumerate(zip(lengths, radii)):
            add(a + da * r, b + db * r, a + da * (length - r), b + db * (length - r), r, long=j < n_long)
            a, b = a + da * (length + gap), b + db * (length + gap)

    if part == "XR_HUMERUS":
        add(-0.34, 0.0, 0.30, u(-0.03, 0.03), u(0.045, 0.065), long=True)
        add(-0.40, 0.0, -0.40, 0.0, u(0.08, 0.10))
        add(0.33, -0.07, 0.33, 0.07, u(0.035, 0.045))
    elif part == "XR_FOREARM":
        spread = u(0.045, 0.07)
        add(-0.44, -spread, 0.44, -spread * u(0.6, 1.0), u(0.028, 0.036), long=True)
        add(-0.44, spread, 0.44, spread * u(0.8, 1.2), u(0.022, 0.030), long=True)
    elif part == "XR_ELBOW":
        bend = u(-0.6, 0.6)
        add(-0.55, 0.0, -0.06, 0.0, u(0.045, 0.06), long=True)
        add(-0.05, -0.08, -0.05, 0.08, u(0.03, 0.04))
        for side in (-1, 1):
            b0 = side * 0.035
            add(0.03, b0, 0.03 + 0.5 * math.cos(bend), b0 + 0.5 * math.sin(bend), u(0.022, 0.03), long=True)
    elif part == "XR_WRIST":
        add(0.55, -0.05, 0.13, -0.05, u(0.04, 0.05), long=True)
        add(0.55, 0.07, 0.15, 0.07, u(0.025, 0.032), long=True)
        for _ in range(int(rng.integers(6, 9))):
            a, b = u(-0.02, 0.08), u(-0.10, 0.10)
            add(a, b, a + u(-0.01, 0.01), b + u(-0.01, 0.01), u(0.018, 0.028))
        for k in range(int(rng.integers(4, 6))):
            b = -0.12 + 0.06 * k + u(-0.01, 0.01)
            add(-0.07, b * 0.6, -0.45, b, u(0.013, 0.018), long=True)
    elif part == "XR_HAND":
        for k in range(5):
            fan = (k - 2) * 0.11 + u(-0.02, 0.02)
            lengths = (0.30, 0.17, 0.11, 0.08) if k else (0.22, 0.14, 0.10)
            chain(0.28, fan * 0.35, math.pi - fan, lengths, [0.016 - 0.002 * j for j in range(4)],
                  0.012, n_long=2)
        for _ in range(int(rng.integers(5, 8))):
            a, b = u(0.31, 0.40), u(-0.12, 0.12)
            add(a, b, a, b + u(-0.01, 0.01), u(0.016, 0.024))
    elif part == "XR_FINGER":
        radius = u(0.045, 0.06)
        chain(u(0.40, 0.46), 0.0, math.pi + u(-0.03, 0.03), (0.34, 0.22, 0.16),
              [radius * (1 - 0.15 * j) for j in range(3)], u(0.02, 0.035), n_long=3)
    elif part == "XR_SHOULDER":
        add(-0.08, 0.05, -0.08, 0.05, u(0.13, 0.17))
        add(-0.02, 0.07, 0.55, 0.10, u(0.07, 0.09), long=True)
        add(-0.25, -0.22, 0.22, -0.45, u(0.04, 0.06))
        add(-0.42, -0.45, -0.30, 0.45, u(0.03, 0.04), long=True)
    else:
        raise ValueError(f"unknown body part {part!r}")
    return bones, long_idx


def render_radiograph(spec: ImageSpec) -> np.ndarray:
    """Draw one image: (height, width) uint8."""
    return _render(spec)


def sign_mask(spec: ImageSpec) -> np.ndarray:
    """Where the image's abnormal sign was drawn: (height, width) bool, all False for an image
    without one. Deterministic (the same random draws as ``render_radiograph``, stopped once
    the sign is drawn).

    An implant: the pixels the metal covers at least half. A fracture: the pixels of the dark
    line (weight at least 1/2) that lie on bone (at least half the bone's base brightness),
    i.e. where the line darkens the image; its ends over soft tissue change nothing."""
    return _render(spec, sign_only=True)


def _render(spec: ImageSpec, sign_only: bool = False) -> np.ndarray:
    """The image of ``spec`` (uint8), or with ``sign_only`` the mask of its sign (bool)."""
    rng = np.random.default_rng(list(spec.seed))
    h, w = spec.height, spec.width
    long_side = max(h, w)
    scale = long_side * rng.uniform(0.8, 1.05)
    portrait = h >= w
    angle = ((math.pi / 2 if portrait else 0.0) + rng.normal(0, 0.18)
             + (math.pi if rng.random() < 0.5 else 0.0))
    ca, sa = math.cos(angle), math.sin(angle)
    cx, cy = w / 2 + rng.normal(0, 0.04) * w, h / 2 + rng.normal(0, 0.04) * h

    def to_xy(a, b):
        return (cx + scale * (a * ca - b * sa), cy + scale * (a * sa + b * ca))

    bones, long_idx = _bones(spec.body_part, rng)
    bone_layer = np.zeros((h, w), dtype=np.float32)
    soft_layer = np.zeros((h, w), dtype=np.float32)
    bone_value = rng.uniform(0.35, 0.6)
    a_coords = [a for bone in bones for a in (bone[0], bone[2])]
    b_coords = [b for bone in bones for b in (bone[1], bone[3])]
    b_mid = (min(b_coords) + max(b_coords)) / 2
    width_b = (max(b_coords) - min(b_coords)) / 2 + 0.08
    _soft_capsule(soft_layer, to_xy(min(a_coords) - 0.1, b_mid), to_xy(max(a_coords) + 0.1, b_mid),
                  width_b * scale, rng.uniform(0.10, 0.22), blur=0.04 * scale)
    for a0, b0, a1, b1, r in bones:
        _capsule(bone_layer, to_xy(a0, b0), to_xy(a1, b1), r * scale, bone_value * rng.uniform(0.85, 1.1))

    metal_layer = None
    mask = np.zeros((h, w), dtype=bool)
    if spec.sign:
        a0, b0, a1, b1, r = bones[long_idx[int(rng.integers(len(long_idx)))]]
        p0, p1 = np.array(to_xy(a0, b0)), np.array(to_xy(a1, b1))
        axis = (p1 - p0) / max(np.linalg.norm(p1 - p0), 1e-6)
        radius = r * scale
        if spec.sign == "fracture":
            center = p0 + rng.uniform(0.25, 0.75) * (p1 - p0)
            tilt = rng.uniform(-0.6, 0.6)
            direction = (axis[1] * math.cos(tilt) + axis[0] * math.sin(tilt),
                         -axis[0] * math.cos(tilt) + axis[1] * math.sin(tilt))
            width = long_side * rng.uniform(0.022, 0.035)
            bone = bone_layer.copy() if sign_only else None
            drawn = _dark_line(bone_layer, center, direction, radius * 1.4, width,
                               rng.uniform(0.85, 1.0), rng)
            if sign_only and drawn is not None:
                sl, line = drawn
                mask[sl] = (line >= 0.5) & (bone[sl] >= np.float32(0.5 * bone_value))
        else:
            metal_layer = np.zeros((h, w), dtype=np.float32)
            level = 1.0  # a mask; metal is drawn near white after the contrast change
            t0 = rng.uniform(0.1, 0.45)
            t1 = min(0.95, t0 + rng.uniform(0.35, 0.6))
            q0, q1 = p0 + t0 * (p1 - p0), p0 + t1 * (p1 - p0)
            if rng.random() < 0.6:  # plate with screws
                _capsule(metal_layer, tuple(q0), tuple(q1),
                         max(long_side * rng.uniform(0.03, 0.045), radius * 0.9), level, cortex=False)
                normal = np.array([-axis[1], axis[0]])
                for t in np.linspace(0.1, 0.9, int(rng.integers(2, 5))):
                    c = q0 + t * (q1 - q0)
                    _capsule(metal_layer, tuple(c - normal * radius * 1.1), tuple(c + normal * radius * 1.1),
                             max(1.5, radius * 0.12), level, cortex=False)
            else:  # a wire
                _capsule(metal_layer, tuple(q0), tuple(q1),
                         max(2.0, long_side * rng.uniform(0.01, 0.015)), level, cortex=False)
            mask = metal_layer >= 0.5
    if sign_only:
        return mask

    # Low-frequency texture over bone and tissue.
    coarse = rng.normal(0.0, 1.0, (h // 24 + 2, w // 24 + 2)).astype(np.float32)
    texture = np.asarray(Image.fromarray(coarse, mode="F").resize((w, h), Image.BICUBIC), dtype=np.float32)
    image = soft_layer + bone_layer * (np.float32(1.0) + np.float32(0.12) * texture)
    background = rng.uniform(0.02, 0.09)
    gy = np.linspace(-1, 1, h, dtype=np.float32)[:, None] * np.float32(rng.uniform(-0.03, 0.03))
    image += np.float32(background) + gy
    if rng.random() < 0.25:  # side marker: bright, in a corner, in either class
        mh, mw = int(long_side * rng.uniform(0.04, 0.07)), int(long_side * rng.uniform(0.03, 0.05))
        y = (int(rng.uniform(0.03, 0.1) * h) if rng.random() < 0.5
             else h - mh - int(rng.uniform(0.03, 0.1) * h))
        x = (int(rng.uniform(0.03, 0.1) * w) if rng.random() < 0.5
             else w - mw - int(rng.uniform(0.03, 0.1) * w))
        image[max(0, y):y + mh, max(0, x):x + mw] = np.float32(rng.uniform(0.55, 0.85))
        image[max(0, y) + mh // 4:y + mh, max(0, x) + mw // 3:x + mw] *= np.float32(0.3)  # an "L" shape
    np.clip(image, 0.0, 1.0, out=image)
    image **= np.float32(rng.uniform(0.75, 1.35))
    image *= np.float32(rng.uniform(0.6, 0.8) * 255.0)  # bone stays below metal
    if metal_layer is not None:  # metal stops nearly all X-rays: near white whatever the contrast
        np.maximum(image, metal_layer * np.float32(rng.uniform(235.0, 255.0)), out=image)
    image += rng.standard_normal((h, w), dtype=np.float32) * np.float32(rng.uniform(2.0, 9.0))
    return np.clip(image, 0, 255).astype(np.uint8)


def _write_image(args: tuple[ImageSpec, str]) -> None:
    spec, mura_root = args
    pixels = render_radiograph(spec)
    img = Image.fromarray(np.repeat(pixels[:, :, None], 3, axis=2) if spec.rgb else pixels)
    img.save(os.path.join(mura_root, spec.relpath), compress_level=1)


# -- the plan: patients, studies, labels, image sizes; drawn in the parent process ------------


def _plan_split(rng, split: str, n_images: int, first_patient: int):
    """Studies as (relative study dir, mura label, specs)."""
    studies = []
    patient = first_patient - 1
    made = 0
    while made < n_images:
        patient += 1
        parts = [BODY_PARTS[rng.choice(len(BODY_PARTS), p=_PART_WEIGHTS / _PART_WEIGHTS.sum())]]
        if rng.random() < _SECOND_PART_P:
            other = BODY_PARTS.index(parts[0]) + int(rng.integers(1, len(BODY_PARTS)))
            parts.append(BODY_PARTS[other % len(BODY_PARTS)])
        for part in parts:
            for study_no in range(1, int(rng.choice(_STUDIES_PER_PATIENT[0], p=_STUDIES_PER_PATIENT[1])) + 1):
                if made >= n_images:
                    break
                abnormal = rng.random() < _ABNORMAL_STUDY_P
                n = min(int(rng.choice(_IMAGES_PER_STUDY[0], p=_IMAGES_PER_STUDY[1])), n_images - made)
                signs = [""] * n
                if abnormal:
                    shown = rng.random(n) < _SIGN_P
                    shown[int(rng.integers(n))] = True
                    signs = [("fracture" if rng.random() < _FRACTURE_P else "implant") if s else ""
                             for s in shown]
                kind = "positive" if abnormal else "negative"
                study_dir = f"{split}/{part}/patient{patient:05d}/study{study_no}_{kind}"
                specs = []
                for k in range(n):
                    long_side = 512 if rng.random() < 0.7 else int(rng.integers(300, 512))
                    aspect = rng.uniform(0.3, 0.55) if part == "XR_FINGER" else rng.uniform(0.6, 1.0)
                    short = max(64, int(round(long_side * aspect)))
                    h, w = (long_side, short) if rng.random() < 0.85 else (short, long_side)
                    specs.append(ImageSpec(f"{study_dir}/image{k + 1}.png", part, signs[k], h, w,
                                           bool(rng.random() < 0.25), (int(rng.integers(2**31)), made)))
                    made += 1
                studies.append((study_dir, int(abnormal), specs))
    return studies, patient


def _count(studies) -> dict:
    specs = [s for _, _, ss in studies for s in ss]
    patients = {d.split("/")[2] for d, _, _ in studies}
    abnormal_images = sum(len(ss) for _, lab, ss in studies if lab)
    return {
        "images": len(specs),
        "studies": len(studies),
        "patients": len(patients),
        "normal_images": len(specs) - abnormal_images,
        "abnormal_images": abnormal_images,
        "normal_studies": sum(1 for _, lab, _ in studies if not lab),
        "abnormal_studies": sum(1 for _, lab, _ in studies if lab),
        "abnormal_images_without_sign": sum(1 for _, lab, ss in studies if lab for s in ss if not s.sign),
        "rgb_images": sum(s.rgb for s in specs),
    }


def _plan(seed: int, n_train: int, n_valid: int):
    """(train studies, valid studies) of the set of (seed, counts): ``_plan_split``'s output."""
    rng = np.random.default_rng([seed, 2024])
    train, last_train_patient = _plan_split(rng, "train", n_train, 1)
    valid, _ = _plan_split(rng, "valid", n_valid, last_train_patient + 1)
    return train, valid


def _marker_path(root: str | os.PathLike) -> Path | None:
    folder = Path(root)
    for candidate in (folder, folder.parent if folder.name == ROOT_NAME else None):
        if candidate is not None and (candidate / MARKER_NAME).is_file():
            return candidate / MARKER_NAME
    return None


def is_synthetic(root: str | os.PathLike) -> bool:
    """True when ``root`` (a MURA-v1.1 folder or its parent) was written by generate_synthetic."""
    return _marker_path(root) is not None


def read_marker(root: str | os.PathLike) -> dict | None:
    """The ``SYNTHETIC.json`` of the set at ``root`` (a MURA-v1.1 folder or its parent), or
    None when the folder was not written by the generator."""
    path = _marker_path(root)
    return None if path is None else json.loads(path.read_text())


def image_specs(root: str | os.PathLike) -> dict[str, ImageSpec]:
    """relative path (``"valid/XR_WRIST/patient00001/study1_positive/image1.png"``) -> the
    ``ImageSpec`` the image at ``root`` was drawn from, replayed from the seed and counts of its
    marker. Raises ValueError when ``root`` is no synthetic set of this generator version."""
    marker = read_marker(root)
    if marker is None:
        raise ValueError(f"{root} is not a synthetic set ({MARKER_NAME} is missing): only the "
                         "generator knows where it drew the signs")
    seed, n_train, n_valid = marker.get("seed"), (marker.get("train") or {}).get("images"), \
        (marker.get("valid") or {}).get("images")
    mismatch = marker_mismatch(marker, seed, n_train, n_valid)
    if mismatch is not None:
        raise ValueError(f"the synthetic set at {root} was written by another generator "
                         f"({mismatch}); generate it again")
    specs = {s.relpath: s for studies in _plan(seed, n_train, n_valid)
             for _, _, ss in studies for s in ss}
    if {p: s.sign for p, s in specs.items() if s.sign} != marker.get("signs"):
        raise ValueError(f"the signs listed in {_marker_path(root)} are not the ones this "
                         "generator draws for its seed and counts; generate the set again")
    return specs


def sign_masks(root: str | os.PathLike, paths, size: int, mode: str = "pad"):
    """Where the generator drew the sign of each image, at the network's input.

    paths: image paths of the set at ``root`` (ending in ``split/body part/patient/study/
    image``, as ``ImageRecord.path``). Each ``sign_mask`` goes through the same preprocessing as
    the image (``preprocess_image``: resize to ``size``, pad or crop) and is kept where it
    covers at least half a pixel. Returns (masks (N, size, size) bool, signs: N strings,
    "" for an image without a sign, "fracture" or "implant")."""
    from PIL import Image

    from .preprocess import preprocess_image

    specs = image_specs(root)
    masks = np.zeros((len(paths), size, size), dtype=bool)
    signs = []
    for i, path in enumerate(paths):
        spec = specs["/".join(Path(path).parts[-5:])]
        signs.append(spec.sign)
        if spec.sign:
            drawn = Image.fromarray(sign_mask(spec).astype(np.uint8) * 255)
            masks[i] = preprocess_image(drawn, size, mode) >= 128
    return masks, signs


def marker_mismatch(marker: dict, seed: int, n_train: int, n_valid: int) -> str | None:
    """None when ``marker`` (a ``SYNTHETIC.json`` dict) describes the set this generator writes
    for ``seed`` and these image counts, else what differs, e.g. ``"generator version 1 instead of
    2"``."""
    found = {
        "generator version": marker.get("generator_version"),
        "seed": marker.get("seed"),
        "train images": (marker.get("train") or {}).get("images"),
        "valid images": (marker.get("valid") or {}).get("images"),
    }
    wanted = {"generator version": GENERATOR_VERSION, "seed": seed, "train images": n_train,
              "valid images": n_valid}
    differs = [f"{key} {'unknown' if found[key] is None else found[key]} instead of {value}"
               for key, value in wanted.items() if found[key] != value]
    return ", ".join(differs) or None


def check_synthetic_settings(n_train, n_valid, seed=0, workers=None,
                             names=("n_train", "n_valid", "seed", "workers")) -> None:
    """ValueError naming the first setting ``generate_synthetic`` cannot use (``names``: how
    to call them in the message, e.g. the command line's options)."""
    for name, n, (low, high) in ((names[0], n_train, LIMITS["train"]),
                                 (names[1], n_valid, LIMITS["valid"])):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not low <= n <= high:
            raise ValueError(f"{name} must be a whole number of images from {low} to {high:,}, "
                             f"got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{names[2]} must be a non-negative integer, got {seed!r}")
    check_worker_count(workers, names[3])


def generate_synthetic(
    out: str | os.PathLike,
    n_train: int = DEFAULT_TRAIN,
    n_valid: int = DEFAULT_VALID,
    seed: int = 0,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Write a synthetic MURA v1.1 tree to ``out/MURA-v1.1`` and return a summary dict:
    ``root`` (the MURA-v1.1 path), ``seed``, ``train`` / ``valid`` counts (images, studies,
    patients, normal/abnormal images and studies), ``truncated`` (the one train file cut short
    on purpose; it is listed in the CSVs and the cache must skip it), ``junk_files`` (``._*``
    files, not listed), ``seconds``.

    n_train / n_valid: images per split (within ``LIMITS``). seed: a non-negative integer.
    overwrite: replace an earlier synthetic set in ``out`` (never a folder this function did
    not write). Every argument and ``out``'s writability are checked before anything is
    written or removed.
    """
    check_synthetic_settings(n_train, n_valid, seed, workers)
    start = time.perf_counter()
    out = Path(out).expanduser().absolute()
    check_writable_folder(out, "output folder")
    mura_root = out / ROOT_NAME
    if mura_root.exists() and any(mura_root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{mura_root} already exists; pass overwrite=True (CLI: --force) "
                                  "to replace it")
        if not (out / MARKER_NAME).is_file():
            raise FileExistsError(f"{mura_root} exists and was not written by the synthetic generator "
                                  f"(no {out / MARKER_NAME}); refusing to delete it")
        shutil.rmtree(mura_root)
    train, valid = _plan(seed, n_train, n_valid)
    try:
        return _write_set(out, mura_root, train, valid, seed, workers, progress, start)
    except BaseException as exc:
        # Stopped, or the disk filled up: no half-written set (nor a marker describing a set
        # that is gone) is left to be taken for one; nothing else was in it, since a folder of
        # other files was refused above.
        shutil.rmtree(mura_root, ignore_errors=True)
        (out / MARKER_NAME).unlink(missing_ok=True)
        if is_disk_full(exc):
            raise DiskFull(f"the disk of the output folder {out} filled up while the synthetic "
                           "set was written, and nothing of it is kept: free some space, write "
                           "fewer images (--train, --valid) or choose another folder") from None
        raise


def _write_set(out: Path, mura_root: Path, train, valid, seed: int, workers, progress: bool,
               start: float) -> dict:
    """Write the planned ``train`` and ``valid`` studies under ``mura_root``, the quirks and
    the marker; the summary ``generate_synthetic`` returns."""
    for split, studies in (("train", train), ("valid", valid)):
        for study_dir, _, _ in studies:
            (mura_root / study_dir).mkdir(parents=True, exist_ok=True)
        with open(mura_root / f"{split}_image_paths.csv", "w", newline="") as fh:
            fh.writelines(f"{ROOT_NAME}/{s.relpath}\n" for _, _, specs in studies for s in specs)
        with open(mura_root / f"{split}_labeled_studies.csv", "w", newline="") as fh:
            fh.writelines(f"{ROOT_NAME}/{d}/,{label}\n" for d, label, _ in studies)

    specs = [s for studies in (train, valid) for _, _, ss in studies for s in ss]
    tasks = [(s, str(mura_root)) for s in specs]
    for _ in map_in_processes(_write_image, tasks, workers, progress=progress,
                              desc="synthetic MURA"):
        pass

    # Quirks of the real archive: macOS AppleDouble files and one truncated PNG.
    junk_rng = np.random.default_rng([seed, 7])
    junk = []
    for studies, count in ((train, 3), (valid, 1)):
        for i in junk_rng.choice(len(studies), size=min(count, len(studies)), replace=False):
            path = mura_root / studies[int(i)][0] / "._image1.png"
            path.write_bytes(_APPLEDOUBLE)
            junk.append(str(path))
    multi = [ss for _, _, ss in train if len(ss) > 1] or [ss for _, _, ss in train]
    victim = mura_root / multi[int(junk_rng.integers(len(multi)))][-1].relpath
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) * 3 // 5])

    summary = {
        "root": str(mura_root),
        "seed": seed,
        "train": _count(train),
        "valid": _count(valid),
        "truncated": [str(victim)],
        "junk_files": junk,
        "seconds": round(time.perf_counter() - start, 2),
    }
    marker = {
        "generator": "mura_core.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "note": "synthetic data with MURA v1.1's layout; not radiographs",
        **{k: v for k, v in summary.items() if k != "root"},
        "signs": {s.relpath: s.sign for s in specs if s.sign},
    }
    (out / MARKER_NAME).write_text(json.dumps(marker, indent=1))
    return summary
