"""The plain pieces (``nn.plain``), which the layers, the loss and the optimizer run when
``backend.FAST_PATHS`` is off (the student edition), give the fast paths' numbers: every
architecture's loss and gradients in float64, a training step with dropout, momentum and
weight decay, and the plain convolution and pool against the slow references."""
from __future__ import annotations

import numpy as np
import pytest
from reference import (
    conv2d_backward_reference,
    conv2d_reference,
    maxpool_backward_reference,
    maxpool_reference,
    rel_error,
)

from mura_core.nn import backend, models, plain
from mura_core.nn.optim import SGD


@pytest.fixture
def plain_paths(monkeypatch):
    monkeypatch.setattr(backend, "FAST_PATHS", False)


def _step(arch: str, fast: bool, monkeypatch, steps: int = 2):
    """Loss, gradients and parameters after ``steps`` SGD steps, on the fast or plain paths."""
    monkeypatch.setattr(backend, "FAST_PATHS", fast)
    model = models.build_model(arch, input_size=29, seed=3, dtype="float64", dropout=0.5)
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((3, 1, 29, 29)), np.array([1.0, 0.0, 1.0])
    sgd = SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3)
    for _ in range(steps):
        loss, grads = models.loss_and_grads(model, x, t, training=True, weights=np.array([1.0, 2.0, 0.5]))
        grads = {k: v.copy() for k, v in grads.items()}
        sgd.step(model.gradients())
    return loss, grads, {k: v.copy() for k, v in model.parameters().items()}


@pytest.mark.parametrize("arch", list(models.ARCHITECTURES))
def test_every_architecture_trains_to_the_same_numbers_on_the_plain_paths(arch, monkeypatch):
    fast_loss, fast_grads, fast_params = _step(arch, True, monkeypatch)
    loss, grads, params = _step(arch, False, monkeypatch)
    assert loss == pytest.approx(fast_loss, rel=1e-12)
    assert grads.keys() == fast_grads.keys()
    for name in grads:
        assert rel_error(grads[name], fast_grads[name]) < 1e-10, name
        assert rel_error(params[name], fast_params[name]) < 1e-12, name


def test_the_plain_paths_run_in_float32(plain_paths):
    model = models.build_model("baseline", input_size=27, seed=0)
    x = np.random.default_rng(1).standard_normal((2, 1, 27, 27)).astype(np.float32)
    loss, grads = models.loss_and_grads(model, x, np.array([1.0, 0.0]), training=True)
    assert np.isfinite(loss)
    assert all(g.dtype == np.float32 for g in grads.values())
    assert model.logits(x).dtype == np.float32


@pytest.mark.parametrize("k,stride,h,w", [(11, 4, 23, 21), (5, 2, 9, 8), (3, 1, 6, 7), (1, 1, 4, 5)])
def test_plain_convolution_against_the_direct_one(k, stride, h, w):
    rng = np.random.default_rng(k)
    x, wt, b = rng.standard_normal((2, 3, h, w)), rng.standard_normal((4, 3, k, k)), rng.standard_normal(4)
    y, cache = plain.conv_forward(x, wt, b, stride, k // 2)
    assert rel_error(y, conv2d_reference(x, wt, b, stride)) < 1e-12
    dy = rng.standard_normal(y.shape)
    for got, expected in zip(plain.conv_backward(dy, cache), conv2d_backward_reference(x, wt, dy, stride)):
        assert rel_error(got, expected) < 1e-12


@pytest.mark.parametrize("size,stride", [(2, 2), (3, 2), (2, 1)])
def test_plain_pool_routes_ties_to_the_first_maximum(size, stride):
    x = np.random.default_rng(size + stride).integers(0, 3, (2, 2, 7, 8)).astype(np.float64)
    y, cache = plain.maxpool_forward(x, size, stride)
    assert np.array_equal(y, maxpool_reference(x, size, stride))
    dy = np.random.default_rng(0).standard_normal(y.shape)
    assert np.allclose(plain.maxpool_backward(dy, cache), maxpool_backward_reference(x, dy, size, stride),
                       rtol=0, atol=1e-12)
