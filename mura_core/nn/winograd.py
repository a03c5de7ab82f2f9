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

from .backend import empty_in_order, get_array_module

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


#: Bytes of intermediate values per block of channels: each block's padded input, row pass
#: and output stay in cache between the passes (whole-array passes over conv2's 118 MB of
#: transformed input ran from memory, at about half the speed).
BLOCK_BYTES = 2 << 20


def _blocks(total: int, bytes_per_item: int):
    """(start, stop) ranges over ``total`` channels, each about BLOCK_BYTES of work."""
    size = max(1, BLOCK_BYTES // max(1, bytes_per_item))
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def _groups(x, space_to_depth: bool):
    """The padded input's channels as (channel offset, rows, parity-1 columns, parity-0
    columns) groups of x.transpose(1, 2, 3, 0) (C, H, W, N) slices: one group for x itself,
    four for its space-to-depth (channel (a, b, c) = x[c, a::2, b::2])."""
    xt = x.transpose(1, 2, 3, 0)
    c = x.shape[1]
    if not space_to_depth:
        return [(0, xt, xt[:, :, 0::2], xt[:, :, 1::2])]
    groups = []
    for a in range(2):
        for b in range(2):
            rows = xt[:, a::2]
            # z column s = x column 2s + b; z's even columns 0, 2, .. are x's b, b + 4, ..
            groups.append(((2 * a + b) * c, rows, rows[:, :, b::4], rows[:, :, b + 2::4]))
    return groups


def _transform_input(x, space_to_depth: bool = False):
    """x (N, C, H, W), any memory order -> V (16, C, T), T = th * tw * N in (ty, tx, n) order;
    with ``space_to_depth`` the same for z = space_to_depth(x) (4C channels), read from x.

    Block by block of channels, the input is copied into P (c, 2th+2, 2, tw+1, N): zero padded
    (one row and column before, up to the tile grid after), its columns split by parity
    (P[..., p, q, :] is padded column 2q + p), so that both passes below read and write
    contiguous runs of tw * N values.
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    if space_to_depth:
        c, h, w = 4 * c, -(-h // 2), -(-w // 2)
    th, tw = tiles(h, w)
    dt = x.dtype
    v = xp.empty((4, 4, c, th, tw, n), dtype=dt)
    blocks = _blocks(c, 6 * th * (tw + 1) * n * dt.itemsize)
    most = blocks[0][1] - blocks[0][0]
    p_all = xp.empty((most, 2 * th + 2, 2, tw + 1, n), dtype=dt)
    r_all = xp.empty((4, most, th, 2, tw + 1, n), dtype=dt)
    groups = _groups(x, space_to_depth)
    for c0, c1 in blocks:
        p, r = p_all[:c1 - c0], r_all[:, :c1 - c0]
        p[...] = 0
        for start, rows, even, odd in groups:
            lo, hi = max(c0, start), min(c1, start + rows.shape[0])
            if lo >= hi:
                continue
            block, src = p[lo - c0:hi - c0], slice(lo - start, hi - start)
            height = rows.shape[1]
            block[:, 1:height + 1, 1, :even.shape[2]] = even[src]
            block[:, 1:height + 1, 0, 1:odd.shape[2] + 1] = odd[src]
        # Rows: B^T applied to padded rows 2ty + (0, 1, 2, 3) of every tile row.
        d0, d1, d2, d3 = (p[:, k:k + 2 * th:2] for k in range(4))
        xp.subtract(d0, d2, out=r[0])
        xp.add(d1, d2, out=r[1])
        xp.subtract(d2, d1, out=r[2])
        xp.subtract(d1, d3, out=r[3])
        # Columns: padded columns 2tx + (0, 1, 2, 3) are parities 0, 1 at q = tx and tx + 1.
        e0, e1 = r[:, :, :, 0, :tw], r[:, :, :, 1, :tw]
        e2, e3 = r[:, :, :, 0, 1:], r[:, :, :, 1, 1:]
        vb = v[:, :, c0:c1]
        xp.subtract(e0, e2, out=vb[:, 0])
        xp.add(e1, e2, out=vb[:, 1])
        xp.subtract(e2, e1, out=vb[:, 2])
        xp.subtract(e1, e3, out=vb[:, 3])
    return v.reshape(16, c, th * tw * n)


def _transform_output(m, n: int, h: int, w: int):
    """M (16, D, T) -> y (N, D, H, W), the view of a (D, H', W', N) buffer: A^T M A per tile,
    block by block of channels."""
    xp = get_array_module(m)
    d = m.shape[1]
    th, tw = tiles(h, w)
    m = m.reshape(4, 4, d, th, tw, n)
    out = xp.empty((d, th, 2, tw, 2, n), dtype=m.dtype)
    blocks = _blocks(d, 8 * th * tw * n * m.dtype.itemsize)
    rows_all = xp.empty((2, 4, blocks[0][1] - blocks[0][0], th, tw, n), dtype=m.dtype)
    for d0, d1 in blocks:
        mb, rows, ob = m[:, :, d0:d1], rows_all[:, :, :d1 - d0], out[d0:d1]
        xp.add(mb[0], mb[1], out=rows[0])
        rows[0] += mb[2]
        xp.subtract(mb[1], mb[2], out=rows[1])
        rows[1] -= mb[3]
        for a in range(2):
            left, right = ob[:, :, a, :, 0], ob[:, :, a, :, 1]
            xp.add(rows[a, 0], rows[a, 1], out=left)
            left += rows[a, 2]
            xp.subtract(rows[a, 1], rows[a, 2], out=right)
            right -= rows[a, 3]
    return out.reshape(d, 2 * th, 2 * tw, n)[:, :h, :w].transpose(3, 0, 1, 2)


def forward(x, u, b, space_to_depth: bool = False):
    """y = conv(x, g) + b for x (N, C, H, W), U = transform_weights(g), b (D,); with
    ``space_to_depth``, the convolution of space_to_depth(x) (read from x directly).

    Returns (y, v): y (N, D, H, W) (a view, batch innermost in memory) and the transformed
    input V (16, C, T), which the backward pass needs.
    """
    xp = get_array_module(x)
    n, _, h, w = x.shape
    if space_to_depth:
        h, w = -(-h // 2), -(-w // 2)
    v = _transform_input(x, space_to_depth)
    m = xp.matmul(u, v)  # (16, D, T)
    m[_CENTRE] += b[:, None]
    return _transform_output(m, n, h, w), v


def _transform_output_grad(dy):
    """dy (N, D, H, W), any memory order -> dM (16, D, T) = A dY A^T per tile (zero beyond
    the output for odd sizes), block by block of channels."""
    xp = get_array_module(dy)
    n, d, h, w = dy.shape
    th, tw = tiles(h, w)
    dt = dy.dtype
    dm = xp.empty((4, 4, d, th, tw, n), dtype=dt)
    blocks = _blocks(d, 10 * th * tw * n * dt.itemsize)
    most = blocks[0][1] - blocks[0][0]
    g_all = xp.empty((most, 2 * th, 2 * tw, n), dtype=dt)
    rows_all = xp.empty((3, most, th, 2 * tw, n), dtype=dt)  # rows 1, 2, 3; row 0 is y0 itself
    dyt = dy.transpose(1, 2, 3, 0)  # (D, H, W, N)
    for d0, d1 in blocks:
        g, rows, dmb = g_all[:d1 - d0], rows_all[:, :d1 - d0], dm[:, :, d0:d1]
        g[:, :h, :w] = dyt[d0:d1]
        g[:, h:] = 0
        g[:, :h, w:] = 0
        g6 = g.reshape(d1 - d0, th, 2, tw, 2, n)
        # Rows: dM row i from the tile's output rows 0, 1: (y0, y0 + y1, y0 - y1, -y1).
        top = g6[:, :, 0].reshape(d1 - d0, th, 2 * tw, n)
        bottom = g6[:, :, 1].reshape(d1 - d0, th, 2 * tw, n)
        xp.add(top, bottom, out=rows[0])
        xp.subtract(top, bottom, out=rows[1])
        xp.negative(bottom, out=rows[2])
        for i, src in enumerate((top, rows[0], rows[1], rows[2])):
            src = src.reshape(d1 - d0, th, tw, 2, n)
            left, right = src[:, :, :, 0], src[:, :, :, 1]
            dmb[i, 0] = left
            xp.add(left, right, out=dmb[i, 1])
            xp.subtract(left, right, out=dmb[i, 2])
            xp.negative(right, out=dmb[i, 3])
    return dm.reshape(16, d, th * tw * n)


def _transform_input_grad(dv, n: int, h: int, w: int):
    """dV (16, C, T) -> dx (N, C, H, W), the view of a (C, H', W', N) buffer: B dV B^T per
    tile, the overlapping halves of neighbouring tiles added, the padding dropped; block by
    block of channels."""
    xp = get_array_module(dv)
    c = dv.shape[1]
    th, tw = tiles(h, w)
    dt = dv.dtype
    dv = dv.reshape(4, 4, c, th, tw, n)
    out = xp.empty((c, 2 * th, tw, 2, n), dtype=dt)  # (C, input row, tx, column parity, N)
    blocks = _blocks(c, 16 * th * tw * n * dt.itemsize)
    rows_all = xp.empty((4, blocks[0][1] - blocks[0][0], th, 2, tw, n), dtype=dt)
    for c0, c1 in blocks:
        dvb, ob = dv[:, :, c0:c1], out[c0:c1]
        # Rows. Tile row ty covers padded rows 2ty..2ty+3, i.e. input rows 2ty-1..2ty+2; B
        # gives its rows (dV0, dV1 - dV2 + dV3, -dV0 + dV1 + dV2, -dV3). Input row 2q gets
        # tile q's second row and tile q-1's fourth; input row 2q+1 tile q's third and tile
        # q+1's first.
        rows = rows_all[:, :c1 - c0]  # (xi column, c, ty, row parity, tx, N)
        even, odd = rows[:, :, :, 0], rows[:, :, :, 1]
        xp.subtract(dvb[1], dvb[2], out=even)
        even += dvb[3]
        even[:, :, 1:] -= dvb[3, :, :, :-1]
        xp.add(dvb[1], dvb[2], out=odd)
        odd -= dvb[0]
        odd[:, :, :-1] += dvb[0, :, :, 1:]
        rows = rows.reshape(4, c1 - c0, 2 * th, tw, n)
        # Columns, the same along tx, written with column parity split.
        even, odd = ob[:, :, :, 0], ob[:, :, :, 1]
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


# --- 5x5 convolutions as 3x3 stride-1 convolutions of the space-to-depth input ----------
# Stride 2: y[u, v] = sum_ij w[i, j] xpad[2u + i, 2v + j] (pad 2). Writing i = 2p + a,
# j = 2q + b (a, b in {0, 1}, p, q in {0, 1, 2}) splits it into four convolutions of the
# input's phases x[a::2, b::2] with the 3x3 sub-kernels w[a::2, b::2] (zero where 2p + a = 5);
# the phase planes padded by one give exactly the rows and columns that xpad supplies, so the
# whole is ONE 3x3, stride-1, pad-1 convolution of the space-to-depth input
# z[(a, b, c), r, s] = x[c, 2r + a, 2s + b] (zero beyond the input) with a (D, 4C, 3, 3)
# kernel: Winograd F(2x2, 3x3) applies, with 64 multiplications per 2x2 outputs and input
# channel where im2col needs 100.
#
# Stride 1: y[r, s] = sum_ij w[i, j] x[r + i - 2, s + j - 2]. For the output phase
# r = 2u + a' and the input row 2(u + p - 1) + a (z's row u + p - 1, phase a), the tap is
# i = 2p + a - a' (zero outside 0..4): output phase (a', b') is again a 3x3 pad-1 convolution
# of z, whose kernel reads w padded by one zero on every side from row 1 - a' and column
# 1 - b' (stride 2 is the phase (0, 0) alone). The four output phases together are ONE 3x3
# convolution from z's 4C channels to 4D channels (a', b', d), and y is its depth_to_space:
# 256 multiplications per 16 outputs and input channel where im2col needs 400.

#: The output phases (a', b') that a 5x5 convolution of this stride computes from z, in the
#: order of their blocks of output channels.
OUTPUT_PHASES = {2: ((0, 0),), 1: ((0, 0), (0, 1), (1, 0), (1, 1))}


def space_to_depth(x):
    """x (N, C, H, W) -> z (N, 4C, ceil(H/2), ceil(W/2)), channel (a, b, c) holding
    x[:, c, a::2, b::2] (zero where the input ends); z is the NCHW view of a batch-innermost
    buffer, the layout ``forward`` reads fastest."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    oh, ow = -(-h // 2), -(-w // 2)
    z = xp.empty((2, 2, c, oh, ow, n), dtype=x.dtype)
    for a in range(2):
        for b in range(2):
            rows, cols = (h - a + 1) // 2, (w - b + 1) // 2
            z[a, b, :, :rows, :cols] = x[:, :, a::2, b::2].transpose(1, 2, 3, 0)
            z[a, b, :, rows:] = 0
            z[a, b, :, :rows, cols:] = 0
    return z.reshape(4 * c, oh, ow, n).transpose(3, 0, 1, 2)


def depth_to_space(dz, x_shape, layout=(1, 0, 2, 3)):
    """Adjoint of ``space_to_depth``: dz (N, 4C, OH, OW) -> dx (N, C, H, W), written into an
    array whose memory runs over the axes in ``layout`` (channel-major by default). It is
    also the inverse where the planes hold whole phases: a stride-1 5x5 convolution's
    output."""
    xp = get_array_module(dz)
    n, c, h, w = x_shape
    dz = dz.reshape(n, 2, 2, c, dz.shape[2], dz.shape[3])
    dx = empty_in_order(xp, x_shape, dz.dtype, layout)
    for a in range(2):
        for b in range(2):
            rows, cols = (h - a + 1) // 2, (w - b + 1) // 2
            dx[:, :, a::2, b::2] = dz[:, a, b, :, :rows, :cols]
    return dx


def _phase_window(phase):
    """Where output phase (a', b')'s kernel sits in w padded by one zero on every side
    (D, C, 7, 7): the 6x6 window from row 1 - a', column 1 - b', read as (D, C, p, a, q, b)
    (tap 2p + a, 2q + b)."""
    a, b = phase
    return (slice(None), slice(None), slice(1 - a, 7 - a), slice(1 - b, 7 - b))


def five_by_five_kernel(w, stride: int):
    """w (D, C, 5, 5) -> the (P * D, 4C, 3, 3) kernel of ``space_to_depth``'s channels, one
    block of D output channels per phase of ``OUTPUT_PHASES[stride]``."""
    xp = get_array_module(w)
    d, c = w.shape[:2]
    phases = OUTPUT_PHASES[stride]
    padded = xp.zeros((d, c, 7, 7), dtype=w.dtype)
    padded[:, :, 1:6, 1:6] = w
    k = xp.empty((len(phases), d, 2, 2, c, 3, 3), dtype=w.dtype)
    for i, phase in enumerate(phases):  # (D, C, p, a, q, b) -> (D, a, b, C, p, q)
        k[i] = padded[_phase_window(phase)].reshape(d, c, 3, 2, 3, 2).transpose(0, 3, 5, 1, 2, 4)
    return k.reshape(len(phases) * d, 4 * c, 3, 3)


def five_by_five_kernel_grad(dk, out, stride: int):
    """Adjoint of ``five_by_five_kernel``: dk (P * D, 4C, 3, 3) -> ``out`` (D, C, 5, 5), in
    place (the gradients of the zero taps are dropped)."""
    xp = get_array_module(dk)
    d, c = out.shape[:2]
    phases = OUTPUT_PHASES[stride]
    full = xp.zeros((d, c, 7, 7), dtype=dk.dtype)
    for i, phase in enumerate(phases):
        block = dk[i * d:(i + 1) * d].reshape(d, 2, 2, c, 3, 3).transpose(0, 3, 4, 1, 5, 2)
        full[_phase_window(phase)] += block.reshape(d, c, 6, 6)
    out[...] = full[:, :, 1:6, 1:6]
    return out
