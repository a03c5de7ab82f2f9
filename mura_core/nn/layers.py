"""Layers with hand-written forward and backward passes, one code path for NumPy and CuPy.

Every layer follows the same protocol:

- ``forward(x, training=False) -> y`` keeps what its backward needs;
- ``backward(dy) -> dx`` fills ``grads`` (same keys and shapes as ``params``) and returns
  the gradient with respect to the input (``None`` for a first layer told not to);
- ``params`` / ``grads``: dicts of arrays owned by the layer; composite layers
  (``Sequential``, ``Residual``) expose their children's through ``named_parameters``;
- ``output_shape(shape)`` maps an input shape without the batch axis to the output's, so a
  network can be described (and checked) without running it.

Arrays are NCHW; the dtype of the parameters (float32 by default) is the dtype of the work:
constants are Python floats, which never upcast a float32 array under NumPy 2.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from . import backend, plain, pool, winograd
from .backend import (
    copy_in_order,
    empty_in_order,
    get_array_module,
    gpu_kernels,
    memory_order,
    pack,
    viewed_in_order,
)
from .conv import col2im, conv_output_size, im2col, im2col_with_ones
from .rng import keep_mask, stream_key, uniform


class RandomStream:
    """A counter-based source of random streams: ``next_key()`` names a fresh one.

    The n-th stream depends only on (seed, n) (see ``rng.py``), so the whole state is two
    integers: a checkpoint stores them and a resumed run draws the very same dropout masks,
    and NumPy and CuPy draw the same masks from the same state.
    """

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.counter = 0

    def next_key(self) -> int:
        key = stream_key(self.seed, self.counter)
        self.counter += 1
        return key

    def state(self) -> dict:
        return {"seed": self.seed, "counter": self.counter}

    def set_state(self, state: dict) -> None:
        self.seed = int(state["seed"])
        self.counter = int(state["counter"])


class Layer:
    """Base class: parameter bookkeeping, shape inference and a readable description."""

    def __init__(self):
        self.params: dict = {}
        self.grads: dict = {}

    def forward(self, x, training: bool = False):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def output_shape(self, shape: tuple) -> tuple:
        return tuple(shape)

    def children(self) -> list[tuple[str, "Layer"]]:
        return []

    def named_parameters(self, prefix: str = ""):
        """(name, array) pairs, own parameters first, then the children's, in order."""
        for key, value in self.params.items():
            yield prefix + key, value
        for name, child in self.children():
            yield from child.named_parameters(f"{prefix}{name}.")

    def named_gradients(self, prefix: str = ""):
        for key, value in self.grads.items():
            yield prefix + key, value
        for name, child in self.children():
            yield from child.named_gradients(f"{prefix}{name}.")

    def num_parameters(self) -> int:
        return sum(int(v.size) for _, v in self.named_parameters())

    def to(self, xp) -> "Layer":
        """Move parameters (and zeroed gradients) to the array module ``xp``."""
        for key in list(self.params):
            self.params[key] = xp.asarray(self.params[key])
            self.grads[key] = xp.zeros_like(self.params[key])
        for _, child in self.children():
            child.to(xp)
        return self

    def pack(self) -> "Layer":
        """Place every parameter of this layer and its children in one buffer, and every
        gradient in another, at the same offsets (``backend.pack``; values unchanged), so
        that the optimizer updates them all in one pass (one kernel launch on a GPU instead
        of one per array). Layers keep writing their gradients in place, into these views."""
        slots = list(self._slots())
        if not slots:
            return self
        xp = get_array_module(slots[0][0].params[slots[0][1]])
        for store in ("params", "grads"):
            _, views = pack([getattr(layer, store)[key] for layer, key in slots], xp)
            for (layer, key), view in zip(slots, views):
                getattr(layer, store)[key] = view
        return self

    def _slots(self):
        """(layer, key) of every parameter, in the order of ``named_parameters``."""
        for key in self.params:
            yield self, key
        for _, child in self.children():
            yield from child._slots()

    def describe(self) -> str:
        return type(self).__name__


#: Standard deviation of the output layer's weights (as AlexNet): the first logits are then
#: small, P(normal) starts near 0.5 and the first losses near log 2.
OUTPUT_INIT_STD = 0.01


def init_weights(rng: np.random.Generator, shape: tuple, fan_in: int, init: str, dtype) -> np.ndarray:
    """``"he"``: N(0, 2/fan_in), for layers followed by a ReLU (He et al., 2015);
    ``"output"``: N(0, 0.01^2), for the layer that feeds the logistic."""
    if init == "he":
        std = math.sqrt(2.0 / fan_in)
    elif init == "output":
        std = OUTPUT_INIT_STD
    else:
        raise ValueError(f"unknown initialization {init!r}; use 'he' or 'output'")
    return (rng.standard_normal(shape) * std).astype(dtype)


class _ConvInput(NamedTuple):
    """A convolution in evaluation mode: its input, from which a backward recomputes what
    the layer's algorithm keeps."""

    x: object

    def backward(self, layer, dy):
        return layer._forward(self.x)[1].backward(layer, dy)


class _ConvWinograd(NamedTuple):
    """A 3x3 stride-1 convolution through Winograd F(2x2, 3x3): the transformed weights and
    input."""

    x_shape: tuple
    u: object
    v: object

    def backward(self, layer, dy):
        _, db, dx = winograd.backward(dy, self.u, self.v, self.x_shape, dw=layer.grads["W"],
                                      input_grad=layer.input_grad)
        layer.grads["b"][...] = db
        return dx


class _ConvWinogradS2D(NamedTuple):
    """A 5x5 convolution as the Winograd convolution of its space-to-depth input (to the four
    output phases' planes at stride 1): the transformed weights and input, and the input's
    memory order (its gradient's)."""

    x_shape: tuple
    u: object
    v: object
    layout: tuple

    def backward(self, layer, dy):
        n, c, h, w = self.x_shape
        z_shape = (n, 4 * c, -(-h // 2), -(-w // 2))
        if layer.stride == 1:  # the gradient of the phase planes
            dy = winograd.space_to_depth(dy)
        dk, db, dz = winograd.backward(dy, self.u, self.v, z_shape, input_grad=layer.input_grad)
        winograd.five_by_five_kernel_grad(dk, layer.grads["W"], layer.stride)
        layer.grads["b"][...] = db.reshape(-1, layer.d_out).sum(axis=0)
        return None if dz is None else winograd.depth_to_space(dz, self.x_shape, self.layout)


class _ConvPointwise(NamedTuple):
    """A 1x1 stride-1 convolution as one matrix product over the channels: its input as a
    matrix (``pointwise_matrix``) and the memory order it was read in (``pointwise_layout``:
    its output's and its gradients')."""

    x_shape: tuple
    x2: object
    layout: tuple

    def backward(self, layer, dy):
        xp = get_array_module(dy)
        w2 = layer.params["W"].reshape(layer.d_out, layer.d_in)
        dy2, channels_first = pointwise_matrix(dy, self.layout)
        if channels_first:  # (D, P) and (C, P)
            xp.matmul(dy2, self.x2.T, out=layer.grads["W"].reshape(w2.shape))
            layer.grads["b"][...] = dy2.sum(axis=1)
            dx2 = w2.T @ dy2 if layer.input_grad else None
        else:  # (P, D) and (P, C)
            xp.matmul(dy2.T, self.x2, out=layer.grads["W"].reshape(w2.shape))
            layer.grads["b"][...] = dy2.sum(axis=0)
            dx2 = dy2 @ w2 if layer.input_grad else None
        return None if dx2 is None else from_pointwise_matrix(dx2, self.x_shape, self.layout)


def pointwise_layout(x) -> tuple:
    """The memory order a 1x1 convolution of x computes in: x's own (``memory_order``) when
    its channels are outermost or innermost there (no copy), else channel-major."""
    layout = memory_order(x)
    return layout if 1 in (layout[0], layout[-1]) else (1, 0, 2, 3)


def pointwise_matrix(x, layout):
    """x (N, C, H, W) as a matrix of channels by pixels, read in the memory order ``layout``
    (``pointwise_layout``): (C, P) when the channels are outermost there, (P, C) when
    innermost; a copy only when x is not stored that way. Returns (matrix, channels_first)."""
    xp = get_array_module(x)
    m = xp.ascontiguousarray(x.transpose(layout))
    if layout[0] == 1:
        return m.reshape(x.shape[1], -1), True
    return m.reshape(-1, x.shape[1]), False


def from_pointwise_matrix(m, shape, layout):
    """Inverse of ``pointwise_matrix`` for an output of ``shape`` (N, D, H, W): the (D, P) or
    (P, D) matrix as the (N, D, H, W) view of its memory."""
    return viewed_in_order(m.reshape(tuple(shape[axis] for axis in layout)), layout)


class _ConvColumns(NamedTuple):
    """A convolution through im2col: the column matrix (``matrix``: with its row of ones, on
    NumPy; None on CuPy, whose columns are ``col`` alone)."""

    x_shape: tuple
    col: object
    matrix: object

    def backward(self, layer, dy):
        xp = get_array_module(dy)
        col = self.col
        w2 = layer.params["W"].reshape(layer.d_out, -1)
        if self.matrix is None:  # CuPy: (N, D, OH, OW) -> (D, N*OH*OW), the forward's layout
            dy2 = xp.ascontiguousarray(dy.transpose(1, 0, 2, 3)).reshape(layer.d_out, -1)
            xp.matmul(dy2, col.reshape(-1, dy2.shape[1]).T, out=layer.grads["W"].reshape(w2.shape))
            layer.grads["b"][...] = dy2.sum(axis=1)
        else:
            # (N, D, OH, OW) -> (D, N*OH*OW) as the transpose of the channels-last
            # (N*OH*OW, D) matrix (no copy when dy is NHWC, as the forward's output); the
            # last column of the product with the ones row is the bias gradient.
            dy2 = xp.ascontiguousarray(dy.transpose(0, 2, 3, 1)).reshape(-1, layer.d_out).T
            both = dy2 @ self.matrix.T
            layer.grads["W"].reshape(w2.shape)[...] = both[:, :-1]
            layer.grads["b"][...] = both[:, -1]
        if not layer.input_grad:
            return None
        dcol = w2.T @ dy2
        return col2im(dcol.reshape(col.shape), self.x_shape, layer.k, layer.stride, layer.pad)


class _ConvPlain(NamedTuple):
    """A convolution through ``plain.conv_forward``: its cache."""

    cache: tuple

    def backward(self, layer, dy):
        dx, dw, db = plain.conv_backward(dy, self.cache)
        layer.grads["W"][...] = dw
        layer.grads["b"][...] = db
        return dx if layer.input_grad else None


class Conv2D(Layer):
    """2-D convolution, zero padding ``k // 2`` on every side, any stride.

    Shapes: x (N, D_in, H, W) -> y (N, D_out, OH, OW) with OH = (H + 2*(k//2) - k)//stride + 1.
    Parameters: ``W`` (D_out, D_in, k, k), ``b`` (D_out,).
    Implementation: im2col (see ``conv.py``), then one matrix product for the forward pass,
    and one each for the weight and input gradients; on NumPy, 3x3 stride-1 convolutions
    and 5x5 convolutions (stride 1 or 2) use Winograd F(2x2, 3x3) instead (``winograd.py``),
    and 1x1 stride-1 convolutions one product over the channels (see ``_algorithm``).
    ``input_grad=False`` (the network's first layer) skips the input gradient entirely. What a
    backward needs is one small named type per algorithm (``_Conv*``), each with its backward.
    """

    def __init__(self, d_in: int, d_out: int, k: int, stride: int = 1, *, rng=None,
                 dtype=np.float32, init: str = "he", input_grad: bool = True):
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng(0)
        self.d_in, self.d_out, self.k, self.stride = int(d_in), int(d_out), int(k), int(stride)
        self.pad = self.k // 2
        self.input_grad = input_grad
        shape = (self.d_out, self.d_in, self.k, self.k)
        w = init_weights(rng, shape, self.d_in * self.k * self.k, init, dtype)
        self.params = {"W": w, "b": np.zeros(self.d_out, dtype=dtype)}
        self.grads = {key: np.zeros_like(value) for key, value in self.params.items()}
        self._cache = None

    def _algorithm(self, xp) -> str:
        """How this layer computes on ``xp``: "winograd" (3x3, stride 1) and "winograd-s2d"
        (5x5, stride 2 or 1, as a 3x3 stride-1 convolution of the space-to-depth input, to
        the output's four phases at stride 1) use Winograd F(2x2, 3x3) (``winograd.py``),
        2.25x and 1.56x fewer multiplications than im2col, on NumPy; "pointwise" (1x1, stride
        1: a residual projection) is one product over the channels of the input as it is
        stored, with no column matrix, on NumPy; everything else, and everything on CuPy (the
        fused im2col kernels, not measured against these on a GPU), uses "im2col". Without
        ``backend.FAST_PATHS``, every convolution is "plain" (``plain.conv_forward``)."""
        if not backend.FAST_PATHS:
            return "plain"
        if gpu_kernels(xp) is not None:
            return "im2col"
        if self.k == 3 and self.stride == 1:
            return "winograd"
        if self.k == 5 and self.stride in winograd.OUTPUT_PHASES:
            return "winograd-s2d"
        if self.k == 1 and self.stride == 1:
            return "pointwise"
        return "im2col"

    def forward(self, x, training: bool = False):
        y, cache = self._forward(x)
        # Evaluation (usually no backward follows): keep only the input, not the column
        # matrix or transformed input (several times larger, and held until the next
        # forward); a backward pass recomputes them from it.
        self._cache = cache if training else _ConvInput(x)
        return y

    def _forward(self, x):
        """(y, what backward needs): one of the ``_Conv*`` types of ``_algorithm``."""
        xp = get_array_module(x)
        algorithm = self._algorithm(xp)
        if algorithm == "plain":
            y, cache = plain.conv_forward(x, self.params["W"], self.params["b"], self.stride,
                                          self.pad)
            return y, _ConvPlain(cache)
        if algorithm == "winograd":
            u = winograd.transform_weights(self.params["W"])
            y, v = winograd.forward(x, u, self.params["b"])
            return y, _ConvWinograd(x.shape, u, v)
        if algorithm == "winograd-s2d":
            kernel = winograd.five_by_five_kernel(self.params["W"], self.stride)
            phases = kernel.shape[0] // self.d_out
            u = winograd.transform_weights(kernel)
            y, v = winograd.forward(x, u, xp.tile(self.params["b"], phases), space_to_depth=True)
            if self.stride == 1:  # the phase planes, to (N, D, H, W), batch innermost
                y = winograd.depth_to_space(y, (x.shape[0], self.d_out) + x.shape[2:], (1, 2, 3, 0))
            return y, _ConvWinogradS2D(x.shape, u, v, memory_order(x))
        if algorithm == "pointwise":
            layout = pointwise_layout(x)
            x2, channels_first = pointwise_matrix(x, layout)
            w2, b = self.params["W"].reshape(self.d_out, self.d_in), self.params["b"]
            y2 = w2 @ x2 + b[:, None] if channels_first else x2 @ w2.T + b
            return (from_pointwise_matrix(y2, (x.shape[0], self.d_out) + x.shape[2:], layout),
                    _ConvPointwise(x.shape, x2, layout))
        n = x.shape[0]
        w2 = self.params["W"].reshape(self.d_out, -1)
        kernels = gpu_kernels(xp)
        if kernels is not None:
            col = im2col(x, self.k, self.stride, self.pad)  # (C, K, K, N, OH, OW)
            y = w2 @ col.reshape(w2.shape[1], -1)  # (D, N*OH*OW)
            # + bias, and to (N, D, OH, OW), in one pass
            return (kernels.bias_to_nchw(y, self.params["b"], n, col.shape[4], col.shape[5]),
                    _ConvColumns(x.shape, col, None))
        # NumPy: the bias as one more weight column against a row of ones
        # (im2col_with_ones), and the product taken channels-last, (N*OH*OW, D): the output
        # is the NCHW view of an NHWC array. The next layers follow any memory order (a 2x2
        # pool runs about 1.7x faster on NHWC than on NCHW: its pairs are whole runs of
        # channels), and this layer's backward gets dy in the same order, with no copy.
        col, matrix = im2col_with_ones(x, self.k, self.stride, self.pad)
        y = matrix.T @ xp.concatenate([w2, self.params["b"][:, None]], axis=1).T
        y = y.reshape(n, col.shape[4], col.shape[5], self.d_out).transpose(0, 3, 1, 2)
        return y, _ConvColumns(x.shape, col, matrix)

    def backward(self, dy):
        cache, self._cache = self._cache, None
        return cache.backward(self, dy)

    def output_shape(self, shape):
        c, h, w = shape
        if c != self.d_in:
            raise ValueError(f"Conv2D expects {self.d_in} input channels, got {c}")
        return (self.d_out, conv_output_size(h, self.k, self.stride, self.pad),
                conv_output_size(w, self.k, self.stride, self.pad))

    def describe(self):
        return f"Conv2D {self.k}x{self.k}/{self.d_out}, stride {self.stride}, pad {self.pad}"


class _PoolPairs(NamedTuple):
    """A 2x2 stride-2 pool trained on: the winners of ``pool.pairwise_max``."""

    x_shape: tuple
    layout: tuple
    right_won: object
    bottom_won: object

    def backward(self, dy):
        return pool.pairwise_grad(pool.in_order(dy, self.layout), self.right_won,
                                  self.bottom_won, self.x_shape, self.layout)


class _PoolPairsInput(NamedTuple):
    """A 2x2 stride-2 pool in evaluation mode: its input, whose winners a backward finds."""

    x: object

    def backward(self, dy):
        x = self.x
        return _PoolPairs(x.shape, memory_order(x), *pool.pairwise_max(x)).backward(dy)


class _PoolWindows(NamedTuple):
    """Any other pool: the winning offset of every window (``pool.window_winner``)."""

    x_shape: tuple
    layout: tuple
    winner: object
    size: int
    stride: int

    def backward(self, dy):
        return pool.window_grad(pool.in_order(dy, self.layout), self.winner, self.x_shape,
                                self.size, self.stride, self.layout)


class _PoolWindowsInput(NamedTuple):
    """Any other pool in evaluation mode: its input and output."""

    x: object
    out: object
    size: int
    stride: int

    def backward(self, dy):
        winner = pool.window_winner(self.x, self.out, self.size, self.stride)
        return _PoolWindows(self.x.shape, memory_order(self.x), winner, self.size,
                            self.stride).backward(dy)


class _PoolKernel(NamedTuple):
    """A pool on CuPy: the fused kernels' winners."""

    x_shape: tuple
    winner: object
    size: int
    stride: int

    def backward(self, dy):
        kernels = gpu_kernels(get_array_module(dy))
        return kernels.maxpool_backward(dy, self.winner, self.x_shape, self.size, self.stride)


class _PoolPlain(NamedTuple):
    """A pool through ``plain.maxpool_forward``: its cache."""

    cache: tuple

    def backward(self, dy):
        return plain.maxpool_backward(dy, self.cache)


class MaxPool2D(Layer):
    """Max pooling over ``size`` x ``size`` windows, floor mode: OH = (H - size)//stride + 1.

    Backward routes each gradient to the offset that holds the maximum, the first one in
    row-major order on ties, so a tie never duplicates gradient. 2x2 windows with stride 2
    (the networks' pools) are taken pairwise, other windows over their strided slices
    (``pool.py``); outputs and input gradients keep the memory order of the input. In
    evaluation mode the winners are found only if a backward pass asks for them. On CuPy,
    forward and backward are one fused kernel each (``cuda_kernels``). What a backward needs
    is one small named type per algorithm (``_Pool*``), each with its backward.
    """

    def __init__(self, size: int = 2, stride: int | None = None):
        super().__init__()
        self.size = int(size)
        self.stride = int(stride if stride is not None else size)
        self._cache = None

    def forward(self, x, training: bool = False):
        xp = get_array_module(x)
        _, h, w = self.output_shape(x.shape[1:])
        if not backend.FAST_PATHS:
            out, cache = plain.maxpool_forward(x, self.size, self.stride)
            self._cache = _PoolPlain(cache)
            return out
        kernels = gpu_kernels(xp)
        if kernels is not None:
            out, winner = kernels.maxpool_forward(x, self.size, self.stride, h, w)
            self._cache = _PoolKernel(x.shape, winner, self.size, self.stride)
            return out
        layout = memory_order(x)
        if self.size == 2 and self.stride == 2:
            # In training the winners are found now, so the input can be freed; in evaluation
            # (usually no backward follows) only if a backward asks for them.
            out = empty_in_order(xp, x.shape[:2] + (h, w), x.dtype, layout)
            winners = pool.pairwise_max(x, out, training)
            self._cache = _PoolPairs(x.shape, layout, *winners) if training else _PoolPairsInput(x)
            return out
        out = pool.window_max(x, self.size, self.stride, h, w)
        self._cache = (_PoolWindows(x.shape, layout, pool.window_winner(x, out, self.size,
                                                                         self.stride),
                                    self.size, self.stride) if training
                       else _PoolWindowsInput(x, out, self.size, self.stride))
        return out

    def backward(self, dy):
        cache, self._cache = self._cache, None
        return cache.backward(dy)

    def output_shape(self, shape):
        c, h, w = shape
        oh, ow = (h - self.size) // self.stride + 1, (w - self.size) // self.stride + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"MaxPool2D {self.size}x{self.size} needs an input of at least "
                             f"{self.size}x{self.size}, got {h}x{w}")
        return (c, oh, ow)

    def describe(self):
        return f"MaxPool2D {self.size}x{self.size}, stride {self.stride}"


class ReLU(Layer):
    """y = max(x, 0); dx = dy where x > 0, else 0."""

    def forward(self, x, training: bool = False):
        if not backend.FAST_PATHS:
            y, self._mask = plain.relu_forward(x)
            return y
        xp = get_array_module(x)
        kernels = gpu_kernels(xp)
        if kernels is not None:  # both lines below in one launch
            y, self._mask = kernels.relu(x)
            return y
        y = xp.maximum(x, x.dtype.type(0))
        self._mask = y > 0
        return y

    def backward(self, dy):
        mask, self._mask = self._mask, None
        if not backend.FAST_PATHS:
            return plain.relu_backward(dy, mask)
        return dy * mask  # a product with the boolean mask: much faster than where()


class Sigmoid(Layer):
    """Logistic function y = 1 / (1 + exp(-x)), computed without overflow; dx = dy * y * (1 - y)."""

    def forward(self, x, training: bool = False):
        self._y = sigmoid(x)
        return self._y

    def backward(self, dy):
        y = self._y
        return dy * y * (1 - y)


def sigmoid(x):
    """Overflow-free logistic: exp is only ever taken of a non-positive number."""
    xp = get_array_module(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


class Dropout(Layer):
    """Inverted dropout: in training each unit is zeroed with probability p and the others are
    scaled by 1/(1-p), so evaluation is the identity. Backward applies the same mask.
    Masks come from a ``RandomStream`` (shared by the model's dropout layers)."""

    def __init__(self, p: float = 0.5, stream: RandomStream | None = None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.stream = stream if stream is not None else RandomStream(0)
        self._mask = None

    def forward(self, x, training: bool = False):
        if not training or self.p == 0.0:
            self._mask = None
            return x
        if not backend.FAST_PATHS:
            xp = get_array_module(x)
            u = xp.asarray(uniform(np, x.shape, self.stream.next_key()))
            y, self._mask = plain.dropout_forward(x, self.p, u)
            return y
        self._mask = keep_mask(x, self.p, self.stream.next_key())
        return x * self._mask

    def backward(self, dy):
        if self._mask is None:
            return dy
        if not backend.FAST_PATHS:
            return plain.dropout_backward(dy, self._mask)
        return dy * self._mask

    def describe(self):
        return f"Dropout p={self.p:g}"


class Linear(Layer):
    """Fully connected layer: y = x @ W + b, with W (d_in, d_out) and b (d_out,)."""

    def __init__(self, d_in: int, d_out: int, *, rng=None, dtype=np.float32, init: str = "he"):
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng(0)
        self.d_in, self.d_out = int(d_in), int(d_out)
        w = init_weights(rng, (self.d_in, self.d_out), self.d_in, init, dtype)
        self.params = {"W": w, "b": np.zeros(self.d_out, dtype=dtype)}
        self.grads = {key: np.zeros_like(value) for key, value in self.params.items()}

    def forward(self, x, training: bool = False):
        if not backend.FAST_PATHS:
            y, self._x = plain.linear_forward(x, self.params["W"], self.params["b"])
            return y
        self._x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dy):
        if not backend.FAST_PATHS:
            dx, self.grads["W"][...], self.grads["b"][...] = plain.linear_backward(dy, self._x)
            self._x = None
            return dx
        xp = get_array_module(dy)
        xp.matmul(self._x.T, dy, out=self.grads["W"])
        self.grads["b"][...] = dy.sum(axis=0)
        self._x = None
        return dy @ self.params["W"].T

    def output_shape(self, shape):
        if tuple(shape) != (self.d_in,):
            raise ValueError(f"Linear expects {self.d_in} inputs, got shape {tuple(shape)}")
        return (self.d_out,)

    def describe(self):
        return f"Linear {self.d_in} -> {self.d_out}"


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W), in C order (the NCHW order of the features).

    The input gradient takes the memory order of the input (the layers below then run in
    step with their own arrays)."""

    def forward(self, x, training: bool = False):
        self._shape, self._layout = x.shape, memory_order(x)
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        dx = dy.reshape(self._shape)
        if self._layout == tuple(range(dx.ndim)):
            return dx
        return copy_in_order(get_array_module(dy), dx, self._layout)

    def output_shape(self, shape):
        return (int(np.prod(shape)),)


class Sequential(Layer):
    """Named layers applied in order. ``layers``: a list of (name, layer) pairs.

    Besides the protocol, what a saliency map needs from the same two passes: ``forward`` can
    keep the outputs of named layers (``outputs``), and ``backward`` can stop at a named
    layer's output and return the gradient there.
    """

    def __init__(self, layers):
        super().__init__()
        self.layers = list(layers)
        self.outputs: dict = {}

    def children(self):
        return self.layers

    def _check_names(self, names) -> None:
        known = {name for name, _ in self.layers}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"no layer named {', '.join(map(repr, unknown))}; the layers are "
                             f"{', '.join(name for name, _ in self.layers)}")

    def forward(self, x, training: bool = False, keep=()):
        """Apply the layers in order. ``keep``: names of layers whose outputs are kept in
        ``outputs`` (name -> array) until the next forward pass."""
        if keep:
            self._check_names(keep)
        self.outputs = {}
        for name, layer in self.layers:
            x = layer.forward(x, training)
            if name in keep:
                self.outputs[name] = x
        return x

    def backward(self, dy, stop_at: str | None = None):
        """Backpropagate ``dy`` (the gradient at the last layer's output) and return the
        gradient at the input. ``stop_at``: the name of a layer; the pass stops once it has
        the gradient at that layer's output and returns it (the layers from there down are
        not visited: their ``grads`` keep older values)."""
        if stop_at is not None:
            self._check_names([stop_at])
        for name, layer in reversed(self.layers):
            if name == stop_at:
                return dy
            dy = layer.backward(dy)
            if dy is None:  # a first layer that was told not to compute its input gradient
                return None
        return dy

    def output_shape(self, shape):
        for _, layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    def describe(self):
        return " -> ".join(layer.describe() for _, layer in self.layers)


class Residual(Layer):
    """y = relu(block(x) + shortcut(x)).

    ``shortcut`` is the identity when ``None`` (the block must keep the shape); pass a 1x1
    ``Conv2D`` (with the block's stride) as a projection when channels or size change.
    """

    def __init__(self, block: Layer, shortcut: Layer | None = None):
        super().__init__()
        self.block = block
        self.shortcut = shortcut
        self.relu = ReLU()

    def children(self):
        kids = [("conv", self.block)]
        if self.shortcut is not None:
            kids.append(("proj", self.shortcut))
        return kids

    def forward(self, x, training: bool = False):
        skip = x if self.shortcut is None else self.shortcut.forward(x, training)
        return self.relu.forward(self.block.forward(x, training) + skip, training)

    def backward(self, dy):
        ds = self.relu.backward(dy)
        dx = self.block.backward(ds)
        return dx + (ds if self.shortcut is None else self.shortcut.backward(ds))

    def output_shape(self, shape):
        out = self.block.output_shape(shape)
        skip = tuple(shape) if self.shortcut is None else self.shortcut.output_shape(shape)
        if tuple(out) != tuple(skip):
            raise ValueError(f"Residual: block gives {out} but shortcut gives {skip}; "
                             "use a 1x1 Conv2D projection as the shortcut")
        return out

    def describe(self):
        skip = "identity" if self.shortcut is None else f"projection ({self.shortcut.describe()})"
        return f"Residual[{self.block.describe()}] + {skip}, then ReLU"
