"""Fused CuPy kernels for the layers whose NumPy form is a loop of slice operations.

On a GPU every slice copy or addition is a kernel launch; im2col of a 7x7 convolution alone
would take 49 of them. These element-wise kernels do each job in one launch, with exactly the
layouts and tie rules of the NumPy code they replace (``conv.im2col``, ``conv.col2im``,
``layers.MaxPool2D``), which the tests check on both backends:

- im2col: one thread per column entry (C, K, K, N, OH, OW), zero outside the padded input;
- col2im: one thread per input pixel, gathering the column entries that read it (no atomics);
- max pooling: one thread per output (value and winning offset, the first on ties), and one
  per input pixel in backward, gathering from the windows that contain it;
- a convolution's bias addition and its transposition to (N, D, OH, OW), in one pass;
- ReLU with its mask, a dropout mask from the counter-based stream (``rng``), the BCE with its
  gradient, and the momentum update over the packed parameters (``Layer.pack``): each what
  several array operations (several launches) do on NumPy, in one launch.

Each launch costs some microseconds of host time whatever its size, and each element-wise
pass a read and a write of its arrays: on a fast GPU, fewer launches and passes is speed.

Imported only when CuPy arrays are in use.
"""
from __future__ import annotations

import cupy

#: Largest element count whose offsets the 32-bit variant of a kernel may compute.
_INT32_LIMIT = 2**31 - 1


class _IndexedKernel:
    """An element-wise kernel compiled twice, its index arithmetic (the ``IDX`` of its body)
    in 32 and in 64 bits. The kernels spend most of their time splitting the thread index
    into coordinates with divisions by run-time sizes, and a 64-bit integer division is a
    long software routine on a GPU; the 32-bit variant runs whenever every array of the call
    has fewer than 2**31 elements (batches of a few hundred images at 227 do), the 64-bit one
    otherwise."""

    def __init__(self, in_params: str, out_params: str, body: str, name: str):
        self._narrow = cupy.ElementwiseKernel(in_params, out_params,
                                              body.replace("IDX", "unsigned int"), name + "_32")
        self._wide = cupy.ElementwiseKernel(in_params, out_params,
                                            body.replace("IDX", "long long"), name + "_64")

    def __call__(self, *args):
        arrays = [a for a in args if isinstance(a, cupy.ndarray)]
        narrow = max(a.size for a in arrays) <= _INT32_LIMIT
        return (self._narrow if narrow else self._wide)(*args)


_IM2COL = _IndexedKernel(
    "raw T x, int32 n, int32 c, int32 h, int32 w, int32 k, int32 s, int32 p, int32 oh, int32 ow",
    "T col",
    """
    IDX t = (IDX)i;
    const int ox = t % ow; t /= ow;
    const int oy = t % oh; t /= oh;
    const int b = t % n; t /= n;
    const int kx = t % k; t /= k;
    const int ky = t % k;
    const int ch = t / k;
    const int y = oy * s + ky - p;
    const int xx = ox * s + kx - p;
    if (y >= 0 && y < h && xx >= 0 && xx < w) {
        col = x[(((IDX)b * c + ch) * h + y) * w + xx];
    } else {
        col = (T)0;
    }
    """,
    "mura_im2col",
)

_COL2IM = _IndexedKernel(
    "raw T col, int32 n, int32 c, int32 h, int32 w, int32 k, int32 s, int32 p, int32 oh, int32 ow",
    "T dx",
    """
    IDX t = (IDX)i;
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
            sum += col[((((IDX)ch * k + ky) * k + kx) * n + b) * (IDX)oh * ow
                       + (IDX)oy * ow + ox];
        }
    }
    dx = sum;
    """,
    "mura_col2im",
)

_POOL_FORWARD = _IndexedKernel(
    "raw T x, int32 h, int32 w, int32 oh, int32 ow, int32 size, int32 s",
    "T y, int8 winner",
    """
    IDX t = (IDX)i;
    const int ox = t % ow; t /= ow;
    const int oy = t % oh;
    const IDX plane = t / oh;
    const T* base = &x[plane * h * w];
    T best = base[(IDX)(oy * s) * w + ox * s];
    int arg = 0;
    for (int dy = 0; dy < size; ++dy) {
        for (int dx = 0; dx < size; ++dx) {
            const T v = base[(IDX)(oy * s + dy) * w + ox * s + dx];
            if (v > best) { best = v; arg = dy * size + dx; }
        }
    }
    y = best;
    winner = (signed char)arg;
    """,
    "mura_maxpool_forward",
)

_POOL_BACKWARD = _IndexedKernel(
    "raw T dy, raw int8 winner, int32 h, int32 w, int32 oh, int32 ow, int32 size, int32 s",
    "T dx",
    """
    IDX t = (IDX)i;
    const int xx = t % w; t /= w;
    const int y = t % h;
    const IDX plane = t / h;
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
            const IDX o = (plane * oh + oy) * ow + ox;
            if (winner[o] == ky * size + kx) sum += dy[o];
        }
    }
    dx = sum;
    """,
    "mura_maxpool_backward",
)

_BIAS_TO_NCHW = _IndexedKernel(
    "raw T y, raw T b, int32 d, int32 n, int32 hw",
    "T out",
    """
    IDX t = (IDX)i;
    const int q = t % hw; t /= hw;
    const int ch = t % d;
    const int img = t / d;
    out = y[((IDX)ch * n + img) * hw + q] + b[ch];
    """,
    "mura_bias_to_nchw",
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


#: The i-th float32 uniform of stream ``key`` (``rng.uniform``), as the variable ``uniform``.
_SPLITMIX = """
    unsigned long long z = key + (unsigned long long)(i + 1) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z = z ^ (z >> 31);
    const float uniform = (float)(z >> 40) * (1.0f / 16777216.0f);
"""

_SPLITMIX_UNIFORM = cupy.ElementwiseKernel(
    "uint64 key", "float32 u", _SPLITMIX + "u = uniform;", "mura_splitmix_uniform")

_DROPOUT_MASK = cupy.ElementwiseKernel(
    "uint64 key, float32 p, T scale",
    "T mask",
    _SPLITMIX + "mask = uniform >= p ? scale : (T)0;",
    "mura_dropout_mask",
)

_BCE_WITH_LOGITS = cupy.ElementwiseKernel(
    "T z, T t, T w, T n",
    "T loss, T dz",
    """
    const T e = exp(-fabs(z));
    const T p = z >= 0 ? (T)1 / ((T)1 + e) : e / ((T)1 + e);
    loss = w * (max(z, (T)0) - t * z + log1p(e));
    dz = w * ((p - t) / n);
    """,
    "mura_bce_with_logits",
)


_RELU = cupy.ElementwiseKernel(
    "T x",
    "T y, bool mask",
    """
    y = (x > (T)0 || isnan(x)) ? x : (T)0;
    mask = y > (T)0;
    """,
    "mura_relu",
)


def relu(x):
    """max(x, 0) (NaN stays NaN, as ``maximum`` keeps it) and its mask y > 0, in one launch."""
    return _RELU(x)


def dropout_mask(shape, dtype, p: float, key: int):
    """``rng.keep_mask`` in one launch: scale where the stream's uniform is >= p, else 0."""
    mask = cupy.empty(shape, dtype=dtype)
    _DROPOUT_MASK(cupy.uint64(key), cupy.float32(p), mask.dtype.type(1.0 / (1.0 - p)), mask)
    return mask


def bce_with_logits(z, t, w):
    """Per-example BCE of logits z against targets t, weighted by w, and dL/dz of their mean,
    in one launch (the formulas of ``losses.bce_with_logits``)."""
    return _BCE_WITH_LOGITS(z, t, w, z.dtype.type(z.shape[0]))


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


def bias_to_nchw(y, b, n: int, oh: int, ow: int):
    """A convolution's product y (D, N*OH*OW) plus the bias b (D,), as (N, D, OH, OW): the
    bias addition and the transposition in one pass."""
    d = y.shape[0]
    out = cupy.empty((n, d, oh, ow), dtype=y.dtype)
    _BIAS_TO_NCHW(cupy.ascontiguousarray(y), cupy.ascontiguousarray(b), d, n, oh * ow, out)
    return out


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
