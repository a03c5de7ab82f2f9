"""Fused CuPy kernels for the layers whose NumPy form is a loop of slice operations.

On a GPU every slice copy or addition is a kernel launch; im2col of a 7x7 convolution alone
would take 49 of them. These element-wise kernels do each job in one launch, with exactly the
layouts and tie rules of the NumPy code they replace (``conv.im2col``, ``conv.col2im``,
``layers.MaxPool2D``), which the tests check on both backends:

- im2col: one thread per column entry (C, K, K, N, OH, OW), zero outside the padded input;
- col2im: one thread per input pixel, gathering the column entries that read it (no atomics);
- max pooling: one thread per output (value and winning offset, the first on ties), and one
  per input pixel in backward, gathering from the windows that contain it.

Imported only when CuPy arrays are in use.
"""
from __future__ import annotations

import cupy

_IM2COL = cupy.ElementwiseKernel(
    "raw T x, int32 n, int32 c, int32 h, int32 w, int32 k, int32 s, int32 p, int32 oh, int32 ow",
    "T col",
    """
    long long t = i;
    const int ox = t % ow; t /= ow;
    const int oy = t % oh; t /= oh;
    const int b = t % n; t /= n;
    const int kx = t % k; t /= k;
    const int ky = t % k;
    const int ch = t / k;
    const int y = oy * s + ky - p;
    const int xx = ox * s + kx - p;
    if (y >= 0 && y < h && xx >= 0 && xx < w) {
        col = x[(((long long)b * c + ch) * h + y) * w + xx];
    } else {
        col = (T)0;
    }
    """,
    "mura_im2col",
)

_COL2IM = cupy.ElementwiseKernel(
    "raw T col, int32 n, int32 c, int32 h, int32 w, int32 k, int32 s, int32 p, int32 oh, int32 ow",
    "T dx",
    """
    long long t = i;
    const int xx = t % w; t /= w;
    const int y = t % h; t /= h;
    const int ch = t % c;
    const int b = t / c;
    T sum = (T)0;
    for (int ky = 0; ky < k; ++ky) {
        const int ty = y + p - ky;
        if (ty < 0 || ty % s != 0) continue;
        const int oy = ty / s;
        if (oy >= oh) continue;
        for (int kx = 0; kx < k; ++kx) {
            const int tx = xx + p - kx;
            if (tx < 0 || tx % s != 0) continue;
            const int ox = tx / s;
            if (ox >= ow) continue;
            sum += col[((((long long)ch * k + ky) * k + kx) * n + b) * (long long)oh * ow
                       + (long long)oy * ow + ox];
        }
    }
    dx = sum;
    """,
    "mura_col2im",
)

_POOL_FORWARD = cupy.ElementwiseKernel(
    "raw T x, int32 h, int32 w, int32 oh, int32 ow, int32 size, int32 s",
    "T y, int8 winner",
    """
    long long t = i;
    const int ox = t % ow; t /= ow;
    const int oy = t % oh;
    const long long plane = t / oh;
    const T* base = &x[plane * h * w];
    T best = base[(long long)(oy * s) * w + ox * s];
    int arg = 0;
    for (int dy = 0; dy < size; ++dy) {
        for (int dx = 0; dx < size; ++dx) {
            const T v = base[(long long)(oy * s + dy) * w + ox * s + dx];
            if (v > best) { best = v; arg = dy * size + dx; }
        }
    }
    y = best;
    winner = (signed char)arg;
    """,
    "mura_maxpool_forward",
)

_POOL_BACKWARD = cupy.ElementwiseKernel(
    "raw T dy, raw int8 winner, int32 h, int32 w, int32 oh, int32 ow, int32 size, int32 s",
    "T dx",
    """
    long long t = i;
    const int xx = t % w; t /= w;
    const int y = t % h;
    const long long plane = t / h;
    T sum = (T)0;
    for (int ky = 0; ky < size; ++ky) {
        const int ty = y - ky;
        if (ty < 0 || ty % s != 0) continue;
        const int oy = ty / s;
        if (oy >= oh) continue;
        for (int kx = 0; kx < size; ++kx) {
            const int tx = xx - kx;
            if (tx < 0 || tx % s != 0) continue;
            const int ox = tx / s;
            if (ox >= ow) continue;
            const long long o = (plane * oh + oy) * ow + ox;
            if (winner[o] == ky * size + kx) sum += dy[o];
        }
    }
    dx = sum;
    """,
    "mura_maxpool_backward",
)

_SGD_MOMENTUM = cupy.ElementwiseKernel(
    "T g, T momentum, T weight_decay, T lr",
    "T theta, T v",
    """
    v = momentum * v + g + weight_decay * theta;
    theta = theta - lr * v;
    """,
    "mura_sgd_momentum",
)


_SPLITMIX_UNIFORM = cupy.ElementwiseKernel(
    "uint64 key",
    "float32 u",
    """
    unsigned long long z = key + (unsigned long long)(i + 1) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z = z ^ (z >> 31);
    u = (float)(z >> 40) * (1.0f / 16777216.0f);
    """,
    "mura_splitmix_uniform",
)


def splitmix_uniform(size: int, key: int):
    """The float32 uniforms of ``rng.uniform`` for stream ``key``, computed on the GPU."""
    u = cupy.empty(size, dtype=cupy.float32)
    _SPLITMIX_UNIFORM(cupy.uint64(key), u)
    return u


def im2col(x, k: int, stride: int, pad: int, oh: int, ow: int):
    n, c, h, w = x.shape
    col = cupy.empty((c, k, k, n, oh, ow), dtype=x.dtype)
    _IM2COL(cupy.ascontiguousarray(x), n, c, h, w, k, stride, pad, oh, ow, col)
    return col


def col2im(col, x_shape, k: int, stride: int, pad: int):
    n, c, h, w = x_shape
    oh, ow = col.shape[4], col.shape[5]
    dx = cupy.empty((n, c, h, w), dtype=col.dtype)
    _COL2IM(cupy.ascontiguousarray(col), n, c, h, w, k, stride, pad, oh, ow, dx)
    return dx


def maxpool_forward(x, size: int, stride: int, oh: int, ow: int):
    n, c, h, w = x.shape
    y = cupy.empty((n, c, oh, ow), dtype=x.dtype)
    winner = cupy.empty((n, c, oh, ow), dtype=cupy.int8)
    _POOL_FORWARD(cupy.ascontiguousarray(x), h, w, oh, ow, size, stride, y, winner)
    return y, winner


def maxpool_backward(dy, winner, x_shape, size: int, stride: int):
    n, c, h, w = x_shape
    oh, ow = dy.shape[2], dy.shape[3]
    dx = cupy.empty(x_shape, dtype=dy.dtype)
    _POOL_BACKWARD(cupy.ascontiguousarray(dy), winner, h, w, oh, ow, size, stride, dx)
    return dx


def sgd_momentum(theta, v, g, lr: float, momentum: float, weight_decay: float) -> None:
    """v <- momentum v + g + weight_decay theta; theta <- theta - lr v, in one pass, in place."""
    dtype = theta.dtype.type
    _SGD_MOMENTUM(g, dtype(momentum), dtype(weight_decay), dtype(lr), theta, v)
