"""im2col / col2im for 2-D convolutions, as array operations that run on NumPy and CuPy.

Layout. A column matrix is ``(C, K, K, N, OH, OW)``, read as ``(C*K*K, N*OH*OW)``: the
convolution is then ONE matrix product ``W(D, C*K*K) @ col``, its weight gradient one
product ``dy(D, N*OH*OW) @ col.T`` and its input gradient one product ``W.T @ dy``. The
batch sits inside the columns, so no per-sample loop and no batched product are needed.

Both directions loop over the K*K kernel offsets only (49 iterations at most for 7x7),
each moving one strided slice of the whole batch: no ``np.add.at``, no index arrays, no
loop over pixels or samples (Chainer's ``im2col_cpu`` / ``col2im_cpu`` do the same).
"""
from __future__ import annotations

from .backend import get_array_module


def conv_output_size(size: int, k: int, stride: int, pad: int) -> int:
    """Spatial output size of a convolution (floor), e.g. 227, k=7, s=2, p=3 -> 114."""
    return (size + 2 * pad - k) // stride + 1


def im2col(x, k: int, stride: int, pad: int):
    """x (N, C, H, W) -> col (C, K, K, N, OH, OW), zero padded by ``pad`` on every side."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    oh = conv_output_size(h, k, stride, pad)
    ow = conv_output_size(w, k, stride, pad)
    # Channels first, batch second: every slice copied below is then contiguous in col.
    xt = x.transpose(1, 0, 2, 3)
    if pad:
        padded = xp.zeros((c, n, h + 2 * pad, w + 2 * pad), dtype=x.dtype)
        padded[:, :, pad:pad + h, pad:pad + w] = xt
    else:
        padded = xt
    col = xp.empty((c, k, k, n, oh, ow), dtype=x.dtype)
    for i in range(k):
        i_end = i + stride * oh
        for j in range(k):
            j_end = j + stride * ow
            col[:, i, j] = padded[:, :, i:i_end:stride, j:j_end:stride]
    return col


def col2im(col, x_shape, k: int, stride: int, pad: int):
    """Adjoint of ``im2col``: col (C, K, K, N, OH, OW) -> dx (N, C, H, W).

    Overlapping windows add up (a slice addition per kernel offset).
    """
    xp = get_array_module(col)
    n, c, h, w = x_shape
    oh, ow = col.shape[4], col.shape[5]
    # Room for the last window's reach, which can pass the padded border when striding.
    hp = max(h + 2 * pad, (k - 1) + stride * oh)
    wp = max(w + 2 * pad, (k - 1) + stride * ow)
    padded = xp.zeros((c, n, hp, wp), dtype=col.dtype)
    for i in range(k):
        i_end = i + stride * oh
        for j in range(k):
            j_end = j + stride * ow
            padded[:, :, i:i_end:stride, j:j_end:stride] += col[:, i, j]
    return padded[:, :, pad:pad + h, pad:pad + w].transpose(1, 0, 2, 3)
