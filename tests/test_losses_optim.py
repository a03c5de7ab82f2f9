"""Binary cross entropy (stable, correct gradients) and SGD with momentum / weight decay."""
import numpy as np
import pytest
from reference import numeric_grad, rel_error

import mura_core as mc
from mura_core.nn.backend import PACK_ALIGNMENT, pack, shared_buffer, to_numpy
from mura_core.nn.gradcheck import numerical_gradient


def _textbook_bce(z, t):
    p = 1 / (1 + np.exp(-z))
    return float(np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p))))


def test_bce_with_logits_matches_the_textbook_formula_and_its_gradient(xp):
    rng = np.random.default_rng(0)
    z = rng.standard_normal(7) * 3
    t = (rng.random(7) > 0.5).astype(np.float64)
    loss, dz = mc.bce_with_logits(xp.asarray(z), xp.asarray(t))
    assert abs(loss - _textbook_bce(z, t)) < 1e-12
    zh = z.copy()
    numeric = numeric_grad(lambda: _textbook_bce(zh, t), zh)
    assert rel_error(to_numpy(dz), numeric) < 1e-7


def test_bce_accepts_column_targets_and_logits(xp):
    z = xp.asarray(np.array([[0.5], [-1.0]], dtype=np.float32))
    loss_col, dz = mc.bce_with_logits(z, xp.asarray(np.array([[1.0], [0.0]], dtype=np.float32)))
    loss_flat, _ = mc.bce_with_logits(z, np.array([1.0, 0.0], dtype=np.float32))
    assert loss_col == pytest.approx(loss_flat) and dz.shape == (2, 1)


def test_bce_is_finite_for_saturated_float32_logits(xp):
    z = xp.asarray(np.array([100.0, -100.0, 100.0, -100.0], dtype=np.float32))
    t = xp.asarray(np.array([1.0, 0.0, 0.0, 1.0], dtype=np.float32))
    loss, dz = mc.bce_with_logits(z, t)
    assert np.isfinite(loss) and loss == pytest.approx(50.0, rel=1e-6)  # (0 + 0 + 100 + 100) / 4
    dz = to_numpy(dz)
    assert dz.dtype == np.float32 and np.all(np.isfinite(dz))
    np.testing.assert_allclose(dz, [0.0, 0.0, 0.25, -0.25], atol=1e-7)


def test_bce_from_probabilities_matches_and_is_clipped(xp):
    p = np.array([0.2, 0.9, 0.6])
    t = np.array([0.0, 1.0, 0.0])
    loss, dp = mc.bce_from_probabilities(xp.asarray(p), xp.asarray(t))
    assert loss == pytest.approx(float(np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p)))), rel=1e-12)
    ph = p.copy()
    numeric = numeric_grad(lambda: float(np.mean(-(t * np.log(ph) + (1 - t) * np.log(1 - ph)))), ph)
    assert rel_error(to_numpy(dp), numeric) < 1e-7
    extreme, _ = mc.bce_from_probabilities(xp.asarray(np.array([0.0, 1.0], dtype=np.float32)),
                                           xp.asarray(np.array([1.0, 0.0], dtype=np.float32)))
    assert np.isfinite(extreme)


def test_sgd_momentum_matches_a_hand_computed_two_step_update(xp):
    theta = xp.asarray(np.array([1.0, -2.0], dtype=np.float32))
    opt = mc.SGD({"w": theta}, lr=0.1, momentum=0.9, weight_decay=0.01)
    g1 = np.array([0.5, 0.25], dtype=np.float32)
    g2 = np.array([-1.0, 2.0], dtype=np.float32)
    opt.step({"w": xp.asarray(g1)})
    opt.step({"w": xp.asarray(g2)})
    # by hand: v1 = g1 + 0.01 th0; th1 = th0 - 0.1 v1; v2 = 0.9 v1 + g2 + 0.01 th1; th2 = th1 - 0.1 v2
    th0 = np.array([1.0, -2.0])
    v1 = g1 + 0.01 * th0
    th1 = th0 - 0.1 * v1
    v2 = 0.9 * v1 + g2 + 0.01 * th1
    th2 = th1 - 0.1 * v2
    out = to_numpy(theta)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, th2, rtol=1e-6)
    np.testing.assert_allclose(to_numpy(opt.velocity["w"]), v2, rtol=1e-6)


def test_shared_buffer_finds_packed_arrays_only(xp):
    arrays = [xp.ones((3, 4), dtype=xp.float32), xp.arange(5, dtype=xp.float32)]
    assert shared_buffer(arrays) is None  # allocated apart
    buffer, views = pack(arrays, xp)
    found, offsets = shared_buffer(views)
    assert found is buffer and offsets[0] == 0 and offsets[1] >= 12
    assert offsets[1] * 4 % PACK_ALIGNMENT == 0
    np.testing.assert_array_equal(to_numpy(views[1]), np.arange(5))
    assert float(buffer.sum()) == 12 + 10  # the gaps are zero
    assert shared_buffer(views[::-1]) is None  # out of order
    assert shared_buffer([views[0], xp.ones(5, dtype=xp.float32)]) is None


def test_sgd_on_packed_parameters_equals_the_update_of_each_array(xp):
    """With parameters, gradients (and so velocities) packed in one buffer each, a step is
    one pass over the buffers on a GPU; it must give exactly the per-array update."""
    rng = np.random.default_rng(2)
    shapes = [(4, 3, 3, 3), (4,), (36, 5), (5,)]
    start = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
    grads = [[rng.standard_normal(shape).astype(np.float32) for shape in shapes] for _ in range(3)]
    apart = {f"p{i}": xp.asarray(a) for i, a in enumerate(start)}
    _, views = pack([xp.asarray(a) for a in start], xp)
    packed = {f"p{i}": v for i, v in enumerate(views)}
    _, gviews = pack([xp.zeros(shape, dtype=xp.float32) for shape in shapes], xp)
    opt_apart = mc.SGD(apart, lr=0.05, momentum=0.9, weight_decay=1e-3)
    opt_packed = mc.SGD(packed, lr=0.05, momentum=0.9, weight_decay=1e-3)
    assert shared_buffer(list(opt_packed.velocity.values())) is not None
    for step in grads:
        for view, g in zip(gviews, step):
            view[...] = xp.asarray(g)
        opt_apart.step({f"p{i}": xp.asarray(g) for i, g in enumerate(step)})
        opt_packed.step({f"p{i}": v for i, v in enumerate(gviews)})
        opt_packed.lr = opt_apart.lr = 0.02  # a schedule changes the rate between steps
    for name in apart:
        np.testing.assert_array_equal(to_numpy(packed[name]), to_numpy(apart[name]))
        np.testing.assert_array_equal(to_numpy(opt_packed.velocity[name]),
                                      to_numpy(opt_apart.velocity[name]))
    state = opt_packed.state_dict()  # velocities round-trip into the packed buffer
    other = mc.SGD(packed, lr=1.0)
    other.load_state_dict(state)
    np.testing.assert_array_equal(to_numpy(other.velocity["p2"]), state["velocity"]["p2"])


def test_sgd_without_momentum_is_plain_gradient_descent():
    theta = np.array([1.0, 2.0], dtype=np.float32)
    mc.SGD({"w": theta}, lr=0.5).step({"w": np.array([1.0, -1.0], dtype=np.float32)})
    np.testing.assert_array_equal(theta, [0.5, 2.5])


def test_sgd_state_round_trip_and_validation():
    theta = np.zeros(3, dtype=np.float32)
    opt = mc.SGD({"w": theta}, lr=0.1, momentum=0.5)
    opt.step({"w": np.ones(3, dtype=np.float32)})
    state = opt.state_dict()
    other = mc.SGD({"w": np.zeros(3, dtype=np.float32)}, lr=1.0)
    other.load_state_dict(state)
    assert other.lr == 0.1 and other.momentum == 0.5
    np.testing.assert_array_equal(other.velocity["w"], opt.velocity["w"])
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="learning rate must be positive"):
            mc.SGD({"w": theta}, lr=bad)
    with pytest.raises(KeyError, match="no gradient"):
        opt.step({})


def test_weighted_bce_matches_the_weighted_formula_and_its_gradient(xp):
    rng = np.random.default_rng(5)
    z = rng.standard_normal(6) * 2
    t = np.array([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    w = rng.random(6)

    def weighted(zz):
        p = 1 / (1 + np.exp(-zz))
        return float(np.mean(-w * (t * np.log(p) + (1 - t) * np.log(1 - p))))

    loss, dz = mc.bce_with_logits(xp.asarray(z), xp.asarray(t), xp.asarray(w))
    assert loss == pytest.approx(weighted(z), rel=1e-12)
    zh = z.copy()
    assert rel_error(to_numpy(dz), numeric_grad(lambda: weighted(zh), zh)) < 1e-7


def test_unit_weights_give_the_plain_bce_exactly(xp):
    z = xp.asarray(np.array([[0.3], [-2.0], [4.0]], dtype=np.float32))
    t = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    plain = mc.bce_with_logits(z, t)
    ones = mc.bce_with_logits(z, t, np.ones(3, dtype=np.float32))
    assert plain[0] == ones[0]
    np.testing.assert_array_equal(to_numpy(plain[1]), to_numpy(ones[1]))
    with pytest.raises(ValueError, match="weights have 2 entries for a batch of 3"):
        mc.bce_with_logits(z, t, np.ones(2))


def test_weighted_model_gradients_match_finite_differences():
    model = mc.build_model("baseline", input_size=32, width=0.125, seed=2, dtype="float64")
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 1, 32, 32))
    t = np.array([1.0, 0.0, 0.0])
    w = np.array([0.3, 0.7, 0.7])
    _, grads = mc.loss_and_grads(model, x, t, weights=w)
    for name in ("conv1.W", "conv6.b", "fc2.W"):
        param = model.parameters()[name]
        idx = rng.choice(param.size, size=min(6, param.size), replace=False)
        numeric = numerical_gradient(
            lambda: mc.loss_and_grads(model, x, t, weights=w)[0], param, 1e-6, idx)
        assert rel_error(grads[name].reshape(-1)[idx], numeric) < 1e-6, name
