"""Winograd F(2x2, 3x3) (``winograd.py``) against the direct float64 convolution and finite
differences, on every backend, for odd and even sizes and any memory order of the input; the
5x5 forms (stride 2 and 1) through space-to-depth likewise; the layer's Winograd and
pointwise (1x1) paths against its im2col path."""
import numpy as np
import pytest
from reference import conv2d_reference, numeric_grad, rel_error

from mura_core.nn import winograd
from mura_core.nn.backend import to_numpy
from mura_core.nn.layers import Conv2D

CASES = [  # (n, c, d, h, w)
    (2, 3, 4, 7, 6),
    (1, 2, 3, 5, 5),
    (2, 2, 2, 4, 4),
    (3, 1, 2, 1, 1),
    (2, 3, 2, 1, 4),
    (1, 4, 3, 2, 9),
    (2, 5, 6, 8, 3),
]
ORDERS = [(0, 1, 2, 3), (1, 0, 2, 3), (1, 2, 3, 0)]  # NCHW, channel-major, batch innermost


def _stored(x, xp, order):
    """x as an (N, C, H, W) array of ``xp`` whose memory runs over the axes in ``order``."""
    return xp.ascontiguousarray(xp.asarray(x).transpose(order)).transpose(
        tuple(int(i) for i in np.argsort(order)))


def _run(xp, x, g, b, order=(0, 1, 2, 3)):
    u = winograd.transform_weights(xp.asarray(g))
    y, v = winograd.forward(_stored(x, xp, order), u, xp.asarray(b))
    return y, u, v


@pytest.mark.parametrize("n,c,d,h,w", CASES)
@pytest.mark.parametrize("order", ORDERS)
def test_winograd_forward_matches_direct_convolution(xp, n, c, d, h, w, order):
    rng = np.random.default_rng(0)
    x, g, b = rng.standard_normal((n, c, h, w)), rng.standard_normal((d, c, 3, 3)), rng.standard_normal(d)
    y, _, _ = _run(xp, x, g, b, order)
    assert y.shape == (n, d, h, w)
    np.testing.assert_allclose(to_numpy(y), conv2d_reference(x, g, b, 1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n,c,d,h,w", CASES)
def test_winograd_backward_matches_finite_differences(xp, n, c, d, h, w):
    rng = np.random.default_rng(1)
    x, g, b = rng.standard_normal((n, c, h, w)), rng.standard_normal((d, c, 3, 3)), rng.standard_normal(d)
    r = rng.standard_normal((n, d, h, w))
    _, u, v = _run(xp, x, g, b)
    dw, db, dx = winograd.backward(_stored(r, xp, (1, 2, 3, 0)), u, v, x.shape)

    def loss():
        return float((conv2d_reference(x, g, b, 1) * r).sum())

    assert rel_error(to_numpy(dx), numeric_grad(loss, x)) < 1e-7
    assert rel_error(to_numpy(dw), numeric_grad(loss, g)) < 1e-7
    assert rel_error(to_numpy(db), numeric_grad(loss, b)) < 1e-7


def test_winograd_backward_can_skip_the_input_gradient(xp):
    rng = np.random.default_rng(2)
    x, g, b = rng.standard_normal((2, 2, 5, 4)), rng.standard_normal((3, 2, 3, 3)), np.zeros(3)
    _, u, v = _run(xp, x, g, b)
    dw = xp.zeros((3, 2, 3, 3))
    out, _, dx = winograd.backward(xp.ones((2, 3, 5, 4)), u, v, x.shape, dw=dw, input_grad=False)
    assert dx is None and out is dw and float(abs(dw).sum()) > 0


@pytest.mark.parametrize("n,c,d,h,w", [(4, 16, 8, 14, 14), (3, 8, 5, 7, 9)])
def test_winograd_float32_stays_float32_and_close_to_float64(xp, n, c, d, h, w):
    """float32 results within float32 rounding of the exact ones (relative to their scale)."""
    rng = np.random.default_rng(3)
    x, g = rng.standard_normal((n, c, h, w)), rng.standard_normal((d, c, 3, 3)) / np.sqrt(9 * c)
    b, r = rng.standard_normal(d), rng.standard_normal((n, d, h, w))
    f32 = [xp.asarray(a, dtype=xp.float32) for a in (x, g, b, r)]
    u = winograd.transform_weights(f32[1])
    y, v = winograd.forward(f32[0], u, f32[2])
    dw, db, dx = winograd.backward(f32[3], u, v, x.shape)
    for a in (u, v, y, dw, db, dx):
        assert a.dtype == np.float32
    _, u64, v64 = _run(xp, x, g, b)
    dw64, db64, dx64 = winograd.backward(xp.asarray(r), u64, v64, x.shape)
    assert rel_error(to_numpy(y), conv2d_reference(x, g, b, 1)) < 1e-6
    for got, exact in ((dw, dw64), (db, db64), (dx, dx64)):
        assert rel_error(to_numpy(got), to_numpy(exact)) < 1e-6


@pytest.mark.parametrize("stride", [2, 1])
@pytest.mark.parametrize("n,c,d,h,w", [(2, 3, 2, 9, 9), (1, 2, 3, 8, 7), (2, 1, 2, 5, 6), (1, 2, 2, 1, 2)])
def test_5x5_through_space_to_depth_matches_the_reference(xp, n, c, d, h, w, stride):
    """A 5x5 convolution as the 3x3 stride-1 Winograd convolution of the space-to-depth
    input (at stride 1 to the four output phases, then depth-to-space): forward against the
    direct convolution, gradients against finite differences, odd and even sizes."""
    rng = np.random.default_rng(5)
    x, g, b = rng.standard_normal((n, c, h, w)), rng.standard_normal((d, c, 5, 5)), rng.standard_normal(d)
    phases = len(winograd.OUTPUT_PHASES[stride])
    z = winograd.space_to_depth(xp.asarray(x))
    assert z.shape == (n, 4 * c, -(-h // 2), -(-w // 2))
    kernel = winograd.five_by_five_kernel(xp.asarray(g), stride)
    assert kernel.shape == (phases * d, 4 * c, 3, 3)
    u = winograd.transform_weights(kernel)
    ref = conv2d_reference(x, g, b, stride)

    def to_output(planes):
        return planes if stride == 2 else winograd.depth_to_space(planes, ref.shape)

    y, v = winograd.forward(z, u, xp.tile(xp.asarray(b), phases))
    np.testing.assert_allclose(to_numpy(to_output(y)), ref, rtol=1e-12, atol=1e-12)
    # the same, reading the space-to-depth channels from x itself (any memory order)
    for order in ORDERS:
        y2, v2 = winograd.forward(_stored(x, xp, order), u, xp.tile(xp.asarray(b), phases),
                                  space_to_depth=True)
        np.testing.assert_array_equal(to_numpy(v2), to_numpy(v))
        np.testing.assert_array_equal(to_numpy(y2), to_numpy(y))
    r = rng.standard_normal(ref.shape)
    dplanes = xp.asarray(r) if stride == 2 else winograd.space_to_depth(xp.asarray(r))
    dk, db, dz = winograd.backward(dplanes, u, v, z.shape)
    dw = winograd.five_by_five_kernel_grad(dk, xp.empty((d, c, 5, 5)), stride)
    dx = winograd.depth_to_space(dz, x.shape)

    def loss():
        return float((conv2d_reference(x, g, b, stride) * r).sum())

    assert rel_error(to_numpy(dx), numeric_grad(loss, x)) < 1e-7
    assert rel_error(to_numpy(dw), numeric_grad(loss, g)) < 1e-7
    assert rel_error(to_numpy(db.reshape(phases, d).sum(axis=0)), numeric_grad(loss, b)) < 1e-7


def test_5x5_kernel_holds_every_tap_once_per_output_phase(xp):
    """Each output phase's 3x3 kernel over z's channels holds all 25 taps of w exactly once
    (the rest zero), so its adjoint, applied to all ones, counts four per tap at stride 1."""
    g = xp.asarray(np.arange(1.0, 2 * 3 * 25 + 1).reshape(2, 3, 5, 5))
    for stride, phases in winograd.OUTPUT_PHASES.items():
        k = to_numpy(winograd.five_by_five_kernel(g, stride)).reshape(len(phases), 2, 4 * 3 * 9)
        for block in k:
            for out in range(2):
                taps = block[out][block[out] != 0]
                assert sorted(taps) == sorted(to_numpy(g[out]).ravel())
        counts = winograd.five_by_five_kernel_grad(xp.ones((len(phases) * 2, 12, 3, 3)),
                                                   xp.empty((2, 3, 5, 5)), stride)
        np.testing.assert_array_equal(to_numpy(counts), len(phases))


@pytest.mark.parametrize("k,stride,h,w", [(3, 1, 9, 8), (3, 1, 14, 14), (5, 2, 9, 8), (5, 2, 57, 57),
                                          (5, 1, 9, 8), (5, 1, 12, 12), (1, 1, 9, 8), (1, 1, 6, 6)])
@pytest.mark.parametrize("order", ORDERS + [(0, 2, 3, 1)])
def test_conv2d_fast_paths_give_the_same_numbers_as_im2col(xp, k, stride, h, w, order):
    """The layer's Winograd and pointwise (1x1) paths against its own im2col path (the same
    layer made to take the im2col branch), float32, forward and all gradients, any memory
    order of the input (channels-last too)."""
    rng = np.random.default_rng(4)
    x = _stored(rng.standard_normal((3, 6, h, w)).astype(np.float32), xp, order)
    fast = Conv2D(6, 5, k, stride, rng=np.random.default_rng(0)).to(xp)
    slow = Conv2D(6, 5, k, stride, rng=np.random.default_rng(0)).to(xp)
    slow._algorithm = lambda xp: "im2col"
    fast.params["b"][...] = slow.params["b"][...] = xp.asarray(rng.standard_normal(5).astype(np.float32))
    oh, ow = fast.output_shape((6, h, w))[1:]
    dy = xp.asarray(rng.standard_normal((3, 5, oh, ow)).astype(np.float32))
    outs = []
    for conv in (fast, slow):
        y = conv.forward(x, training=True)
        dx = conv.backward(dy)
        outs.append([to_numpy(a) for a in (y, dx, conv.grads["W"], conv.grads["b"])])
    for got, ref in zip(*outs):
        assert got.dtype == np.float32
        assert rel_error(got, ref) < 1e-6


@pytest.mark.parametrize("k,stride", [(3, 1), (5, 2), (5, 1), (1, 1)])
def test_conv2d_fast_path_first_layer_skips_the_input_gradient(xp, k, stride):
    conv = Conv2D(2, 3, k, stride, input_grad=False).to(xp)
    y = conv.forward(xp.ones((2, 2, 7, 6), dtype=xp.float32))
    assert conv.backward(xp.ones(y.shape, dtype=xp.float32)) is None
    assert float(abs(conv.grads["W"]).sum()) > 0 and conv.grads["W"].dtype == np.float32
