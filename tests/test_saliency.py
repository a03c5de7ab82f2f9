"""Grad-CAM and the input gradient against finite differences of the score, the resize against
a slow loop reference, and the model hooks they use (kept outputs, a backward that stops)."""
import numpy as np
import pytest
from reference import bilinear_reference, numeric_grad, rel_error

import mura_core as mc
from mura_core.evaluation import saliency
from mura_core.nn.backend import to_numpy

SIZE = 48  # conv6 is 3x3 at this input size


def _small_model(backend="numpy", dtype="float64", arch="baseline", seed=1):
    return mc.build_model(arch, input_size=SIZE, width=0.125, seed=seed, dtype=dtype,
                          backend=backend)


def _inputs(n=2, dtype=np.float64):
    return np.random.default_rng(0).standard_normal((n, 1, SIZE, SIZE)).astype(dtype)


def _tail_score(model, layer, activations, sign):
    """s summed over the batch, computed from a layer's output by the forward passes of the
    layers after it (images do not interact in evaluation mode, so d(sum)/dA_n = ds_n/dA_n)."""
    names = [name for name, _ in model.body.layers]
    y = activations
    for _, later in model.body.layers[names.index(layer) + 1:]:
        y = later.forward(y, False)
    return sign * float(y.sum())


def _reference_cam(model, x, layer, sign):
    """Grad-CAM from finite differences: alpha from central differences of s with respect
    to A, then ReLU(sum_k alpha_k A_k), the loop resize and the per-image maximum."""
    model.logits(x, keep=(layer,))
    activations = model.body.outputs[layer].copy()
    grad = numeric_grad(lambda: _tail_score(model, layer, activations, sign), activations)
    alpha = grad.mean(axis=(2, 3))
    maps = []
    for a, act in zip(alpha, activations):
        cam = np.maximum(np.tensordot(a, act, axes=1), 0.0)
        big = bilinear_reference(cam, SIZE, SIZE)
        maps.append(big / big.max() if big.max() > 0 else big)
    return np.stack(maps)


@pytest.mark.parametrize("target,sign", [("abnormal", -1.0), ("normal", 1.0)])
def test_grad_cam_matches_finite_differences_of_the_score(target, sign):
    model = _small_model()
    x = _inputs()
    expected = _reference_cam(model, x, "conv6", sign)
    assert all(m.max() == pytest.approx(1.0) for m in expected), "a test needs non-zero maps"
    cam = saliency.grad_cam(model, x, target=target)
    assert cam.shape == (2, SIZE, SIZE) and cam.dtype == np.float32
    np.testing.assert_allclose(cam, expected, atol=1e-5)


def test_gradient_at_a_layer_output_matches_finite_differences():
    model = _small_model()
    x = _inputs()
    for layer in ("conv4", "conv6"):
        z = model.logits(x, keep=(layer,))
        activations = model.body.outputs[layer].copy()
        analytic = model.backward_from_logits(-np.ones_like(z), stop_at=layer)
        numeric = numeric_grad(
            lambda layer=layer, a=activations: _tail_score(model, layer, a, -1.0), activations)
        assert analytic.shape == activations.shape
        assert rel_error(analytic, numeric) < 1e-6, layer


def test_grad_cam_at_an_earlier_layer_has_the_input_size():
    cam = saliency.grad_cam(_small_model(), _inputs(), layer="conv2")
    assert cam.shape == (2, SIZE, SIZE) and 0.0 <= cam.min() and cam.max() <= 1.0


@pytest.mark.parametrize("target,sign", [("abnormal", -1.0), ("normal", 1.0)])
def test_input_gradient_matches_finite_differences_of_the_score(target, sign):
    model = _small_model()
    x = _inputs()
    analytic = saliency.input_gradient(model, x, target=target)
    assert analytic.shape == (2, SIZE, SIZE) and analytic.dtype == np.float32

    def score():
        return sign * float(model.logits(x).sum())

    rows = np.random.default_rng(2).choice(x.size, size=60, replace=False)
    flat = x.reshape(-1)
    numeric = []
    for i in rows:
        old = flat[i]
        flat[i] = old + 1e-6
        up = score()
        flat[i] = old - 1e-6
        down = score()
        flat[i] = old
        numeric.append((up - down) / 2e-6)
    assert rel_error(analytic.reshape(-1)[rows], np.abs(numeric)) < 1e-5


def test_input_gradient_leaves_training_without_the_first_layer_input_gradient():
    model = _small_model()
    saliency.input_gradient(model, _inputs())
    first = model.body.layers[0][1]
    assert first.input_grad is False
    z = model.logits(_inputs(), training=True)
    assert model.backward_from_logits(np.ones_like(z)) is None


def test_maps_lie_in_zero_one_and_each_reaches_one():
    model = _small_model(dtype="float32")
    cam = saliency.grad_cam(model, _inputs(5, np.float32), batch_size=2)
    assert cam.shape == (5, SIZE, SIZE)
    assert cam.min() >= 0.0 and cam.max() <= 1.0
    for m in cam:
        assert m.max() == 0.0 or m.max() == pytest.approx(1.0)


def test_a_network_that_ignores_its_input_gives_all_zero_maps_not_nans():
    model = _small_model()
    model.parameters()["fc2.W"][...] = 0.0  # ds/dA = 0 everywhere
    cam = saliency.grad_cam(model, _inputs())
    assert np.all(cam == 0.0)
    assert np.all(saliency.normalize_maps(np.zeros((2, 3, 4), np.float32)) == 0.0)


def test_the_residual_network_explains_its_last_block():
    model = _small_model(arch="residual")
    assert saliency.last_conv_layer(model) == "res6"
    cam = saliency.grad_cam(model, _inputs())
    assert cam.shape == (2, SIZE, SIZE) and np.isfinite(cam).all()


def test_unknown_layer_and_target_are_clear_errors():
    model = _small_model()
    with pytest.raises(ValueError, match="no layer named 'conv9'.*conv1"):
        saliency.grad_cam(model, _inputs(), layer="conv9")
    with pytest.raises(ValueError, match="Grad-CAM needs a convolution"):
        saliency.grad_cam(model, _inputs(), layer="fc1")
    with pytest.raises(ValueError, match="target must be one of abnormal, normal"):
        saliency.input_gradient(model, _inputs(), target="fracture")


@pytest.mark.parametrize("shape,out", [((3, 3), (48, 48)), ((2, 5), (7, 4)), ((6, 4), (3, 9)),
                                       ((1, 1), (4, 5)), ((5, 5), (5, 5))])
def test_resize_matches_the_loop_reference(xp, shape, out):
    maps = np.random.default_rng(3).random((2, *shape))
    got = to_numpy(saliency.resize_bilinear(xp.asarray(maps), *out))
    for g, m in zip(got, maps):
        np.testing.assert_allclose(g, bilinear_reference(m, *out), atol=1e-12)


def test_resize_agrees_with_pytorch_where_it_is_installed():
    torch = pytest.importorskip("torch")
    maps = np.random.default_rng(4).random((3, 4, 6))
    for out in ((17, 13), (2, 3)):
        ours = saliency.resize_bilinear(maps, *out)
        theirs = torch.nn.functional.interpolate(torch.from_numpy(maps)[:, None], size=out,
                                                 mode="bilinear", align_corners=False)
        np.testing.assert_allclose(ours, theirs[:, 0].numpy(), atol=1e-12)


def test_numpy_and_the_backend_give_the_same_maps(backend):
    x = _inputs(3, np.float32)
    reference = _small_model(dtype="float32")
    model = _small_model(backend=backend, dtype="float32")
    np.testing.assert_allclose(saliency.grad_cam(model, x), saliency.grad_cam(reference, x),
                               atol=1e-4)
    ours, theirs = saliency.input_gradient(model, x), saliency.input_gradient(reference, x)
    np.testing.assert_allclose(ours, theirs, atol=1e-4 * float(theirs.max()))


def test_mass_in_mask_and_peak_in_mask():
    maps = np.zeros((3, 4, 4))
    maps[0, 0, 0], maps[0, 3, 3] = 3.0, 1.0
    maps[1] = 1.0
    masks = np.zeros((3, 4, 4), dtype=bool)
    masks[:, :2, :2] = True
    share = saliency.mass_in_mask(maps, masks)
    assert share[0] == pytest.approx(0.75) and share[1] == pytest.approx(0.25)
    assert np.isnan(share[2]), "an all-zero map has no share"
    assert saliency.peak_in_mask(maps, masks).tolist() == [True, True, False]


def test_localization_scores_maps_against_the_sign_and_a_uniform_map():
    masks = np.zeros((4, 10, 10), dtype=bool)
    masks[:, 2:4, 2:7] = True  # 10 % of the image
    maps = np.ones((4, 10, 10))  # uniform maps score the area fraction
    maps[1] = masks[1] * 0.7  # all of its mass on the sign
    maps[3] = 0.0
    rows = saliency.localization(maps, masks, ["fracture", "implant", "fracture", "implant"])
    by_sign = {r["sign"]: r for r in rows}
    assert [r["sign"] for r in rows] == ["fracture", "implant", "all"]
    assert by_sign["fracture"] == {"sign": "fracture", "images": 2, "zero_maps": 0,
                                   "share": pytest.approx(0.1), "uniform_share": pytest.approx(0.1),
                                   "ratio": pytest.approx(1.0), "ratio_low": pytest.approx(1.0),
                                   "ratio_high": pytest.approx(1.0), "peak_inside": 0.0}
    assert by_sign["implant"]["zero_maps"] == 1 and by_sign["implant"]["share"] == pytest.approx(1.0)
    assert by_sign["implant"]["peak_inside"] == 1.0 and by_sign["implant"]["ratio"] == pytest.approx(10.0)
    assert by_sign["all"]["images"] == 4 and by_sign["all"]["share"] == pytest.approx(0.4)
    everything = by_sign["all"]  # resamples of 1/3 or 2/3 perfect maps: ratio 4 to 7 of 10
    assert 1.0 <= everything["ratio_low"] < everything["ratio"] < everything["ratio_high"] <= 10.0
    none = saliency.localization(np.zeros((1, 4, 4)), np.ones((1, 4, 4), bool), ["implant"])
    assert none[1]["share"] is None and none[1]["zero_maps"] == 1


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A small synthetic set and its cache at SIZE: (data root, cache)."""
    from mura_core.data import build_cache, generate_synthetic

    root = tmp_path_factory.mktemp("saliency")
    generate_synthetic(root / "data", n_train=24, n_valid=30, seed=1, workers=1)
    with pytest.warns(Warning):  # the generator truncates one file on purpose
        cache = build_cache(root / "data", size=SIZE, cache_dir=root / "cache", workers=1,
                            progress=False)
    return root / "data", cache


def test_explain_rows_gives_the_images_their_maps_and_the_drawn_signs(synthetic):
    from mura_core.data.synthetic import sign_masks
    from mura_core.evaluation.predictions import split_inputs

    root, cache = synthetic
    valid, rows = cache.split("valid"), np.array([3, 0, 7])
    model = _small_model(dtype="float32")
    got = saliency.explain_rows(model, valid, rows, cache.mean, cache.std, data_root=root,
                                gradients=True)
    np.testing.assert_array_equal(got["images"], valid.images[rows])
    x = split_inputs(valid, rows, cache.mean, cache.std)
    np.testing.assert_array_equal(got["maps"]["Grad-CAM"], saliency.grad_cam(model, x))
    np.testing.assert_array_equal(got["maps"]["input gradient"],
                                  saliency.display_scale(saliency.input_gradient(model, x)))
    masks = sign_masks(root, [valid.records[i].path for i in rows], SIZE)[0]
    np.testing.assert_array_equal(got["outlines"], masks)
    plain = saliency.explain_rows(model, valid, rows, cache.mean, cache.std)
    assert plain["outlines"] is None and list(plain["maps"]) == ["Grad-CAM"]


def test_sign_localization_on_a_small_synthetic_set(synthetic):
    root, cache = synthetic
    valid = cache.split("valid")
    model = _small_model(dtype="float32")
    got = saliency.sign_localization(model, valid, cache.mean, cache.std, root)
    abnormal = int(np.sum(valid.labels == 0))
    assert got["abnormal_images"] == abnormal > 0
    total = got["rows"][-1]
    assert total["images"] == abnormal - got["without_sign"] - got["sign_too_small"] > 0
    assert sum(r["images"] for r in got["rows"][:-1]) == total["images"]
    if total["share"] is not None:
        assert 0.0 <= total["share"] <= 1.0 and 0.0 < total["uniform_share"] < 0.5
    gradient = got["input_gradient"][-1]
    assert gradient["images"] == total["images"] and 0.0 <= gradient["share"] <= 1.0
    assert 0.0 < gradient["uniform_share"] < 0.5


def test_display_scale_clips_extreme_pixels():
    maps = np.zeros((2, 10, 10))
    maps[0] = np.arange(100).reshape(10, 10)
    maps[0, 0, 0] = 1e6  # one extreme pixel
    scaled = saliency.display_scale(maps, percentile=98)
    assert scaled.dtype == np.float32 and scaled.max() == 1.0 and np.all(scaled[1] == 0)
    assert scaled[0, 5, 0] == pytest.approx(50 / np.percentile(maps[0], 98), rel=1e-6)
