"""The assignment as data: which pieces a student writes, where they live, what each must
compute, which requirement of the course each answers and how many points it is worth.

One list, ``PIECES``, drives everything of the course kit: the student edition blanks the
functions it names (``student.py``), the grader checks them (``check.py``) and scores them
(``grader.py``), and the edition's ASSIGNMENT.md is written from it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Piece:
    """One piece of the assignment.

    ``functions``: (module file relative to the package root, qualified name) of every function
    the student writes for it; ``statements``: for each, what it computes, in words (the
    stub's ``NotImplementedError`` message)."""

    name: str
    title: str
    requirement: str
    points: int
    functions: tuple[tuple[str, str], ...]
    statements: tuple[str, ...]


REQUIREMENTS = {
    "1": "forward and backward passes of every layer",
    "2": "the loss (binary cross entropy) and the optimizer (SGD with momentum)",
    "4": "the residual block of the depth / width / residual comparisons",
}

PLAIN = "mura_core/nn/plain.py"
LAYERS = "mura_core/nn/layers.py"

PIECES = (
    Piece("conv", "convolution", "1", 25,
          ((PLAIN, "conv_forward"), (PLAIN, "conv_backward")),
          ("conv_forward: x (N, C, H, W), w (D, C, k, k), b (D,) -> (y, cache), y (N, D, OH, OW) "
           "with OH = (H + 2 pad - k) // stride + 1; y = b + the sum over channels and kernel "
           "offsets of w times the zero-padded x; use im2col and one matrix product",
           "conv_backward: dy (N, D, OH, OW), cache -> (dx (N, C, H, W), dw (D, C, k, k), "
           "db (D,)); dw = dy2 @ col.T, dx = col2im(W.T @ dy2), db = dy summed over N, OH, OW")),
    Piece("pool", "max pooling", "1", 15,
          ((PLAIN, "maxpool_forward"), (PLAIN, "maxpool_backward")),
          ("maxpool_forward: x (N, C, H, W) -> (y, cache), y (N, C, OH, OW) with OH = "
           "(H - size) // stride + 1, the maximum of each window; remember which offset won, "
           "the first in row-major order on ties",
           "maxpool_backward: dy (N, C, OH, OW), cache -> dx (N, C, H, W), each dy entry at "
           "its window's winning position (the first maximum), overlapping windows adding up")),
    Piece("relu", "ReLU", "1", 5,
          ((PLAIN, "relu_forward"), (PLAIN, "relu_backward")),
          ("relu_forward: x (any shape) -> (y, cache), y = max(x, 0)",
           "relu_backward: dy, cache -> dx = dy where x > 0, else 0")),
    Piece("dropout", "dropout", "1", 10,
          ((PLAIN, "dropout_forward"), (PLAIN, "dropout_backward")),
          ("dropout_forward: x, p, u (uniform in [0, 1), shaped like x) -> (y, cache); inverted "
           "dropout: y = x / (1 - p) where u >= p, 0 elsewhere",
           "dropout_backward: dy, cache -> dx = dy through the same mask and scale")),
    Piece("linear", "fully connected layer", "1", 10,
          ((PLAIN, "linear_forward"), (PLAIN, "linear_backward")),
          ("linear_forward: x (N, d_in), w (d_in, d_out), b (d_out,) -> (y, cache), y = x w + b",
           "linear_backward: dy (N, d_out), cache -> (dx (N, d_in), dw (d_in, d_out), "
           "db (d_out,)); dx = dy w^T, dw = x^T dy, db = dy summed over N")),
    Piece("bce", "binary cross entropy", "2", 10,
          ((PLAIN, "bce_with_logits"),),
          ("bce_with_logits: logits z (B,), targets t (B,), weights w (B,) -> (loss, dz); loss "
           "= mean of w (softplus(z) - t z), finite for any z; dz = w (sigmoid(z) - t) / B",)),
    Piece("sgd", "SGD with momentum", "2", 15,
          ((PLAIN, "sgd_momentum_step"),),
          ("sgd_momentum_step: theta, v, g (same shape), lr, momentum, weight_decay -> None, in "
           "place: v = momentum v + g + weight_decay theta; theta = theta - lr v",)),
    Piece("residual", "residual block", "4", 10,
          ((LAYERS, "Residual.forward"), (LAYERS, "Residual.backward")),
          ("Residual.forward: x, training -> y = relu(block(x) + skip(x)), skip the identity "
           "or the shortcut layer; use self.block, self.shortcut and self.relu",
           "Residual.backward: dy -> dx; through self.relu, then the sum of the gradients "
           "of the block's path and the skip's path")),
)

#: The unscored last check: a small network of the student's layers must learn.
TRAINING = "training"


def piece(name: str) -> Piece:
    for p in PIECES:
        if p.name == name:
            return p
    raise ValueError(f"no piece named {name!r}; the pieces are {', '.join(p.name for p in PIECES)}")


def total_points() -> int:
    return sum(p.points for p in PIECES)
