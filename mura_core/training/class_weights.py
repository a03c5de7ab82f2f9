"""MURA's per-body-part loss weights (``TrainConfig.class_weights="mura"``)."""
from __future__ import annotations

import numpy as np


def mura_class_weights(labels, body_parts) -> tuple[np.ndarray, dict]:
    """MURA's loss weights (Rajpurkar et al., 2017), one per train image.

    For each body part T with A_T abnormal and N_T normal images (labels: 1 normal, 0
    abnormal), an abnormal image weighs w(abnormal) = N_T / (A_T + N_T) and a normal one
    w(normal) = A_T / (A_T + N_T): the two classes of a body part carry the same total weight
    (a body part with images of one class only gives them weight 0, as the formula says).
    Returns (weights (N,) float32, {body part: {"abnormal": w, "normal": w, "n_abnormal": A_T,
    "n_normal": N_T}}).
    """
    labels = np.asarray(labels).reshape(-1)
    parts = np.asarray(body_parts).reshape(-1)
    if labels.shape != parts.shape:
        raise ValueError(f"{len(labels)} labels for {len(parts)} body parts")
    weights = np.zeros(len(labels), dtype=np.float32)
    table = {}
    for part in np.unique(parts).tolist():
        rows = parts == part
        normal = rows & (labels == 1)
        n_normal, n_abnormal = int(normal.sum()), int(rows.sum() - normal.sum())
        total = n_normal + n_abnormal
        table[part] = {"abnormal": n_normal / total, "normal": n_abnormal / total,
                       "n_abnormal": n_abnormal, "n_normal": n_normal}
        weights[normal] = table[part]["normal"]
        weights[rows & ~normal] = table[part]["abnormal"]
    return weights, table
