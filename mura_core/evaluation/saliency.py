"""Where the network looks: Grad-CAM and gradient saliency from the model's own backward pass.

The score explained is the logit z of the network (P(normal) = sigmoid(z)) with a sign:
s = -z for the target ``"abnormal"``, s = z for ``"normal"``. Both maps come from one forward
pass in evaluation mode (no dropout) and one backward pass of ds/dz = -1 or +1 per image;
images do not interact in evaluation mode, so a batch gives each image its own gradient.

- ``grad_cam`` (Selvaraju et al., 2017): A = the output of a convolution layer (before its
  ReLU; the network pools before the ReLU, so a convolution's own output is exactly that),
  shape (N, D, h, w); alpha_k = mean over (h, w) of ds/dA_k; cam = ReLU(sum_k alpha_k A_k),
  resized to the input's H x W by bilinear interpolation with half-pixel centres (PyTorch's
  ``interpolate(mode="bilinear", align_corners=False)``), divided per image by its maximum
  (an all-zero map stays zero).
- ``input_gradient`` (Simonyan et al., 2013): |ds/dx|, one value per input pixel.

Both run on the model's backend (NumPy or CuPy, the same array code) and return NumPy
float32 arrays (N, H, W). They overwrite the layers' ``grads`` (as any backward pass does).
"""
from __future__ import annotations

import numpy as np

from ..nn.backend import get_array_module, to_numpy
from ..nn.layers import Conv2D, Residual

TARGETS = ("abnormal", "normal")


def _score_sign(target: str) -> float:
    """ds/dz: -1 for "abnormal" (s = -z), +1 for "normal" (s = z)."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    return -1.0 if target == "abnormal" else 1.0


def last_conv_layer(model) -> str:
    """The name of the model's last convolution (``"conv6"`` in the baseline); in the
    residual network, the last residual block (whose output is taken after its ReLU)."""
    names = [name for name, layer in model.body.layers if isinstance(layer, (Conv2D, Residual))]
    if not names:
        raise ValueError("the model has no convolution layer")
    return names[-1]


def resize_bilinear(maps, height: int, width: int):
    """Resize maps (N, h, w) to (N, height, width), bilinear with half-pixel centres.

    The convention of PyTorch's ``interpolate(mode="bilinear", align_corners=False)`` (no
    antialiasing): output pixel i samples the input at max((i + 0.5) * h / height - 0.5, 0),
    between its two neighbours (the last one repeated at the edge). Done as two matrix
    products with interpolation matrices (height, h) and (w, width), on the maps' backend.
    """
    xp = get_array_module(maps)
    rows = xp.asarray(_interpolation_matrix(maps.shape[1], height), dtype=maps.dtype)
    cols = xp.asarray(_interpolation_matrix(maps.shape[2], width).T, dtype=maps.dtype)
    return xp.matmul(xp.matmul(rows, maps), cols)


def _interpolation_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64: row i holds the two weights of output i's neighbours."""
    out = np.arange(n_out, dtype=np.float64)
    source = np.maximum((out + 0.5) * (n_in / n_out) - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    frac = source - low
    matrix = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    matrix[rows, low] += 1.0 - frac
    matrix[rows, high] += frac  # where high == low (the edge) the weights add up to 1
    return matrix


def normalize_maps(maps):
    """Each map (N, H, W) divided by its maximum; a map whose maximum is 0 stays 0."""
    xp = get_array_module(maps)
    top = maps.max(axis=(1, 2), keepdims=True)
    return maps / xp.where(top > 0, top, maps.dtype.type(1))


def _batches(x, batch_size: int):
    for i in range(0, len(x), batch_size):
        yield x[i:i + batch_size]


def grad_cam(model, x, layer: str | None = None, target: str = "abnormal",
             batch_size: int = 32) -> np.ndarray:
    """Grad-CAM maps of ``target`` for a batch x (N, 1, H, W), standardized as in training.

    layer: the name of a convolution (default: ``last_conv_layer``). Returns (N, H, W)
    float32 NumPy maps in [0, 1], each divided by its maximum (see the module docstring)."""
    layer = layer or last_conv_layer(model)
    sign = _score_sign(target)
    out = []
    for xb in _batches(x, batch_size):
        z = model.logits(xb, training=False, keep=(layer,))
        activations = model.body.outputs.pop(layer)  # (n, D, h, w)
        if activations.ndim != 4:
            raise ValueError(f"layer {layer!r} gives outputs of shape {activations.shape[1:]}; "
                             "Grad-CAM needs a convolution's (D, h, w)")
        grad = model.backward_from_logits(model.xp.full_like(z, sign), stop_at=layer)
        alpha = grad.mean(axis=(2, 3))  # (n, D)
        n, d, h, w = activations.shape
        cam = model.xp.matmul(alpha[:, None, :], activations.reshape(n, d, h * w))
        cam = model.xp.maximum(cam.reshape(n, h, w), cam.dtype.type(0))
        out.append(to_numpy(normalize_maps(resize_bilinear(cam, *xb.shape[2:]))))
    return _stack(out, x)


def input_gradient(model, x, target: str = "abnormal", batch_size: int = 32) -> np.ndarray:
    """|ds/dx| for a batch x (N, C, H, W), standardized as in training: (N, H, W) float32
    NumPy (the largest over channels when C > 1; the radiographs have one)."""
    sign = _score_sign(target)
    out = []
    for xb in _batches(x, batch_size):
        z = model.logits(xb, training=False)
        dx = model.backward_from_logits(model.xp.full_like(z, sign), input_grad=True)
        out.append(to_numpy(model.xp.abs(dx).max(axis=1)))
    return _stack(out, x)


def _stack(parts, x) -> np.ndarray:
    if not parts:
        return np.zeros((0, *x.shape[2:]), dtype=np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)


def mass_in_mask(maps, masks) -> np.ndarray:
    """Share of each map's mass inside its mask: sum(map * mask) / sum(map), (N,) float64;
    NaN for a map that is zero everywhere. maps (N, H, W) >= 0, masks (N, H, W) bool.

    A uniform map scores the mask's area fraction, the level a map that ignores the image
    would reach."""
    maps = np.asarray(maps, dtype=np.float64)
    masks = np.asarray(masks, dtype=bool)
    if maps.shape != masks.shape:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} differ in shape")
    total = maps.sum(axis=(1, 2))
    inside = (maps * masks).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / total, np.nan)


def peak_in_mask(maps, masks) -> np.ndarray:
    """Whether each map's highest pixel lies inside its mask (the "pointing game"), (N,)
    bool; False for a map that is zero everywhere."""
    maps = np.asarray(maps)
    masks = np.asarray(masks, dtype=bool)
    flat = maps.reshape(len(maps), -1)
    peak = flat.argmax(axis=1)
    return (masks.reshape(len(masks), -1)[np.arange(len(maps)), peak]) & (flat.max(axis=1) > 0)


#: The kinds of sign the synthetic generator draws, in the order tables show them.
SIGN_KINDS = ("fracture", "implant")


def localization(maps, masks, signs, *, n_resamples: int = 2000, seed: int = 0) -> list[dict]:
    """How much of each map falls on the drawn sign, per kind of sign and over all (last row).

    maps (N, H, W) >= 0, masks (N, H, W) bool (non-empty), signs: N kinds ("fracture" ...).
    Each row: ``sign``, ``images``; ``zero_maps`` (maps zero everywhere: no evidence for the
    target anywhere, so no share; left out of the rest); over the other maps the mean
    ``share`` of their mass inside the sign (``mass_in_mask``), the mean ``uniform_share``
    (the sign's area fraction: what a uniform map scores), ``ratio`` (share / uniform share)
    with its 95 % bootstrap interval over images (``ratio_low``, ``ratio_high``), and
    ``peak_inside`` (the share of maps whose highest pixel lies on the sign; a uniform map's
    chance of that is its uniform share too). None where no map counts."""
    signs = np.asarray(signs)
    share = mass_in_mask(maps, masks)
    area = np.asarray(masks, dtype=bool).mean(axis=(1, 2))
    peak = peak_in_mask(maps, masks)
    rows = []
    for kind in (*SIGN_KINDS, "all"):
        chosen = np.ones(len(signs), bool) if kind == "all" else signs == kind
        counted = chosen & np.isfinite(share)
        row = {"sign": kind, "images": int(chosen.sum()), "zero_maps": int((chosen & ~counted).sum()),
               "share": None, "uniform_share": None, "ratio": None, "ratio_low": None,
               "ratio_high": None, "peak_inside": None}
        if counted.any():
            s, a = share[counted], area[counted]
            row.update(share=float(s.mean()), uniform_share=float(a.mean()),
                       ratio=float(s.mean() / a.mean()), peak_inside=float(peak[counted].mean()))
            draws = np.random.default_rng(seed).integers(0, len(s), (n_resamples, len(s)))
            ratios = s[draws].mean(axis=1) / a[draws].mean(axis=1)
            row["ratio_low"], row["ratio_high"] = (float(v) for v in np.percentile(ratios, [2.5, 97.5]))
        rows.append(row)
    return rows


def display_scale(maps, percentile: float = 99.0) -> np.ndarray:
    """Maps (N, H, W) scaled for display: each divided by its ``percentile``-th value and
    clipped to [0, 1], so a few extreme pixels (typical of input gradients) do not leave the
    rest invisible; a map that is zero there stays zero."""
    maps = np.asarray(maps, dtype=np.float64)
    top = np.percentile(maps.reshape(len(maps), -1), percentile, axis=1)[:, None, None]
    return normalize_maps(np.minimum(maps, top)).astype(np.float32)


def explain_rows(model, split, rows, mean: float, std: float, *, data_root=None,
                 gradients: bool = False, layer: str | None = None) -> dict:
    """What a figure of maps needs for the rows ``rows`` of a cached split: {"images" (M, S, S)
    uint8, "maps": {"Grad-CAM": (M, S, S)} and, with ``gradients``, "input gradient" (|ds/dx|
    scaled by ``display_scale``), "outlines": where the synthetic generator drew each image's
    sign (``data_root``: the synthetic set; None: no outlines)}."""
    from ..data.synthetic import sign_masks
    from .predictions import split_inputs

    rows = np.asarray(rows, np.int64)
    x = split_inputs(split, rows, mean, std)
    maps = {"Grad-CAM": grad_cam(model, x, layer)}
    if gradients:
        maps["input gradient"] = display_scale(input_gradient(model, x))
    outlines = None
    if data_root is not None:
        outlines = sign_masks(data_root, [split.records[i].path for i in rows],
                              split.images.shape[1], getattr(split, "mode", "pad"))[0]
    return {"images": np.asarray(split.images)[rows], "maps": maps, "outlines": outlines}


def sign_localization(model, split, mean: float, std: float, data_root, layer: str | None = None,
                      batch_size: int = 32) -> dict:
    """Grad-CAM of "abnormal" on every abnormal image of a synthetic split against where the
    generator drew its sign (``data.synthetic.sign_masks``): ``localization`` of the images
    whose sign is visible at the network's input; the input gradient of the same score too.

    Returns {"abnormal_images", "without_sign" (abnormal images drawn without a sign),
    "sign_too_small" (a sign that covers no pixel at the input size), "rows" (Grad-CAM),
    "input_gradient" (the rows of |ds/dx|)}."""
    from ..data.synthetic import sign_masks
    from .predictions import split_inputs

    rows = np.flatnonzero(np.asarray(split.labels) == 0)
    masks, signs = sign_masks(data_root, [split.records[i].path for i in rows],
                              split.images.shape[1], getattr(split, "mode", "pad"))
    drawn = np.array([bool(s) for s in signs], dtype=bool)
    visible = masks.any(axis=(1, 2))
    x = split_inputs(split, rows[visible], mean, std)
    masks, signs = masks[visible], np.asarray(signs)[visible]
    cams = grad_cam(model, x, layer, "abnormal", batch_size)
    gradients = input_gradient(model, x, "abnormal", batch_size)
    return {"abnormal_images": int(len(rows)), "without_sign": int((~drawn).sum()),
            "sign_too_small": int((drawn & ~visible).sum()),
            "rows": localization(cams, masks, signs),
            "input_gradient": localization(gradients, masks, signs)}
