"""The assembled networks: shapes, names, gradients of the whole model, training, prediction."""
import numpy as np
import pytest

import mura_core as mc
from mura_core.nn.backend import shared_buffer, to_numpy
from mura_core.nn.gradcheck import check_model_gradients

BASELINE_SHAPES = {  # the assignment's network at 227x227 (README, docs/mura.md)
    "conv1": (64, 114, 114), "pool1": (64, 57, 57), "conv2": (128, 29, 29),
    "pool2": (128, 14, 14), "conv3": (256, 14, 14), "conv4": (384, 14, 14),
    "conv5": (256, 14, 14), "conv6": (256, 14, 14), "pool3": (256, 7, 7),
    "flatten": (12544,), "fc1": (2048,), "fc2": (1,), "sigmoid": (1,),
}


def _conv_params(d_in, d_out, k):
    return d_out * d_in * k * k + d_out


def test_baseline_has_the_assignment_shapes_and_parameter_count():
    model = mc.build_model("baseline")
    rows = {r["name"]: r for r in model.summary_rows()}
    for name, shape in BASELINE_SHAPES.items():
        assert rows[name]["output"] == shape, name
    expected = (_conv_params(1, 64, 7) + _conv_params(64, 128, 5) + _conv_params(128, 256, 3)
                + _conv_params(256, 384, 3) + _conv_params(384, 256, 3) + _conv_params(256, 256, 3)
                + 12544 * 2048 + 2048 + 2048 + 1)
    assert model.num_parameters() == expected
    text = model.summary()
    assert "12544" in text and f"{expected:,}" in text and "64x114x114" in text


def test_parameter_names_in_layer_order_and_gradients_share_them():
    model = mc.build_model("baseline", input_size=67)
    names = list(model.parameters())
    assert names == [f"conv{i}.{p}" for i in range(1, 7) for p in "Wb"] + ["fc1.W", "fc1.b", "fc2.W", "fc2.b"]
    assert model.parameters()["conv1.W"].shape == (64, 1, 7, 7)
    assert model.parameters()["fc1.W"].shape == (256 * 2 * 2, 2048)
    x = np.random.default_rng(0).standard_normal((2, 1, 67, 67)).astype(np.float32)
    loss, grads = mc.loss_and_grads(model, x, np.array([1, 0], dtype=np.float32))
    assert isinstance(loss, float) and list(grads) == names
    for name in names:
        assert grads[name].shape == model.parameters()[name].shape
    # parameters and gradients each live in one buffer, at the same offsets (Layer.pack)
    params_buffer, offsets = shared_buffer(list(model.parameters().values()))
    grads_buffer, grad_offsets = shared_buffer(list(grads.values()))
    assert grad_offsets == offsets and grads_buffer.size == params_buffer.size


def test_deeper_adds_two_convolutions_and_one_fully_connected_layer():
    base = mc.build_model("baseline", input_size=67)
    deep = mc.build_model("deeper", input_size=67)
    def count(m, kind):
        return sum(1 for n in m.parameters() if n.startswith(kind) and n.endswith(".W"))

    assert count(deep, "conv") == count(base, "conv") + 2
    assert count(deep, "fc") == count(base, "fc") + 1
    ks = [r["layer"] for r in deep.summary_rows() if r["layer"].startswith("Conv2D")]
    assert ks[2].startswith("Conv2D 5x5") and ks[-1].startswith("Conv2D 3x3")


def test_wider_doubles_feature_maps_and_width_one_is_the_baseline():
    base = mc.build_model("baseline", input_size=67, seed=3)
    wide = mc.build_model("wider", input_size=67)
    for i, d in enumerate([64, 128, 256, 384, 256, 256], start=1):
        assert wide.parameters()[f"conv{i}.W"].shape[0] == 2 * d
    same = mc.build_model("wider", input_size=67, seed=3, width=1.0)
    for name, value in base.parameters().items():
        np.testing.assert_array_equal(same.parameters()[name], value)


def test_residual_uses_identity_where_channels_match_and_projections_elsewhere():
    model = mc.build_model("residual", input_size=67)
    names = set(model.parameters())
    assert {"res3.proj.W", "res4.proj.W", "res5.proj.W"} <= names
    assert "res6.conv.W" in names and "res6.proj.W" not in names
    assert model.parameters()["res3.proj.W"].shape == (256, 128, 1, 1)
    summary = model.summary()
    assert "identity" in summary and "projection" in summary


@pytest.mark.parametrize("arch,size", [("baseline", 35), ("deeper", 35), ("wider", 35), ("residual", 35)])
def test_whole_model_gradients_match_finite_differences(arch, size):
    model = mc.build_model(arch, input_size=size, seed=1, dtype="float64",
                           width=0.0625 if arch != "wider" else 0.125)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 1, size, size))
    t = np.array([1.0, 0.0, 1.0])
    rows = check_model_gradients(model, x, t, entries_per_param=6)
    assert [r["parameter"] for r in rows] == list(model.parameters())
    for row in rows:
        assert row["relative_error"] < 1e-6, row


def test_gradient_check_includes_the_largest_gradients():
    """Half the checked entries are the largest |gradient| ones (a check of zeros proves
    nothing), the rest random, none twice; the row's max |analytic| is the tensor's."""
    from mura_core.nn.gradcheck import _entries_to_check

    g = np.zeros(100)
    g[[3, 50, 97]] = [0.5, -2.0, 1.0]
    idx = _entries_to_check(g, 6, np.random.default_rng(0))
    assert len(idx) == len(set(idx)) == 6 and {50, 97, 3} <= set(idx.tolist())
    assert len(_entries_to_check(g, 1, np.random.default_rng(0))) == 1
    assert sorted(_entries_to_check(g[:4], 9, np.random.default_rng(0)).tolist()) == [0, 1, 2, 3]
    model = mc.build_model("baseline", input_size=35, seed=1, dtype="float64", width=0.0625)
    x = np.random.default_rng(2).standard_normal((2, 1, 35, 35))
    t = np.array([1.0, 0.0])
    _, grads = mc.loss_and_grads(model, x, t)
    largest = {k: float(np.abs(to_numpy(v)).max()) for k, v in grads.items()}
    for row in check_model_gradients(model, x, t, entries_per_param=4):
        assert row["max_abs_grad"] == largest[row["parameter"]]


def test_too_small_input_names_the_smallest_valid_size():
    with pytest.raises(ValueError, match=r"smallest valid input size is \d+"):
        mc.build_model("baseline", input_size=8)


@pytest.mark.parametrize("arch", sorted(mc.ARCHITECTURES))
def test_the_smallest_input_size_is_the_first_size_every_layer_keeps_an_output(arch):
    """Against the layers' own shape arithmetic, size by size."""
    from mura_core.nn.models import smallest_input_size

    def every_layer_keeps_an_output(size):
        shape = (1, size, size)
        for _, layer in mc.build_model(arch, input_size=256).body.layers:
            if isinstance(layer, mc.Flatten):
                return True
            try:
                shape = layer.output_shape(shape)
            except ValueError:  # a pool with an input below its window
                return False
            if min(shape[1:]) < 1:
                return False
        return True

    first = next(size for size in range(1, 300) if every_layer_keeps_an_output(size))
    assert smallest_input_size(arch) == first
    mc.build_model(arch, input_size=first)
    with pytest.raises(ValueError, match=f"smallest valid input size is {first}"):
        mc.build_model(arch, input_size=first - 1)


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown architecture 'vgg'.*baseline"):
        mc.build_model("vgg")


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = (mc.build_model("baseline", input_size=35, seed=s) for s in (0, 0, 1))
    assert all(np.array_equal(a.parameters()[k], b.parameters()[k]) for k in a.parameters())
    assert not np.array_equal(a.parameters()["conv1.W"], c.parameters()["conv1.W"])


def test_predict_proba_returns_numpy_probabilities_in_eval_mode(model_backend):
    model = mc.build_model("baseline", input_size=35, backend=model_backend)
    x = np.random.default_rng(0).standard_normal((5, 1, 35, 35)).astype(np.float32)
    p = model.predict_proba(x, batch_size=2)
    assert isinstance(p, np.ndarray) and p.shape == (5,) and p.dtype == np.float32
    assert np.all((p >= 0) & (p <= 1))
    np.testing.assert_array_equal(p, model.predict_proba(x, batch_size=2))  # dropout off: deterministic
    np.testing.assert_allclose(p, model.predict_proba(x), rtol=1e-5)  # batching changes only rounding


def test_model_float32_end_to_end(model_backend):
    model = mc.build_model("residual", input_size=35, backend=model_backend)
    x = np.random.default_rng(0).standard_normal((2, 1, 35, 35)).astype(np.float32)
    _, grads = mc.loss_and_grads(model, x, np.array([1, 0], dtype=np.float32), training=True)
    assert all(g.dtype == np.float32 for g in grads.values())
    assert model.forward(x).dtype == np.float32


def _two_class_images(n, size, rng):
    """Class 1: a bright square in the top-left quarter; class 0: in the bottom-right."""
    x = rng.normal(0, 0.3, (n, 1, size, size)).astype(np.float32)
    t = (np.arange(n) % 2).astype(np.float32)
    q = size // 4
    for i in range(n):
        r, c = rng.integers(0, q, 2)
        if t[i] == 1:
            x[i, 0, r:r + q, c:c + q] += 2.0
        else:
            x[i, 0, size - q - r:size - r, size - q - c:size - c] += 2.0
    return x, t


def test_tiny_training_run_lowers_the_loss_and_learns(model_backend):
    rng = np.random.default_rng(0)
    x, t = _two_class_images(64, 35, rng)
    model = mc.build_model("baseline", input_size=35, width=0.125, seed=0, backend=model_backend)
    opt = mc.SGD(model.parameters(), lr=0.01, momentum=0.9)
    before = mc.loss_and_grads(model, x, t)[0]
    for _ in range(40):
        idx = rng.choice(64, 16, replace=False)
        _, grads = mc.loss_and_grads(model, x[idx], t[idx], training=True)
        opt.step(grads)
    after = mc.loss_and_grads(model, x, t)[0]
    accuracy = ((model.predict_proba(x) >= 0.5) == (t == 1)).mean()
    assert after < 0.5 * before and accuracy >= 0.95


def test_numpy_and_cupy_give_the_same_loss_and_gradients():
    from mura_core.nn.backend import cupy_available
    if not cupy_available():
        pytest.skip("CuPy with a CUDA device is not available")
    x = np.random.default_rng(0).standard_normal((4, 1, 67, 67)).astype(np.float32)
    t = np.array([1, 0, 0, 1], dtype=np.float32)
    results = []
    for backend in ("numpy", "cupy"):
        model = mc.build_model("residual", input_size=67, seed=0, backend=backend)
        loss, grads = mc.loss_and_grads(model, x, t, training=True)
        results.append((loss, {k: to_numpy(v).copy() for k, v in grads.items()}))
    assert abs(results[0][0] - results[1][0]) < 1e-4 * max(1.0, abs(results[0][0]))
    for name, g in results[0][1].items():
        np.testing.assert_allclose(results[1][1][name], g, rtol=2e-3, atol=1e-5 * np.abs(g).max())
