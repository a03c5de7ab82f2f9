"""Numerical gradient checks: central finite differences against the analytic gradients.

Meant for float64 models (``build_model(..., dtype="float64")``) on small inputs. The loops
here run over a sample of parameter entries, each costing two forward passes.
"""
from __future__ import annotations

import numpy as np

from .backend import to_numpy
from .models import Model, loss_and_grads


def relative_error(analytic, numeric, scale: float = 1e-12) -> float:
    """max |a - n| / max(max |a|, max |n|, scale): a scale-aware error over a whole array."""
    a, n = np.asarray(analytic, dtype=np.float64), np.asarray(numeric, dtype=np.float64)
    scale = max(np.abs(a).max(initial=0.0), np.abs(n).max(initial=0.0), scale)
    return float(np.abs(a - n).max(initial=0.0) / scale)


def numerical_gradient(f, array, eps: float = 1e-6, indices=None) -> np.ndarray:
    """Central differences of the scalar function ``f()`` with respect to entries of ``array``
    (modified in place and restored). ``indices``: flat indices to probe (default: all).
    Returns the derivatives at those indices."""
    flat = array.reshape(-1)
    indices = range(flat.size) if indices is None else indices
    out = []
    for i in indices:
        old = float(flat[i])
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        out.append((up - down) / (2 * eps))
    return np.array(out)


def check_model_gradients(model: Model, x, t, entries_per_param: int = 8, eps: float = 1e-6,
                          seed: int = 0) -> list[dict]:
    """Compare ``loss_and_grads`` with finite differences for ``entries_per_param`` entries
    of every parameter (evaluation mode: dropout off): half of them those with the largest
    analytic gradients, the rest drawn at random from the others. Returns one row per
    parameter: name, shape, entries checked, max |analytic|, relative error.

    Why the largest: in a small network many entries have a zero gradient (units a ReLU or
    a max-pool switched off), and a check of zeros alone says nothing. The error is relative
    to the largest analytic gradient of the whole parameter, which is among the entries
    checked.
    """
    rng = np.random.default_rng(seed)
    _, grads = loss_and_grads(model, x, t, training=False)
    analytic = {name: to_numpy(g).copy() for name, g in grads.items()}
    rows = []
    for name, param in model.parameters().items():
        count = min(entries_per_param, param.size)
        idx = _entries_to_check(analytic[name].reshape(-1), count, rng)
        numeric = numerical_gradient(lambda: loss_and_grads(model, x, t)[0], param, eps, idx)
        a = analytic[name].reshape(-1)[idx]
        rows.append({"parameter": name, "shape": tuple(param.shape), "checked": count,
                     "max_abs_grad": float(np.abs(a).max()),
                     "relative_error": relative_error(a, numeric,
                                                      float(np.abs(analytic[name]).max()))})
    return rows


def _entries_to_check(gradient, count: int, rng) -> np.ndarray:
    """Flat indices: the ceil(count / 2) entries of largest |gradient|, then random others."""
    count = min(count, gradient.size)
    top = (count + 1) // 2
    largest = np.argpartition(-np.abs(gradient), top - 1)[:top] if top else np.array([], int)
    others = np.setdiff1d(np.arange(gradient.size), largest)
    drawn = rng.choice(others, size=min(count - top, others.size), replace=False)
    return np.concatenate([largest, drawn]).astype(np.int64)
