"""Each layer's forward against a slow reference and its backward against finite differences."""
import numpy as np
import pytest
from reference import (
    conv2d_reference,
    maxpool_backward_reference,
    maxpool_reference,
    numeric_grad,
    rel_error,
)

from mura_core.nn.backend import cupy_available, memory_order, to_numpy
from mura_core.nn.conv import im2col, im2col_with_ones
from mura_core.nn.layers import (
    Conv2D,
    Dropout,
    Flatten,
    Linear,
    MaxPool2D,
    RandomStream,
    ReLU,
    Residual,
    Sequential,
    Sigmoid,
)

CONV_CASES = [  # (d_in, d_out, k, stride, h, w)
    (1, 2, 1, 1, 5, 5),
    (2, 3, 3, 1, 7, 6),
    (2, 3, 3, 2, 7, 8),
    (3, 2, 5, 2, 9, 9),
    (1, 4, 7, 2, 11, 10),
    (2, 2, 4, 2, 8, 8),  # even kernel: pad k // 2 = 2
    (2, 2, 2, 1, 6, 5),
    (2, 3, 3, 3, 10, 10),
]


def _layer_on(layer, xp):
    return layer.to(xp)


def _check_backward(layer, x, xp, training=False, reset=None):
    """Compare dL/dx and dL/dparams of L = sum(layer(x) * R) against central differences."""
    rng = np.random.default_rng(1)
    if reset:
        reset()
    y = layer.forward(xp.asarray(x), training)
    r = rng.standard_normal(y.shape)
    dx = to_numpy(layer.backward(xp.asarray(r)))
    analytic = {k: to_numpy(g).copy() for k, g in layer.grads.items()}

    def loss():
        if reset:
            reset()
        return float((to_numpy(layer.forward(xp.asarray(x), training)) * r).sum())

    xh = x.copy()

    def loss_x():
        if reset:
            reset()
        return float((to_numpy(layer.forward(xp.asarray(xh), training)) * r).sum())

    assert rel_error(dx, numeric_grad(loss_x, xh)) < 1e-6
    for name, param in layer.params.items():
        host = to_numpy(param).copy()

        def loss_p(host=host, name=name):
            layer.params[name][...] = xp.asarray(host)
            return loss()

        numeric = numeric_grad(loss_p, host)
        layer.params[name][...] = xp.asarray(host)
        assert rel_error(analytic[name], numeric) < 1e-6, name


@pytest.mark.parametrize("d_in,d_out,k,stride,h,w", CONV_CASES)
def test_conv_forward_matches_direct_convolution(xp, d_in, d_out, k, stride, h, w):
    rng = np.random.default_rng(0)
    conv = _layer_on(Conv2D(d_in, d_out, k, stride, rng=rng, dtype=np.float64), xp)
    conv.params["b"][...] = xp.asarray(rng.standard_normal(d_out))
    x = rng.standard_normal((2, d_in, h, w))
    y = to_numpy(conv.forward(xp.asarray(x)))
    ref = conv2d_reference(x, to_numpy(conv.params["W"]), to_numpy(conv.params["b"]), stride)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("d_in,d_out,k,stride,h,w", CONV_CASES)
def test_conv_backward_matches_finite_differences(xp, d_in, d_out, k, stride, h, w):
    rng = np.random.default_rng(0)
    conv = _layer_on(Conv2D(d_in, d_out, k, stride, rng=rng, dtype=np.float64), xp)
    _check_backward(conv, rng.standard_normal((2, d_in, h, w)), xp)


@pytest.mark.parametrize("k,stride,h,w", [(7, 2, 11, 10), (3, 3, 10, 10), (1, 1, 5, 4)])
def test_im2col_with_ones_is_im2col_and_a_row_of_ones(k, stride, h, w):
    """The column matrix against the definition: entry (c, i, j, n, y, x) is the zero-padded
    input at (n, c, stride*y + i - k//2, stride*x + j - k//2); then one row of ones."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
    col, matrix = im2col_with_ones(x, k, stride, k // 2)
    pad = k // 2
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad + k), (pad, pad + k)))
    oh, ow = col.shape[4], col.shape[5]
    for i in range(k):
        for j in range(k):
            window = padded[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
            np.testing.assert_array_equal(col[:, i, j], window.transpose(1, 0, 2, 3))
    np.testing.assert_array_equal(matrix[:-1], col.reshape(3 * k * k, -1))
    assert matrix.dtype == np.float32 and (matrix[-1] == 1).all()
    np.testing.assert_array_equal(col, im2col(x, k, stride, pad))


def test_conv_output_shapes_follow_the_assignment():
    conv1 = Conv2D(1, 64, 7, 2)
    assert conv1.output_shape((1, 227, 227)) == (64, 114, 114)
    assert Conv2D(64, 128, 5, 2).output_shape((64, 57, 57)) == (128, 29, 29)
    assert Conv2D(256, 384, 3, 1).output_shape((256, 14, 14)) == (384, 14, 14)


def test_first_conv_can_skip_its_input_gradient(xp):
    conv = _layer_on(Conv2D(1, 2, 3, 1, input_grad=False), xp)
    conv.forward(xp.ones((1, 1, 5, 5), dtype=xp.float32))
    assert conv.backward(xp.ones((1, 2, 5, 5), dtype=xp.float32)) is None
    assert float(abs(conv.grads["W"]).sum()) > 0


@pytest.mark.parametrize("size,stride,h,w",
                         [(2, 2, 6, 6), (2, 2, 7, 9), (3, 2, 9, 8), (2, 1, 5, 4), (3, 3, 10, 11)])
def test_maxpool_forward_and_backward(xp, size, stride, h, w):
    rng = np.random.default_rng(0)
    pool = MaxPool2D(size, stride)
    x = rng.standard_normal((2, 3, h, w))
    y = to_numpy(pool.forward(xp.asarray(x)))
    np.testing.assert_array_equal(y, maxpool_reference(x, size, stride))
    _check_backward(pool, x, xp)


def test_maxpool_ties_send_the_gradient_once(xp):
    pool = MaxPool2D(2, 2)
    x = xp.ones((1, 1, 4, 4), dtype=xp.float32)
    pool.forward(x)
    dx = to_numpy(pool.backward(xp.ones((1, 1, 2, 2), dtype=xp.float32)))
    assert dx.sum() == 4.0 and set(np.unique(dx)) == {0.0, 1.0}


def _stored(x, xp, order):
    """x as an (N, C, H, W) array of ``xp`` whose memory runs over the axes in ``order``."""
    return xp.ascontiguousarray(xp.asarray(x).transpose(order)).transpose(
        tuple(int(i) for i in np.argsort(order)))


@pytest.mark.parametrize("size,stride,h,w", [(2, 2, 6, 6), (2, 2, 7, 9), (3, 2, 9, 8), (2, 1, 5, 4)])
@pytest.mark.parametrize("order", [(0, 1, 2, 3), (1, 0, 2, 3), (1, 2, 3, 0)])
@pytest.mark.parametrize("training", [True, False])
def test_maxpool_routes_ties_to_the_first_offset_like_the_reference(xp, size, stride, h, w, order, training):
    """Small integers make many ties; every window's gradient goes to its first maximum in
    row-major order, whatever the memory order of the input and whether the winners were
    found in forward (training) or later (evaluation)."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 3, (2, 3, h, w)).astype(np.float32)
    pool = MaxPool2D(size, stride)
    y = pool.forward(_stored(x, xp, order), training)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(to_numpy(y), maxpool_reference(x, size, stride))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = pool.backward(_stored(dy, xp, order))
    assert dx.dtype == np.float32 and dx.shape == x.shape
    ref = maxpool_backward_reference(x, dy, size, stride)
    if stride >= size:  # each input gets at most one gradient: exactly the reference
        np.testing.assert_array_equal(to_numpy(dx), ref)
    else:  # overlapping windows add up, in float32 here and float64 in the reference
        np.testing.assert_allclose(to_numpy(dx), ref, rtol=1e-6, atol=1e-7)


def test_maxpool_2x2_tie_order_within_a_window(xp):
    """[[1, 2], [2, 0]]: the first 2 in row-major order is the top right one."""
    pool = MaxPool2D(2)
    x = xp.asarray(np.array([[[[1.0, 2.0], [2.0, 0.0]]]], dtype=np.float32))
    pool.forward(x, training=True)
    dx = to_numpy(pool.backward(xp.ones((1, 1, 1, 1), dtype=xp.float32)))
    np.testing.assert_array_equal(dx[0, 0], [[0.0, 1.0], [0.0, 0.0]])


def test_maxpool_floors_odd_sizes():
    assert MaxPool2D(2, 2).output_shape((64, 57, 57)) == (64, 28, 28)
    with pytest.raises(ValueError, match="at least 2x2"):
        MaxPool2D(2, 2).output_shape((64, 1, 1))


def test_relu_and_sigmoid(xp):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5))
    x[np.abs(x) < 1e-3] = 0.5  # keep finite differences away from the kink
    np.testing.assert_array_equal(to_numpy(ReLU().forward(xp.asarray(x))), np.maximum(x, 0))
    _check_backward(ReLU(), x, xp)
    np.testing.assert_allclose(to_numpy(Sigmoid().forward(xp.asarray(x))), 1 / (1 + np.exp(-x)), rtol=1e-12)
    _check_backward(Sigmoid(), x, xp)


def test_relu_keeps_nan_and_follows_any_memory_order(xp):
    """A NaN passes through (as np.maximum lets it), so a diverged run is still caught; a
    transposed input (a convolution's output view) gives the same values."""
    x = np.array([[-1.0, 0.0, np.nan], [2.0, -np.inf, np.inf]], dtype=np.float32)
    layer = ReLU()
    y = to_numpy(layer.forward(xp.asarray(x)))
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    np.testing.assert_array_equal(to_numpy(layer.backward(xp.ones((2, 3), dtype=xp.float32))),
                                  [[0, 0, 0], [1, 0, 1]])
    z = np.random.default_rng(3).standard_normal((2, 3, 4, 5)).astype(np.float32)
    view = xp.asarray(z.transpose(1, 0, 2, 3).copy()).transpose(1, 0, 2, 3)
    np.testing.assert_array_equal(to_numpy(ReLU().forward(view)), np.maximum(z, 0))


def test_sigmoid_saturates_without_overflow(xp):
    x = np.array([-1000.0, -100.0, 0.0, 100.0, 1000.0], dtype=np.float32)
    y = to_numpy(Sigmoid().forward(xp.asarray(x)))
    assert np.all(np.isfinite(y)) and y[0] == 0.0 and y[2] == 0.5 and y[-1] == 1.0


def test_linear_and_flatten(xp):
    rng = np.random.default_rng(0)
    fc = _layer_on(Linear(6, 4, rng=rng, dtype=np.float64), xp)
    fc.params["b"][...] = xp.asarray(rng.standard_normal(4))
    x = rng.standard_normal((3, 6))
    np.testing.assert_allclose(to_numpy(fc.forward(xp.asarray(x))),
                               x @ to_numpy(fc.params["W"]) + to_numpy(fc.params["b"]), rtol=1e-12)
    _check_backward(fc, x, xp)
    flat = Flatten()
    x4 = rng.standard_normal((2, 3, 2, 2))
    np.testing.assert_array_equal(to_numpy(flat.forward(xp.asarray(x4))), x4.reshape(2, 12))
    _check_backward(flat, x4, xp)


@pytest.mark.parametrize("order", [(1, 0, 2, 3), (1, 2, 3, 0)])
def test_flatten_of_a_non_c_ordered_input_and_its_gradient(xp, order):
    x = np.random.default_rng(0).standard_normal((2, 3, 2, 4))
    flat = Flatten()
    np.testing.assert_array_equal(to_numpy(flat.forward(_stored(x, xp, order))), x.reshape(2, 24))
    dy = np.arange(48.0).reshape(2, 24)
    dx = flat.backward(xp.asarray(dy))
    np.testing.assert_array_equal(to_numpy(dx), dy.reshape(2, 3, 2, 4))
    assert memory_order(dx) == order


def test_dropout_eval_is_identity_and_training_drops_about_p(xp):
    x = xp.ones((200, 500), dtype=xp.float32)
    drop = Dropout(0.3, RandomStream(5))
    assert drop.forward(x, training=False) is x
    y = to_numpy(drop.forward(x, training=True))
    assert y.dtype == np.float32
    dropped = (y == 0).mean()
    assert abs(dropped - 0.3) < 0.01
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.7], rtol=1e-6)
    dy = xp.asarray(np.random.default_rng(0).standard_normal((200, 500)).astype(np.float32))
    dx = to_numpy(drop.backward(dy))
    np.testing.assert_allclose(dx, to_numpy(dy) * y, rtol=1e-6)  # x = 1: y is the mask


def test_dropout_masks_are_reproducible_from_the_stream_state(xp):
    stream = RandomStream(3)
    drop = Dropout(0.5, stream)
    x = xp.ones((4, 50), dtype=xp.float32)
    first = to_numpy(drop.forward(x, training=True))
    second = to_numpy(drop.forward(x, training=True))
    assert not np.array_equal(first, second)
    stream.set_state({"seed": 3, "counter": 0})
    np.testing.assert_array_equal(to_numpy(drop.forward(x, training=True)), first)


def test_dropout_backward_in_training_matches_finite_differences(xp):
    stream = RandomStream(1)
    drop = Dropout(0.4, stream)
    x = np.random.default_rng(0).standard_normal((3, 7))
    _check_backward(drop, x, xp, training=True, reset=lambda: stream.set_state({"seed": 1, "counter": 0}))


@pytest.mark.parametrize("d_in,d_out,stride", [(3, 3, 1), (2, 4, 1), (3, 2, 2)])
def test_residual_forward_and_backward(xp, d_in, d_out, stride):
    rng = np.random.default_rng(0)
    conv = Conv2D(d_in, d_out, 3, stride, rng=rng, dtype=np.float64)
    proj = (None if (d_in == d_out and stride == 1)
            else Conv2D(d_in, d_out, 1, stride, rng=rng, dtype=np.float64))
    res = _layer_on(Residual(conv, proj), xp)
    x = rng.standard_normal((2, d_in, 6, 7))
    def reference(layer):
        return conv2d_reference(x, to_numpy(layer.params["W"]), to_numpy(layer.params["b"]), stride)

    skip = x if proj is None else reference(proj)
    ref = np.maximum(reference(conv) + skip, 0)
    np.testing.assert_allclose(to_numpy(res.forward(xp.asarray(x))), ref, rtol=1e-10, atol=1e-12)
    _check_backward(res, x, xp)
    names = [n for n, _ in res.named_parameters()]
    assert names == (["conv.W", "conv.b"] + ([] if proj is None else ["proj.W", "proj.b"]))


def test_residual_rejects_a_shape_changing_block_without_projection():
    with pytest.raises(ValueError, match="projection"):
        Residual(Conv2D(2, 4, 3)).output_shape((2, 5, 5))


def test_sequential_backward_chains_layers(xp):
    rng = np.random.default_rng(0)
    net = _layer_on(Sequential([("conv", Conv2D(1, 2, 3, 1, rng=rng, dtype=np.float64)),
                                ("relu", ReLU()), ("pool", MaxPool2D(2)), ("flat", Flatten()),
                                ("fc", Linear(8, 1, rng=rng, dtype=np.float64))]), xp)
    _check_backward(net, rng.standard_normal((2, 1, 4, 4)), xp)
    assert [n for n, _ in net.named_parameters()] == ["conv.W", "conv.b", "fc.W", "fc.b"]


def test_sequential_keeps_named_outputs_and_stops_backward_at_a_named_layer(xp):
    rng = np.random.default_rng(0)
    layers = [("conv", Conv2D(1, 2, 3, 1, rng=rng, dtype=np.float64)), ("relu", ReLU()),
              ("flat", Flatten()), ("fc", Linear(32, 1, rng=rng, dtype=np.float64))]
    net = _layer_on(Sequential(layers), xp)
    x = xp.asarray(rng.standard_normal((2, 1, 4, 4)))
    y = net.forward(x, keep=("conv",))
    conv_out = layers[0][1].forward(x)  # the same layer again: its own output
    np.testing.assert_allclose(to_numpy(net.outputs["conv"]), to_numpy(conv_out))
    net.forward(x, keep=("conv",))
    dy = xp.asarray(rng.standard_normal(y.shape))
    at_conv = net.backward(dy, stop_at="conv")
    net.forward(x)
    manual = dy
    for _, layer in reversed(layers[1:]):  # fc, flat, relu: the layers above conv
        manual = layer.backward(manual)
    np.testing.assert_allclose(to_numpy(at_conv), to_numpy(manual))
    assert net.forward(x).shape == y.shape and net.outputs == {}
    with pytest.raises(ValueError, match="no layer named 'pool'"):
        net.forward(x, keep=("pool",))
    with pytest.raises(ValueError, match="no layer named 'pool'"):
        net.backward(dy, stop_at="pool")


@pytest.mark.parametrize("make", [
    lambda: Conv2D(2, 3, 3, 2), lambda: MaxPool2D(2), lambda: ReLU(), lambda: Sigmoid(),
    lambda: Dropout(0.5), lambda: Flatten(), lambda: Residual(Conv2D(2, 2, 3)),
    lambda: Residual(Conv2D(2, 3, 3), Conv2D(2, 3, 1)),
])
def test_every_layer_keeps_float32(xp, make):
    layer = make().to(xp)
    x = xp.asarray(np.random.default_rng(0).standard_normal((2, 2, 6, 6)).astype(np.float32))
    y = layer.forward(x, training=True)
    assert y.dtype == np.float32
    dx = layer.backward(xp.ones(y.shape, dtype=xp.float32))
    assert dx.dtype == np.float32
    for name, g in layer.named_gradients():
        assert g.dtype == np.float32, name
    for name, p in layer.named_parameters():
        assert p.dtype == np.float32, name


def test_linear_keeps_float32(xp):
    fc = Linear(5, 3).to(xp)
    y = fc.forward(xp.ones((2, 5), dtype=xp.float32))
    assert y.dtype == np.float32 and fc.backward(xp.ones((2, 3), dtype=xp.float32)).dtype == np.float32
    assert fc.grads["W"].dtype == np.float32


def test_he_initialization_scale():
    conv = Conv2D(64, 128, 5, 2, rng=np.random.default_rng(0))
    assert conv.params["W"].dtype == np.float32
    assert abs(conv.params["W"].std() - np.sqrt(2 / (64 * 25))) < 0.02 * np.sqrt(2 / (64 * 25))
    assert not conv.params["b"].any()


@pytest.mark.skipif(not cupy_available(), reason="CuPy with a GPU is not available")
def test_gpu_kernels_give_the_same_results_with_64_bit_indices(monkeypatch):
    """The fused CUDA kernels run their index arithmetic in 32 bits when every array fits;
    forcing the 64-bit variants must change nothing (im2col, col2im, pooling both ways)."""
    import cupy

    from mura_core.nn import cuda_kernels

    rng = np.random.default_rng(5)
    x = cupy.asarray(rng.standard_normal((3, 2, 11, 10)).astype(np.float32))

    def run():
        col = cuda_kernels.im2col(x, 5, 2, 2, 6, 5)
        back = cuda_kernels.col2im(col, x.shape, 5, 2, 2)
        pooled, winner = cuda_kernels.maxpool_forward(x, 2, 2, 5, 5)
        routed = cuda_kernels.maxpool_backward(pooled, winner, x.shape, 2, 2)
        biased = cuda_kernels.bias_to_nchw(col.reshape(5 * 5 * 2, -1)[:4],
                                           cupy.arange(4, dtype=cupy.float32), 3, 6, 5)
        return [to_numpy(a) for a in (col, back, pooled, winner, routed, biased)]

    narrow = run()
    monkeypatch.setattr(cuda_kernels, "_INT32_LIMIT", 0)
    wide = run()
    for a, b in zip(narrow, wide):
        np.testing.assert_array_equal(a, b)
