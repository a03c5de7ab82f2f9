"""Binary cross entropy, the loss of the assignment: mean over the batch of
``-[t log p + (1 - t) log(1 - p)]`` with t = 1 for normal, t = 0 for abnormal, p = P(normal).

The network ends in a logistic, so the loss is computed from the logit z (p = sigmoid(z)):

    BCE = softplus(z) - t z = max(z, 0) - t z + log(1 + exp(-|z|)),   dBCE/dz = sigmoid(z) - t,

which is finite for any z (a float32 sigmoid of +-100 rounds to exactly 1 or 0, where the
probability form would take log 0). ``bce_from_probabilities`` is the textbook form, clipped,
for models whose output is already a probability.
"""
from __future__ import annotations

from . import backend, plain
from .backend import get_array_module, gpu_kernels
from .layers import sigmoid


def _flat_targets(t, like, what: str = "targets"):
    xp = get_array_module(like)
    t = xp.asarray(t, dtype=like.dtype).reshape(-1)
    if t.shape[0] != like.shape[0]:
        raise ValueError(f"{what} have {t.shape[0]} entries for a batch of {like.shape[0]}")
    return t


def bce_with_logits(z, t, weights=None):
    """Mean BCE of logits z (B,) or (B, 1) against targets t (B,) or (B, 1).

    weights: None, or a weight per example (B,) or (B, 1): the loss is then the batch mean of
    w_i * BCE_i (MURA's class weighting passes one weight per example; see ``training.class_weights``).
    Returns (loss as a Python float, dL/dz with the shape of z and its dtype).
    """
    loss, dz = bce_with_logits_on_device(z, t, weights)
    return float(loss), dz


def bce_with_logits_on_device(z, t, weights=None):
    """``bce_with_logits`` with the loss left as a 0-d array of z's backend.

    Reading a GPU array's value waits for every queued kernel; a training step that reads
    its loss only after queueing the backward pass (``models.loss_and_grads``) keeps the
    device busy while the host queues the next kernels.
    """
    xp = get_array_module(z)
    zf = z.reshape(-1)
    t = _flat_targets(t, zf)
    n = zf.shape[0]
    if not backend.FAST_PATHS:
        w = xp.ones_like(zf) if weights is None else _flat_targets(weights, zf, "weights")
        loss, dz = plain.bce_with_logits(zf, t, w)
        return loss, dz.reshape(z.shape)
    kernels = gpu_kernels(xp)
    if kernels is not None:  # the lines below in one launch
        w = zf.dtype.type(1) if weights is None else _flat_targets(weights, zf, "weights")
        losses, dz = kernels.bce_with_logits(zf, t, w)
        return losses.mean(), dz.reshape(z.shape)
    losses = xp.maximum(zf, zf.dtype.type(0)) - t * zf + xp.log1p(xp.exp(-xp.abs(zf)))
    dz = (sigmoid(zf) - t) / zf.dtype.type(n)
    if weights is not None:
        w = _flat_targets(weights, zf, "weights")
        losses = w * losses
        dz = w * dz
    return losses.mean(), dz.reshape(z.shape)


def bce_from_probabilities(p, t, eps: float = 1e-7):
    """Mean BCE of probabilities p against targets t, with p clipped to [eps, 1 - eps].

    Returns (loss, dL/dp). Prefer ``bce_with_logits`` where the logit is at hand.
    """
    xp = get_array_module(p)
    pf = xp.clip(p.reshape(-1), p.dtype.type(eps), p.dtype.type(1 - eps))
    t = _flat_targets(t, pf)
    n = pf.shape[0]
    loss = float(-(t * xp.log(pf) + (1 - t) * xp.log1p(-pf)).mean())
    dp = (pf - t) / (pf * (1 - pf)) / pf.dtype.type(n)
    return loss, dp.reshape(p.shape)
