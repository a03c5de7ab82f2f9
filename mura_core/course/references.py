"""Slow, obvious reference implementations of the assignment's pieces: explicit loops over
output positions, float64, NumPy only. The tests compare the layers with them and the
grader compares a student's pieces with them; they are meant to be read, not to be fast.

This file imports nothing from ``mura_core``: the grader loads it by its path, next to a
student's package of the same name.
"""
import numpy as np


def conv2d_reference(x, w, b, stride):
    """Direct convolution with zero padding k // 2: loops over output pixels and channels."""
    n, c, h, wd = x.shape
    d, _, k, _ = w.shape
    pad = k // 2
    xp = np.zeros((n, c, h + 2 * pad, wd + 2 * pad))
    xp[:, :, pad:pad + h, pad:pad + wd] = x
    oh = (h + 2 * pad - k) // stride + 1
    ow = (wd + 2 * pad - k) // stride + 1
    y = np.zeros((n, d, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            for o in range(d):
                y[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3)) + b[o]
    return y


def conv2d_backward_reference(x, w, dy, stride):
    """(dx, dw, db) of ``conv2d_reference`` from dy: each output pixel's gradient spread over
    the window it read, one pixel at a time."""
    n, c, h, wd = x.shape
    d, _, k, _ = w.shape
    pad = k // 2
    xp = np.zeros((n, c, h + 2 * pad, wd + 2 * pad))
    xp[:, :, pad:pad + h, pad:pad + wd] = x
    dxp, dw = np.zeros_like(xp), np.zeros(w.shape)
    for i in range(dy.shape[2]):
        for j in range(dy.shape[3]):
            rows, cols = slice(i * stride, i * stride + k), slice(j * stride, j * stride + k)
            for o in range(d):
                g = dy[:, o, i, j][:, None, None, None]
                dw[o] += (g * xp[:, :, rows, cols]).sum(axis=0)
                dxp[:, :, rows, cols] += g * w[o]
    return dxp[:, :, pad:pad + h, pad:pad + wd], dw, dy.sum(axis=(0, 2, 3))


def maxpool_reference(x, size, stride):
    n, c, h, w = x.shape
    oh, ow = (h - size) // stride + 1, (w - size) // stride + 1
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            window = x[:, :, i * stride:i * stride + size, j * stride:j * stride + size]
            y[:, :, i, j] = window.max(axis=(2, 3))
    return y


def maxpool_backward_reference(x, dy, size, stride):
    """Each output's gradient to the first position (row-major) of its window that holds the
    window's maximum: loops over windows, np.argmax returns the first occurrence."""
    n, c, h, w = x.shape
    oh, ow = dy.shape[2], dy.shape[3]
    dx = np.zeros(x.shape)
    for b in range(n):
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    window = x[b, ch, i * stride:i * stride + size, j * stride:j * stride + size]
                    r, s = np.unravel_index(np.argmax(window), window.shape)
                    dx[b, ch, i * stride + r, j * stride + s] += dy[b, ch, i, j]
    return dx


def bce_reference(z, t, weights):
    """Mean over the batch of w [log(1 + e^z) - t z] (the BCE of p = sigmoid(z), written as
    np.logaddexp, finite for any z) and its gradient w (sigmoid(z) - t) / B, one entry at a
    time."""
    losses = [wi * (np.logaddexp(0.0, zi) - ti * zi) for zi, ti, wi in zip(z, t, weights)]
    grad = [wi * (0.5 * (1 + np.tanh(zi / 2)) - ti) / len(z) for zi, ti, wi in zip(z, t, weights)]
    return float(np.mean(losses)), np.array(grad)


def sgd_momentum_reference(theta, v, g, lr, momentum, weight_decay):
    """One step of heavy-ball SGD, entry by entry: returns the new (theta, v)."""
    theta, v = theta.astype(np.float64).ravel(), v.astype(np.float64).ravel()
    new_theta, new_v = np.empty_like(theta), np.empty_like(v)
    for i, gi in enumerate(g.ravel()):
        new_v[i] = momentum * v[i] + gi + weight_decay * theta[i]
        new_theta[i] = theta[i] - lr * new_v[i]
    return new_theta.reshape(g.shape), new_v.reshape(g.shape)


def numeric_grad(f, x, eps=1e-6):
    """Central differences of scalar f() with respect to every entry of x (float64)."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return g


def rel_error(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.abs(a - b).max() / max(np.abs(a).max(), np.abs(b).max(), 1e-12)
