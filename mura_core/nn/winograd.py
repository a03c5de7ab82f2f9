"""Winograd F(2x2, 3x3) for 3x3 convolutions with stride 1 and padding 1, forward and backward.

Why: such a convolution computed through im2col costs 9 multiplications per output and input
channel; Winograd's minimal filtering (Lavin and Gray, 2016) computes each 2x2 block of outputs
from a 4x4 block of input with 16, i.e. 2.25x fewer, at the price of cheap additions before
and after. The multiplications become 16 independent matrix products, one per position xi of
the 4x4 transformed tile::

    Y_tile = A^T [ U ⊙ V ] A,   U = G g G^T (per output and input channel),
                                V = B^T d B (per input channel and 4x4 input tile d),
    M[xi] = U[xi] (D, C) @ V[xi] (C, T)      T = number of tiles, over the whole batch

The backward pass runs the same machinery transposed: dM = A dY A^T, dU[xi] = dM[xi] V[xi]^T
(then dW = G^T dU G), dV[xi] = U[xi]^T dM[xi] (then dX = B dV B^T, overlapping tiles added).
The transforms hold only 0, +-1 and +-1/2, so float32 results stay within a few units of
rounding of im2col's (the tests compare against a direct float64 convolution).

Layout. Inside, feature maps are held as (C, H, W, N), batch innermost, so that every
addition of the transforms runs over long contiguous rows; the output is returned as the
(N, D, H, W) view of such a buffer, and inputs of any memory order are accepted. Input columns
are also split by parity when padded, so that the column transform reads contiguous rows too.
The functions are array code only (slices, element-wise ufuncs with ``out=``, ``matmul``) and
run on NumPy and CuPy alike.
"""
from __future__ import annotations

import numpy as np

from .backend import get_array_module

#: G of F(2x2, 3x3) (4x3): U = G g G^T. Row-major kron(G, G) maps the 9 taps to the 16 entries.
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
WEIGHT_TRANSFORM = np.kron(_G, _G)  # (16, 9): U[4i + j] = sum_k WEIGHT_TRANSFORM[4i + j, k] g[k]

#: Index of xi = (1, 1): the only transformed position that feeds all four outputs of a tile
#: with weight +1 (A^T's column 1 is (1, 1)), so the bias is added there once, and the bias
#: gradient is the sum of dM at that position.
_CENTRE = 5


def tiles(h: int, w: int) -> tuple[int, int]:
    """Tile rows and columns (2x2 outputs each) covering an h x w output."""
    return -(-h // 2), -(-w // 2)


def transform_weights(w):
    """w (D, C, 3, 3) -> U (16, D, C), U[xi] = (G g G^T)[xi] for every (output, input) pair."""
    xp = get_array_module(w)
    d, c = w.shape[:2]
    kron = xp.asarray(WEIGHT_TRANSFORM, dtype=w.dtype)
    return (kron @ w.reshape(d * c, 9).T).reshape(16, d, c)


def _transform_input(x):
    """x (N, C, H, W), any memory order -> V (16, C, T), T = th * tw * N in (ty, tx, n) order.

    The input is copied once into P (C, 2th+2, 2, tw+1, N): zero padded (one row and column
    before, up to the tile grid after), its columns split by parity (P[..., p, q, :] is padded
    column 2q + p), so that both passes below read and write contiguous runs of tw * N values.
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    th, tw = tiles(h, w)
    dt = x.dtype
    p = xp.empty((c, 2 * th + 2, 2, tw + 1, n), dtype=dt)
    p[:, 0] = 0
    p[:, h + 1:] = 0
    # Input column j is padded column j + 1: even j land in parity 1 at q = j // 2, odd j in
    # parity 0 at q = (j + 1) // 2; parity-0 column 0 is the left padding.
    even, odd = (w + 1) // 2, w // 2
    p[:, 1:h + 1, 1, :even] = x[:, :, :, 0::2].transpose(1, 2, 3, 0)
    p[:, 1:h + 1, 1, even:] = 0
    p[:, 1:h + 1, 0, 1:odd + 1] = x[:, :, :, 1::2].transpose(1, 2, 3, 0)
    p[:, 1:h + 1, 0, 0] = 0
    p[:, 1:h + 1, 0, odd + 1:] = 0
    # Rows: B^T applied to padded rows 2ty + (0, 1, 2, 3) of every tile row.
    d0, d1, d2, d3 = (p[:, k:k + 2 * th:2] for k in range(4))
    r = xp.empty((4, c, th, 2, tw + 1, n), dtype=dt)
    xp.subtract(d0, d2, out=r[0])
    xp.add(d1, d2, out=r[1])
    xp.subtract(d2, d1, out=r[2])
    xp.subtract(d1, d3, out=r[3])
    # Columns: padded columns 2tx + (0, 1, 2, 3) are parities 0, 1 at q = tx and tx + 1.
    e0, e1 = r[:, :, :, 0, :tw], r[:, :, :, 1, :tw]
    e2, e3 = r[:, :, :, 0, 1:], r[:, :, :, 1, 1:]
    v = xp.empty((4, 4, c, th, tw, n), dtype=dt)
    xp.subtract(e0, e2, out=v[:, 0])
    xp.add(e1, e2, out=v[:, 1])
    xp.subtract(e2, e1, out=v[:, 2])
    xp.subtract(e1, e3, out=v[:, 3])
    return v.reshape(16, c, th * tw * n)


def _transform_output(m, n: int, h: int, w: int):
    """M (16, D, T) -> y (N, D, H, W), the view of a (D, H', W', N) buffer: A^T M A per tile."""
    xp = get_array_module(m)
    d = m.shape[1]
    th, tw = tiles(h, w)
    m = m.reshape(4, 4, d, th, tw, n)
    rows = xp.empty((2, 4, d, th, tw, n), dtype=m.dtype)
    xp.add(m[0], m[1], out=rows[0])
    rows[0] += m[2]
    xp.subtract(m[1], m[2], out=rows[1])
    rows[1] -= m[3]
    out = xp.empty((d, th, 2, tw, 2, n), dtype=m.dtype)
    for a in range(2):
        left, right = out[:, :, a, :, 0], out[:, :, a, :, 1]
        xp.add(rows[a, 0], rows[a, 1], out=left)
        left += rows[a, 2]
        xp.subtract(rows[a, 1], rows[a, 2], out=right)
        right -= rows[a, 3]
    return out.reshape(d, 2 * th, 2 * tw, n)[:, :h, :w].transpose(3, 0, 1, 2)


def forward(x, u, b):
    """y = conv(x, g) + b for x (N, C, H, W), U = transform_weights(g), b (D,).

    Returns (y, v): y (N, D, H, W) (a view, batch innermost in memory) and the transformed
    input V (16, C, T), which the backward pass needs.
    """
    xp = get_array_module(x)
    n, _, h, w = x.shape
    v = _transform_input(x)
    m = xp.matmul(u, v)  # (16, D, T)
    m[_CENTRE] += b[:, None]
    return _transform_output(m, n, h, w), v


def _transform_output_grad(dy):
    """dy (N, D, H, W), any memory order -> dM (16, D, T) = A dY A^T per tile (zero beyond
    the output for odd sizes)."""
    xp = get_array_module(dy)
    n, d, h, w = dy.shape
    th, tw = tiles(h, w)
    dt = dy.dtype
    g = xp.empty((d, 2 * th, 2 * tw, n), dtype=dt)
    g[:, :h, :w] = dy.transpose(1, 2, 3, 0)
    g[:, h:] = 0
    g[:, :h, w:] = 0
    g = g.reshape(d, th, 2, tw, 2, n)
    # Rows: dM row i from the tile's output rows 0, 1: (y0, y0 + y1, y0 - y1, -y1).
    rows = xp.empty((3, d, th, 2 * tw, n), dtype=dt)  # rows 1, 2, 3; row 0 is y0 itself
    top, bottom = g[:, :, 0].reshape(d, th, 2 * tw, n), g[:, :, 1].reshape(d, th, 2 * tw, n)
    xp.add(top, bottom, out=rows[0])
    xp.subtract(top, bottom, out=rows[1])
    xp.negative(bottom, out=rows[2])
    dm = xp.empty((4, 4, d, th, tw, n), dtype=dt)
    for i, src in enumerate((top, rows[0], rows[1], rows[2])):
        src = src.reshape(d, th, tw, 2, n)
        left, right = src[:, :, :, 0], src[:, :, :, 1]
        dm[i, 0] = left
        xp.add(left, right, out=dm[i, 1])
        xp.subtract(left, right, out=dm[i, 2])
        xp.negative(right, out=dm[i, 3])
    return dm.reshape(16, d, th * tw * n)


def _transform_input_grad(dv, n: int, h: int, w: int):
    """dV (16, C, T) -> dx (N, C, H, W), the view of a (C, H', W', N) buffer: B dV B^T per
    tile, the overlapping halves of neighbouring tiles added, the padding dropped."""
    xp = get_array_module(dv)
    c = dv.shape[1]
    th, tw = tiles(h, w)
    dt = dv.dtype
    dv = dv.reshape(4, 4, c, th, tw, n)
    # Rows. Tile row ty covers padded rows 2ty..2ty+3, i.e. input rows 2ty-1..2ty+2; B gives
    # its rows (dV0, dV1 - dV2 + dV3, -dV0 + dV1 + dV2, -dV3). Input row 2q gets tile q's
    # second row and tile q-1's fourth; input row 2q+1 tile q's third and tile q+1's first.
    rows = xp.empty((4, c, th, 2, tw, n), dtype=dt)  # (xi column, C, ty, row parity, tx, N)
    even, odd = rows[:, :, :, 0], rows[:, :, :, 1]
    xp.subtract(dv[1], dv[2], out=even)
    even += dv[3]
    even[:, :, 1:] -= dv[3, :, :, :-1]
    xp.add(dv[1], dv[2], out=odd)
    odd -= dv[0]
    odd[:, :, :-1] += dv[0, :, :, 1:]
    rows = rows.reshape(4, c, 2 * th, tw, n)
    # Columns, the same along tx, written with column parity split: (C, 2th, tx, parity, N).
    out = xp.empty((c, 2 * th, tw, 2, n), dtype=dt)
    even, odd = out[:, :, :, 0], out[:, :, :, 1]
    xp.subtract(rows[1], rows[2], out=even)
    even += rows[3]
    even[:, :, 1:] -= rows[3, :, :, :-1]
    xp.add(rows[1], rows[2], out=odd)
    odd -= rows[0]
    odd[:, :, :-1] += rows[0, :, :, 1:]
    return out.reshape(c, 2 * th, 2 * tw, n)[:, :h, :w].transpose(3, 0, 1, 2)


def backward(dy, u, v, x_shape, dw=None, input_grad: bool = True):
    """Gradients of ``forward`` for dy (N, D, H, W), with the forward's U and V.

    Returns (dw, db, dx): dw (D, C, 3, 3) (written into ``dw`` when given), db (D,),
    dx (N, C, H, W) (a view, batch innermost) or None when ``input_grad`` is False.
    """
    xp = get_array_module(dy)
    n, c, h, w = x_shape
    d = u.shape[1]
    dm = _transform_output_grad(dy)
    db = dm[_CENTRE].sum(axis=1)
    du = xp.matmul(dm, v.transpose(0, 2, 1))  # (16, D, C)
    kron = xp.asarray(WEIGHT_TRANSFORM, dtype=du.dtype)
    if dw is None:
        dw = xp.empty((d, c, 3, 3), dtype=du.dtype)
    xp.matmul(du.reshape(16, d * c).T, kron, out=dw.reshape(d * c, 9))
    if not input_grad:
        return dw, db, None
    dv = xp.matmul(u.transpose(0, 2, 1), dm, out=v)  # V is spent: reuse its memory
    return dw, db, _transform_input_grad(dv, n, h, w)
