"""The assignment's pieces in their plainest vectorised form: one function per forward and
backward pass, over NumPy or CuPy arrays (``xp``), no fused or Winograd paths.

The layers (``layers.py``), the loss (``losses.py``) and the optimizer (``optim.py``) call
these functions when ``backend.FAST_PATHS`` is False, as in the course's student edition
(``python -m mura_core student``), where their bodies are what the student writes and the
grader (``mura_core.course``) checks. The reference's fast paths give the same numbers to
float32 rounding (the tests compare them).

Every forward returns ``(output, cache)``; its backward takes the upstream gradient and the
cache. Arrays are NCHW. No loop over samples or pixels: a convolution loops over nothing
(``im2col`` and ``col2im`` do the slicing), a pool over the k*k offsets of its window.
"""
from __future__ import annotations

from .backend import get_array_module
from .conv import col2im, im2col


def conv_forward(x, w, b, stride: int, pad: int):
    """Convolution of x (N, C, H, W) with w (D, C, k, k) and bias b (D,), zero padding
    ``pad`` on every side: y (N, D, OH, OW), OH = (H + 2 pad - k) // stride + 1, with
    y[n, d, i, j] = b[d] + sum over (c, u, v) of w[d, c, u, v] x_pad[n, c, i stride + u,
    j stride + v]. Through ``im2col``: one matrix product W (D, C k k) @ col (C k k, N OH OW).
    Returns (y, cache)."""
    d, _, k, _ = w.shape
    col = im2col(x, k, stride, pad)  # (C, k, k, N, OH, OW)
    n, oh, ow = col.shape[3:]
    col = col.reshape(-1, n * oh * ow)
    y = w.reshape(d, -1) @ col + b[:, None]  # (D, N OH OW)
    y = y.reshape(d, n, oh, ow).transpose(1, 0, 2, 3)
    return y, (x.shape, w, col, stride, pad)


def conv_backward(dy, cache):
    """Gradients of ``conv_forward`` from dy (N, D, OH, OW): (dx (N, C, H, W), dw (D, C, k, k),
    db (D,)). dw = dy2 @ col.T and dx = col2im(W.T @ dy2), with dy2 the (D, N OH OW) matrix of
    dy; db sums dy over everything but D."""
    x_shape, w, col, stride, pad = cache
    xp = get_array_module(dy)
    d, _, k, _ = w.shape
    dy2 = xp.ascontiguousarray(dy.transpose(1, 0, 2, 3)).reshape(d, -1)
    dw = (dy2 @ col.T).reshape(w.shape)
    db = dy2.sum(axis=1)
    n, c = x_shape[:2]
    dcol = (w.reshape(d, -1).T @ dy2).reshape(c, k, k, n, dy.shape[2], dy.shape[3])
    return col2im(dcol, x_shape, k, stride, pad), dw, db


def maxpool_forward(x, size: int, stride: int):
    """Max over size x size windows at ``stride``, no padding, floor mode: x (N, C, H, W) ->
    y (N, C, OH, OW), OH = (H - size) // stride + 1. The cache keeps, for every window, which
    offset (u * size + v) holds its maximum, the first in row-major order on ties.
    Returns (y, cache)."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    oh, ow = (h - size) // stride + 1, (w - size) // stride + 1
    y = winner = None
    for u in range(size):
        for v in range(size):
            window = x[:, :, u:u + stride * (oh - 1) + 1:stride, v:v + stride * (ow - 1) + 1:stride]
            if y is None:
                y, winner = window.copy(), xp.zeros(window.shape, dtype=xp.int32)
                continue
            better = window > y  # strictly: an earlier offset keeps a tie
            y = xp.where(better, window, y)
            winner = xp.where(better, u * size + v, winner)
    return y, (x.shape, winner, size, stride)


def maxpool_backward(dy, cache):
    """Gradient of ``maxpool_forward``: dx (N, C, H, W), each dy entry added at the position
    of its window's maximum (where windows overlap, their gradients add up)."""
    x_shape, winner, size, stride = cache
    xp = get_array_module(dy)
    dx = xp.zeros(x_shape, dtype=dy.dtype)
    oh, ow = dy.shape[2], dy.shape[3]
    for u in range(size):
        for v in range(size):
            dx[:, :, u:u + stride * (oh - 1) + 1:stride, v:v + stride * (ow - 1) + 1:stride] += \
                dy * (winner == u * size + v)
    return dx


def relu_forward(x):
    """y = max(x, 0), elementwise, any shape. Returns (y, cache)."""
    xp = get_array_module(x)
    y = xp.maximum(x, x.dtype.type(0))
    return y, y > 0


def relu_backward(dy, cache):
    """dx = dy where the input was positive, else 0."""
    return dy * cache


def dropout_forward(x, p: float, u):
    """Inverted dropout in training: with u uniform in [0, 1) shaped like x, keep a unit where
    u >= p and scale it by 1 / (1 - p), zero it otherwise (the expected output is x).
    Returns (y, cache)."""
    mask = (u >= p).astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
    return x * mask, mask


def dropout_backward(dy, cache):
    """dx = dy through the forward's mask, with its scale."""
    return dy * cache


def linear_forward(x, w, b):
    """Fully connected: x (N, d_in), w (d_in, d_out), b (d_out,) -> y = x w + b (N, d_out).
    Returns (y, cache)."""
    return x @ w + b, (x, w)


def linear_backward(dy, cache):
    """Gradients of ``linear_forward`` from dy (N, d_out): (dx (N, d_in), dw (d_in, d_out),
    db (d_out,))."""
    x, w = cache
    return dy @ w.T, x.T @ dy, dy.sum(axis=0)


def bce_with_logits(z, t, weights):
    """Binary cross entropy of logits z (B,) against targets t (B,) in {0, 1}, p = sigmoid(z),
    one weight per example (B,): loss = mean over the batch of -w [t log p + (1 - t)
    log(1 - p)], computed as w (softplus(z) - t z), finite for any z; and dloss/dz =
    w (sigmoid(z) - t) / B. Returns (loss as a 0-d array, dz (B,))."""
    xp = get_array_module(z)
    zero = z.dtype.type(0)
    e = xp.exp(-xp.abs(z))
    losses = weights * (xp.maximum(z, zero) - t * z + xp.log1p(e))
    p = xp.where(z >= zero, 1 / (1 + e), e / (1 + e))
    return losses.mean(), weights * (p - t) / z.dtype.type(z.shape[0])


def sgd_momentum_step(theta, v, g, lr: float, momentum: float, weight_decay: float) -> None:
    """One step of SGD with momentum, in place on theta and v (same shapes as g):
    g' = g + weight_decay theta; v = momentum v + g'; theta = theta - lr v."""
    v *= momentum
    v += g + weight_decay * theta if weight_decay else g
    theta -= lr * v
