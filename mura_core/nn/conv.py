"""im2col / col2im for 2-D convolutions, as array operations that run on NumPy and CuPy.

Layout. A column matrix is ``(C, K, K, N, OH, OW)``, read as ``(C*K*K, N*OH*OW)``: the
convolution is then ONE matrix product ``W(D, C*K*K) @ col``, its weight gradient one
product with ``col.T`` and its input gradient one product ``W.T @ dy``. The batch sits inside
the columns, so no per-sample loop and no batched product are needed.

Both directions loop over the K*K kernel offsets only (49 iterations at most for 7x7), each
moving one slice of the whole batch: no ``np.add.at``, no index arrays, no loop over pixels or
samples (Chainer's ``im2col_cpu`` / ``col2im_cpu`` do the same). For a stride s > 1 the padded
input is first split into its s*s phases (``padded[:, :, a::s, b::s]``): every kernel offset
then reads a block of whole rows of one phase instead of every s-th element, which is what
makes the copies fast. On CuPy, each function is one fused kernel instead (``cuda_kernels``):
a slice there costs a kernel launch.
"""
from __future__ import annotations

import numpy as np

from .backend import get_array_module, gpu_kernels


def conv_output_size(size: int, k: int, stride: int, pad: int) -> int:
    """Spatial output size of a convolution (floor), e.g. 227, k=7, s=2, p=3 -> 114."""
    return (size + 2 * pad - k) // stride + 1


def _padded_extent(size: int, k: int, stride: int, pad: int) -> int:
    """Rows (or columns) of the padded plane, rounded up to a multiple of the stride so that
    every phase has the same extent, and large enough for the last window."""
    out = conv_output_size(size, k, stride, pad)
    extent = max(size + 2 * pad, (k - 1) + stride * out)
    return -(-extent // stride) * stride


def _phase_pairs(phases, pixels, stride: int, pad: int):
    """For each phase (a, b): the view of ``pixels`` (C, N, H, W) that lands on it, and the
    matching window of ``phases[a, b]``. Input row r sits on padded row r + pad, i.e. in phase
    (r + pad) % s at row (r + pad) // s; likewise for columns."""
    for a in range(stride):
        for b in range(stride):
            r0, c0 = (a - pad) % stride, (b - pad) % stride
            view = pixels[:, :, r0::stride, c0::stride]
            i0, j0 = (r0 + pad) // stride, (c0 + pad) // stride
            yield view, phases[a, b, :, :, i0:i0 + view.shape[2], j0:j0 + view.shape[3]]


def _kernel_windows(phases, k: int, stride: int, oh: int, ow: int):
    """For each kernel offset (i, j): the (C, N, OH, OW) window of the phase planes that the
    offset reads, i.e. padded[:, :, i + s*y, j + s*x] for every output (y, x)."""
    for i in range(k):
        for j in range(k):
            yield i, j, phases[i % stride, j % stride, :, :,
                               i // stride:i // stride + oh, j // stride:j // stride + ow]


def im2col(x, k: int, stride: int, pad: int):
    """x (N, C, H, W) -> col (C, K, K, N, OH, OW), zero padded by ``pad`` on every side."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    oh, ow = conv_output_size(h, k, stride, pad), conv_output_size(w, k, stride, pad)
    kernels = gpu_kernels(xp)
    if kernels is not None:
        return kernels.im2col(x, k, stride, pad, oh, ow)
    col = xp.empty((c, k, k, n, oh, ow), dtype=x.dtype)
    _fill_columns(x, col, k, stride, pad)
    return col


def im2col_with_ones(x, k: int, stride: int, pad: int):
    """NumPy's im2col with one more row of ones: (col, matrix), matrix (C*K*K + 1, N*OH*OW)
    and col its first C*K*K rows as (C, K, K, N, OH, OW). A bias then rides in the product as
    one more weight column (no separate pass over the output), and the weight gradient's
    product with this matrix gives the bias gradient as its last column."""
    n, c, h, w = x.shape
    oh, ow = conv_output_size(h, k, stride, pad), conv_output_size(w, k, stride, pad)
    matrix = np.empty((c * k * k + 1, n * oh * ow), dtype=x.dtype)
    col = matrix[:-1].reshape(c, k, k, n, oh, ow)
    _fill_columns(x, col, k, stride, pad)
    matrix[-1] = 1
    return col, matrix


def _fill_columns(x, col, k: int, stride: int, pad: int) -> None:
    """Write im2col(x) into ``col`` (C, K, K, N, OH, OW) with slice copies."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    oh, ow = col.shape[4], col.shape[5]
    hp, wp = _padded_extent(h, k, stride, pad), _padded_extent(w, k, stride, pad)
    # phases[a, b, c, n] = padded[c, n, a::s, b::s]: channels before batch, as in col.
    phases = xp.zeros((stride, stride, c, n, hp // stride, wp // stride), dtype=x.dtype)
    for pixels, phase in _phase_pairs(phases, x.transpose(1, 0, 2, 3), stride, pad):
        phase[...] = pixels
    for i, j, window in _kernel_windows(phases, k, stride, oh, ow):
        col[:, i, j] = window


def col2im(col, x_shape, k: int, stride: int, pad: int):
    """Adjoint of ``im2col``: col (C, K, K, N, OH, OW) -> dx (N, C, H, W), on NumPy the view
    of a channel-major (C, N, H, W) array.

    Overlapping windows add up (one slice addition per kernel offset, into the phase planes).
    """
    xp = get_array_module(col)
    kernels = gpu_kernels(xp)
    if kernels is not None:
        return kernels.col2im(col, x_shape, k, stride, pad)
    n, c, h, w = x_shape
    oh, ow = col.shape[4], col.shape[5]
    hp, wp = _padded_extent(h, k, stride, pad), _padded_extent(w, k, stride, pad)
    phases = xp.zeros((stride, stride, c, n, hp // stride, wp // stride), dtype=col.dtype)
    for i, j, window in _kernel_windows(phases, k, stride, oh, ow):
        window += col[:, i, j]
    # Stored channel-major like the columns (the copies below are then contiguous) and
    # returned as its (N, C, H, W) view.
    dx = xp.empty((c, n, h, w), dtype=col.dtype)
    for pixels, phase in _phase_pairs(phases, dx, stride, pad):
        pixels[...] = phase
    return dx.transpose(1, 0, 2, 3)
