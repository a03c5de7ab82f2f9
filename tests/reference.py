"""Slow, obvious reference implementations (explicit loops, float64) for the layer tests."""
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


def maxpool_reference(x, size, stride):
    n, c, h, w = x.shape
    oh, ow = (h - size) // stride + 1, (w - size) // stride + 1
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            window = x[:, :, i * stride:i * stride + size, j * stride:j * stride + size]
            y[:, :, i, j] = window.max(axis=(2, 3))
    return y


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


def bilinear_reference(image, out_h, out_w):
    """Bilinear resize of one 2-D image with half-pixel centres, as PyTorch's
    ``interpolate(mode="bilinear", align_corners=False)`` documents it: loops over the output
    pixels, each reading its four neighbours."""
    in_h, in_w = image.shape
    out = np.zeros((out_h, out_w))

    def source(i, n_in, n_out):
        s = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        low = min(int(np.floor(s)), n_in - 1)
        return low, min(low + 1, n_in - 1), s - low

    for i in range(out_h):
        y0, y1, fy = source(i, in_h, out_h)
        for j in range(out_w):
            x0, x1, fx = source(j, in_w, out_w)
            top = (1 - fx) * image[y0, x0] + fx * image[y0, x1]
            bottom = (1 - fx) * image[y1, x0] + fx * image[y1, x1]
            out[i, j] = (1 - fy) * top + fy * bottom
    return out


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
