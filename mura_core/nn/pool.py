"""Max pooling on NumPy (and CuPy when no fused kernel serves), forward and backward.

Two algorithms, each with what its backward keeps:

- 2x2 windows with stride 2 (the networks' pools) take the maximum pairwise: first of each
  row's left and right neighbours, then of the top and bottom results, remembering the two
  comparisons as boolean masks (right beat left, bottom beat top: ties go to the first);
  backward splits the gradient with them. A block of images or channels at a time, so that
  the row maxima and the masks stay in cache between the passes.
- Any other window takes the maximum over the size*size strided slices and remembers the
  winning offset in an int8 array (the first offset holding the maximum).

Outputs and input gradients keep the memory order of the input (a convolution's output may be
stored channel- or batch-major). Element-wise arithmetic on masks is used instead of
``where`` (several times faster).
"""
from __future__ import annotations

import numpy as np

from .backend import copy_in_order, empty_in_order, get_array_module, memory_order

#: Bytes of input per block in the pool's passes (in cache between them).
POOL_BLOCK_BYTES = 2 << 20


def _outer_blocks(x):
    """Index tuples that cut x (N, C, H, W) along its outermost axis in memory (the batch
    or the channels) into blocks of about POOL_BLOCK_BYTES; one block when that axis is a
    spatial one."""
    axis = memory_order(x)[0]
    if axis > 1:
        return [(slice(None),)]
    per_item = max(1, x.nbytes // max(1, x.shape[axis]))
    size = max(1, POOL_BLOCK_BYTES // per_item)
    lead = (slice(None),) * axis
    return [lead + (slice(start, start + size),) for start in range(0, x.shape[axis], size)]


def pairwise_max(x, out=None, winners: bool = True):
    """2x2 windows of x (N, C, H, W): the maxima into ``out`` (when given) and, when
    ``winners``, (right > left for every row pair, bottom > top of the row maxima) in the
    memory order of x; else None."""
    xp = get_array_module(x)
    n, c = x.shape[:2]
    h, w = x.shape[2] // 2, x.shape[3] // 2
    layout = memory_order(x)
    if winners:
        right_won = empty_in_order(xp, (n, c, 2 * h, w), bool, layout)
        bottom_won = empty_in_order(xp, (n, c, h, w), bool, layout)
    for part in _outer_blocks(x):
        xs = x[part][:, :, :2 * h, :2 * w]
        left, right = xs[..., 0::2], xs[..., 1::2]
        pairs = xp.maximum(left, right)
        top, bottom = pairs[:, :, 0::2], pairs[:, :, 1::2]
        if out is not None:
            xp.maximum(top, bottom, out=out[part])
        if winners:
            xp.greater(right, left, out=right_won[part])
            xp.greater(bottom, top, out=bottom_won[part])
    return (right_won, bottom_won) if winners else None


def pairwise_grad(dy, right_won, bottom_won, x_shape, layout):
    """The input gradient of a 2x2 stride-2 pool from dy (N, C, H/2, W/2) and the winners
    of ``pairwise_max``: offset (a, b) won where the row choice is a and, in row a, the
    column choice b; each quarter of dx is written once, by one product with that mask (a
    block at a time, so that the masks stay in cache). The row and column floor mode leaves
    out, if any, get zero."""
    xp = get_array_module(dy)
    h, w = dy.shape[2], dy.shape[3]
    dx = empty_in_order(xp, x_shape, dy.dtype, layout)
    dx[:, :, 2 * h:] = 0
    dx[:, :, :, 2 * w:] = 0
    for part in _outer_blocks(dx):
        dyp, dxp, rights, bottoms = dy[part], dx[part], right_won[part], bottom_won[part]
        for a, row_won in enumerate((~bottoms, bottoms)):
            right = rights[:, :, a::2]
            xp.multiply(dyp, row_won > right, out=dxp[:, :, a:2 * h:2, 0:2 * w:2])
            xp.multiply(dyp, row_won & right, out=dxp[:, :, a:2 * h:2, 1:2 * w:2])
    return dx


def window_slices(size: int, stride: int, oh: int, ow: int):
    """The size*size strided slices of an (N, C, H, W) input, one per window offset."""
    for i in range(size):
        for j in range(size):
            yield (slice(None), slice(None), slice(i, i + stride * (oh - 1) + 1, stride),
                   slice(j, j + stride * (ow - 1) + 1, stride))


def window_max(x, size: int, stride: int, oh: int, ow: int):
    """The maxima (N, C, OH, OW) of x's size x size windows, any stride."""
    xp = get_array_module(x)
    slices = list(window_slices(size, stride, oh, ow))
    out = xp.ascontiguousarray(x[slices[0]])
    for sl in slices[1:]:
        xp.maximum(out, x[sl], out=out)
    return out


def window_winner(x, out, size: int, stride: int):
    """int8 index of the first offset holding the maximum ``out``: the number of offsets
    passed over before it, i.e. the sum over k of "none of offsets 0..k holds it"."""
    slices = list(window_slices(size, stride, out.shape[2], out.shape[3]))
    missed = x[slices[0]] != out
    winner = missed.astype(np.int8)
    for sl in slices[1:-1]:
        missed &= x[sl] != out
        winner += missed
    return winner


def window_grad(dy, winner, x_shape, size: int, stride: int, layout):
    """The input gradient of a pool from dy and ``window_winner``; windows that tile the
    input exactly are written once each (no zero fill), overlapping ones add up."""
    xp = get_array_module(dy)
    h, w = dy.shape[2], dy.shape[3]
    dx = empty_in_order(xp, x_shape, dy.dtype, layout)
    covered = stride == size and h * stride == x_shape[2] and w * stride == x_shape[3]
    if not covered:
        dx[...] = 0
    for offset, sl in enumerate(window_slices(size, stride, h, w)):
        if stride >= size:
            xp.multiply(dy, winner == offset, out=dx[sl])
        else:
            dx[sl] += dy * (winner == offset)
    return dx


def in_order(dy, layout):
    """dy in the memory order ``layout`` (a copy only when it is not; e.g. through a dropout
    mask, which is C-ordered)."""
    return dy if memory_order(dy) == layout else copy_in_order(get_array_module(dy), dy, layout)
