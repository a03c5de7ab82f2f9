"""Architectures as data, and the ``Model`` they build.

An architecture is a list of layer specs (plain dicts), so a reader sees the whole network at
a glance and a saved model can record exactly what it is:

- ``{"type": "conv", "out": 64, "k": 7, "stride": 2}``: Conv2D (pad k//2) followed by ReLU;
  ``"residual": True`` wraps the convolution as relu(conv(x) + shortcut(x)) instead;
- ``{"type": "pool"}``: MaxPool2D 2x2, stride 2; placed before the preceding convolution's
  ReLU, which gives the same values and gradients (max and ReLU commute) for less work;
- ``{"type": "dropout"}``: inverted dropout with the model's probability;
- ``{"type": "fc", "out": 2048}``: Linear followed by ReLU (the first one flattens first);
  ``{"type": "fc", "out": 1, "act": "sigmoid"}``: the output, P(normal).

``width`` multiplies the number of feature maps of every convolution.
"""
from __future__ import annotations

import copy
import math

import numpy as np

from .backend import keep_freed_memory, resolve_backend, to_numpy, xp_for
from .layers import (
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
from .losses import bce_with_logits_on_device


def _conv(out, k, stride=1, **extra):
    return {"type": "conv", "out": out, "k": k, "stride": stride, **extra}


POOL = {"type": "pool"}
DROPOUT = {"type": "dropout"}
OUTPUT = {"type": "fc", "out": 1, "act": "sigmoid"}

#: The assignment's network (Cerinta 1).
BASELINE = [
    _conv(64, 7, 2), POOL,
    _conv(128, 5, 2), POOL,
    _conv(256, 3), _conv(384, 3), _conv(256, 3), _conv(256, 3), POOL,
    DROPOUT, {"type": "fc", "out": 2048}, DROPOUT, OUTPUT,
]

#: Baseline + a 5x5 convolution early (after conv2, at 29x29 for a 227 input), a 3x3
#: convolution late (after conv6, at 14x14), and one more fully connected layer.
DEEPER = [
    _conv(64, 7, 2), POOL,
    _conv(128, 5, 2), _conv(128, 5), POOL,
    _conv(256, 3), _conv(384, 3), _conv(256, 3), _conv(256, 3), _conv(256, 3), POOL,
    DROPOUT, {"type": "fc", "out": 2048}, DROPOUT, {"type": "fc", "out": 1024}, DROPOUT, OUTPUT,
]

#: Baseline with a residual connection around each stride-1 convolution (conv3..conv6):
#: relu(conv(x) + shortcut(x)), the shortcut being the identity where the channel counts
#: match (conv6: 256 -> 256) and a 1x1 convolution projection where they don't
#: (conv3: 128 -> 256, conv4: 256 -> 384, conv5: 384 -> 256). Strided convolutions keep
#: no shortcut, as they change the resolution.
RESIDUAL = [
    _conv(64, 7, 2), POOL,
    _conv(128, 5, 2), POOL,
    _conv(256, 3, residual=True), _conv(384, 3, residual=True),
    _conv(256, 3, residual=True), _conv(256, 3, residual=True), POOL,
    DROPOUT, {"type": "fc", "out": 2048}, DROPOUT, OUTPUT,
]

ARCHITECTURES = {
    "baseline": {"layers": BASELINE, "width": 1.0},
    "deeper": {"layers": DEEPER, "width": 1.0},
    "wider": {"layers": BASELINE, "width": 2.0},
    "residual": {"layers": RESIDUAL, "width": 1.0},
}

#: The largest input side (pixels) a network is built for, and so the largest image a cache
#: holds. Memory grows with the square of the side: at 1,024 pixels a cache of MURA's 40,005
#: images takes 42 GB and the baseline's weights alone 2.1 GB (the networks are designed for
#: 227). Why it is refused above: ``INPUT_SIZE_REASON``.
MAX_INPUT_SIZE = 1024
INPUT_SIZE_REASON = (f"the largest input size is {MAX_INPUT_SIZE:,} pixels, since memory grows "
                     "with the square of the side (at 1,024 a cache of MURA's 40,005 images "
                     "takes 42 GB; the networks are designed for 227)")
#: The largest feature-map multiplier (``wider`` is 2): at 16 the baseline at 227 already holds
#: 400 million weights.
MAX_WIDTH = 16.0


class Model:
    """A network built from a spec: a ``body`` that maps the input to the logit z, and a
    ``head``, the logistic that turns z into P(normal) = sigmoid(z); plus its metadata.

    Training and saliency work on the logit (``logits``, ``backward_from_logits``), where the
    loss is exact for any z; ``forward`` / ``predict_proba`` add the head. ``spec``
    (JSON-able) is everything ``build_model`` needs to rebuild it; ``metadata`` (JSON-able)
    travels with saved models (preprocessing size, mode, mean and std, ...).
    """

    def __init__(self, spec: dict, body: Sequential, stream: RandomStream, backend: str, input_shape):
        self.spec = spec
        self.body = body
        self.head = Sigmoid()
        self.stream = stream
        self.backend = backend
        self.xp = xp_for(backend)
        if backend == "numpy":
            keep_freed_memory()
        self.input_shape = tuple(input_shape)
        self.metadata: dict = {}

    @property
    def layers(self) -> list[tuple[str, object]]:
        """(name, layer) pairs of the whole network, the body's then the head."""
        return [*self.body.layers, ("sigmoid", self.head)]

    # --- computation -------------------------------------------------------------------
    def _to_device(self, x):
        dtype = np.dtype(self.spec["dtype"])
        x = self.xp.asarray(x)
        if x.dtype != dtype:
            x = x.astype(dtype)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"expected input of shape (B, {', '.join(map(str, self.input_shape))})"
                             f", got {tuple(x.shape)}")
        return x

    def logits(self, x, training: bool = False, keep=()):
        """The logit z, (B, 1), on the model's backend: P(normal) = sigmoid(z).

        ``keep``: names of body layers (e.g. ``"conv6"``) whose outputs stay readable in
        ``self.body.outputs`` until the next forward pass."""
        return self.body.forward(self._to_device(x), training, keep=keep)

    def forward(self, x, training: bool = False):
        """P(normal), (B, 1), on the model's backend."""
        return self.head.forward(self.logits(x, training))

    def backward_from_logits(self, dz, *, stop_at: str | None = None, input_grad: bool = False):
        """Backpropagate dL/dz (B, 1) through the body; fills every layer's ``grads`` and
        returns dL/dx (None when the first layer skips its input gradient, as in training).

        ``stop_at``: the name of a body layer: stop there and return dL/d(its output) instead
        (the layers below it are not visited). ``input_grad``: compute dL/dx even through a
        first convolution that normally skips it (saliency maps need it; training does not).
        """
        if not input_grad:
            return self.body.backward(dz, stop_at)
        skipping = [layer for _, layer in self.body.layers
                    if isinstance(layer, Conv2D) and not layer.input_grad]
        for layer in skipping:
            layer.input_grad = True
        try:
            return self.body.backward(dz, stop_at)
        finally:
            for layer in skipping:
                layer.input_grad = False

    def backward(self, dp):
        """Backpropagate dL/dP(normal) (B, 1) through the head and the body."""
        return self.backward_from_logits(self.head.backward(dp))

    def predict_proba(self, x, batch_size: int = 64) -> np.ndarray:
        """P(normal) for a batch x (B, 1, H, W) in evaluation mode, as a NumPy (B,) array."""
        out = [to_numpy(self.forward(x[i:i + batch_size], training=False)).reshape(-1)
               for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros(0, dtype=self.spec["dtype"])

    # --- parameters --------------------------------------------------------------------
    def parameters(self) -> dict:
        """name -> array (live), in layer order, e.g. ``conv1.W``, ``conv1.b``, ..., ``fc2.b``."""
        return dict(self.body.named_parameters())

    def gradients(self) -> dict:
        """name -> gradient of the last backward pass, same keys as ``parameters()``."""
        return dict(self.body.named_gradients())

    def num_parameters(self) -> int:
        return self.body.num_parameters()

    def rng_state(self) -> dict:
        """State of the dropout random stream (two integers)."""
        return self.stream.state()

    def set_rng_state(self, state: dict) -> None:
        self.stream.set_state(state)

    # --- description -------------------------------------------------------------------
    def summary_rows(self) -> list[dict]:
        """One dict per layer: name, layer (description), output shape, parameter count."""
        rows = []
        shape = self.input_shape
        rows.append({"name": "input", "layer": "Input", "output": shape, "params": 0})
        for name, layer in self.layers:
            shape = layer.output_shape(shape)
            rows.append({"name": name, "layer": layer.describe(), "output": tuple(shape),
                         "params": layer.num_parameters()})
        return rows

    def summary(self) -> str:
        """A table of every layer with its output shape and parameter count, and the total."""
        rows = self.summary_rows()
        header = f"Model '{self.spec['arch']}' (width {self.spec['width']:g}, " \
                 f"dropout {self.spec['dropout']:g}, {self.spec['dtype']}, {self.backend})"
        lines = [header, f"{'layer':<9} {'type':<58} {'output shape':>16} {'params':>12}"]
        lines.append("-" * len(lines[-1]))
        for r in rows:
            out = "x".join(str(s) for s in r["output"])
            lines.append(f"{r['name']:<9} {r['layer']:<58} {out:>16} {r['params']:>12,}")
        lines.append("-" * len(lines[1]))
        lines.append(f"{'total':<9} {'':<58} {'':>16} {self.num_parameters():>12,}")
        return "\n".join(lines)

    def __repr__(self):
        return f"<Model {self.spec['arch']} {self.num_parameters():,} parameters on {self.backend}>"


def architecture_layers(name: str, width: float | None = None) -> tuple[list[dict], float]:
    """The layer specs of a named architecture with ``width`` applied, and the width used."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    arch = ARCHITECTURES[name]
    width = float(arch["width"] if width is None else width)
    if not (math.isfinite(width) and 0 < width <= MAX_WIDTH):
        raise ValueError(f"width (the feature-map multiplier) must be a number above 0 and at "
                         f"most {MAX_WIDTH:g} ('wider' is 2), got {width}")
    layers = copy.deepcopy(arch["layers"])
    for spec in layers:
        if spec["type"] == "conv":
            spec["out"] = max(1, int(round(spec["out"] * width)))
    return layers, width


def _assemble(layers: list[dict], input_size: int, seed: int, dropout: float, dtype):
    """Build the body (input -> logit) for layer specs; returns (body, stream)."""
    rng = np.random.default_rng(seed)
    stream = RandomStream(seed)
    built = []
    channels = 1
    counters = {"conv": 0, "pool": 0, "fc": 0, "dropout": 0, "relu": 0}

    def next_name(kind):
        counters[kind] += 1
        return f"{kind}{counters[kind]}"

    flat = None
    for spec in layers:
        kind = spec["type"]
        if kind == "conv":
            conv = Conv2D(channels, spec["out"], spec["k"], spec["stride"], rng=rng, dtype=dtype,
                          input_grad=bool(built))
            name = next_name("conv")
            if spec.get("residual"):
                proj = None
                if spec["out"] != channels or spec["stride"] != 1:
                    proj = Conv2D(channels, spec["out"], 1, spec["stride"], rng=rng, dtype=dtype)
                built.append((name.replace("conv", "res"), Residual(conv, proj)))
            else:
                built.append((name, conv))
                built.append((next_name("relu"), ReLU()))
            channels = spec["out"]
        elif kind == "pool":
            pool = (next_name("pool"), MaxPool2D(2, 2))
            if built and isinstance(built[-1][1], ReLU):
                # relu(maxpool(x)) == maxpool(relu(x)) (both are monotone), values and
                # gradients alike; pooling first applies the ReLU to 4x fewer values.
                built.insert(len(built) - 1, pool)
            else:
                built.append(pool)
        elif kind == "dropout":
            built.append((next_name("dropout").replace("dropout", "drop"), Dropout(dropout, stream)))
        elif kind == "fc":
            if flat is None:
                built.append(("flatten", Flatten()))
                flat = Sequential(built).output_shape((1, input_size, input_size))[0]
            is_output = spec.get("act") == "sigmoid"
            fc = Linear(flat, spec["out"], rng=rng, dtype=dtype, init="output" if is_output else "he")
            built.append((next_name("fc"), fc))
            if not is_output:  # the output's logistic is the model's head
                built.append((next_name("relu"), ReLU()))
            flat = spec["out"]
        else:
            raise ValueError(f"unknown layer type {kind!r} in architecture spec")
    return Sequential(built), stream


def smallest_input_size(name: str | None = None) -> int:
    """The smallest input side (pixels) at which the architecture ``name`` keeps a non-empty
    output in every layer; with no name, the smallest over all architectures (what a cache
    must hold at least to be of use to any network)."""
    names = ARCHITECTURES if name is None else [name]
    return min(_smallest_input_size(architecture_layers(n)[0]) for n in names)


def _smallest_input_size(layers: list[dict]) -> int:
    """The smallest input side at which every layer of ``layers`` keeps a non-empty output,
    walking back from one output pixel: n outputs of a convolution (padding k // 2) with
    stride s need (n - 1) * s + k - 2 * (k // 2) input pixels, those of a 2x2 stride-2 pool
    (floor mode) 2 * n; the other layers keep the size."""
    need = 1
    for spec in reversed(layers):
        if spec["type"] == "conv":
            k = spec["k"]
            need = (need - 1) * spec["stride"] + k - 2 * (k // 2)
        elif spec["type"] == "pool":
            need = 2 * need
    return max(1, need)


def check_input_size(name: str, input_size, layers: list[dict] | None = None) -> int:
    """``input_size`` as an int when the architecture ``name`` (or its ``layers``) can take
    it: a whole number from the smallest size that keeps every layer non-empty up to
    ``MAX_INPUT_SIZE``; ValueError saying why otherwise."""
    if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)):
        raise ValueError(f"input size must be a whole number of pixels, got {input_size!r}")
    input_size = int(input_size)
    if input_size > MAX_INPUT_SIZE:
        raise ValueError(f"input size {input_size:,} is too large: {INPUT_SIZE_REASON}")
    layers = architecture_layers(name)[0] if layers is None else layers
    smallest = _smallest_input_size(layers)
    if input_size < smallest:
        raise ValueError(f"input size {input_size} is too small for the '{name}' network: "
                         f"the smallest valid input size is {smallest}")
    return input_size


def memory_bytes(name: str, input_size: int, batch_size: int, width: float | None = None,
                 dtype: str = "float32", training: bool = True) -> int:
    """The least memory (bytes) one SGD step (``training``) or one evaluation batch of the
    architecture ``name`` takes, computed from its layer specs alone (nothing is allocated):
    the weights (with their gradients and momentum in training) and every layer's output for
    a batch of ``batch_size``. A step takes more (convolution buffers, temporaries): refuse a
    run when even this does not fit."""
    layers, _ = architecture_layers(name, width)
    check_input_size(name, input_size, layers)
    channels, side, flat = 1, int(input_size), None
    weights = outputs = 0
    for spec in layers:
        kind = spec["type"]
        if kind == "conv":
            k, out = spec["k"], spec["out"]
            side = (side + 2 * (k // 2) - k) // spec["stride"] + 1
            weights += out * channels * k * k + out
            outputs += 2 * out * side * side  # the convolution's and its ReLU's
            if spec.get("residual") and (out != channels or spec["stride"] != 1):
                weights += out * channels + out
                outputs += out * side * side
            channels = out
        elif kind == "pool":
            side = (side - 2) // 2 + 1
            outputs += channels * side * side
        elif kind == "dropout":
            outputs += channels * side * side if flat is None else flat
        elif kind == "fc":
            flat = channels * side * side if flat is None else flat
            weights += flat * spec["out"] + spec["out"]
            outputs += 2 * spec["out"]
            flat = spec["out"]
    copies = 3 if training else 1
    return np.dtype(dtype).itemsize * (copies * weights + int(batch_size) * outputs)


def build_model(name: str = "baseline", input_size: int = 227, seed: int = 0,
                backend: str = "numpy", width: float | None = None, dropout: float = 0.5,
                dtype: str = "float32") -> Model:
    """Build a named architecture ("baseline", "deeper", "wider", "residual").

    input_size: side of the square one-channel input (227 in the assignment; any size up to
    ``MAX_INPUT_SIZE`` at which every layer keeps a non-empty output works). width: multiplier
    of the feature maps of every convolution (None: the architecture's default, 2.0 for
    "wider", 1.0 otherwise; "wider" at 1.0 is the baseline). Weights: He normal before
    ReLUs, N(0, 0.01^2) before the logistic, biases zero, drawn on the CPU from ``seed`` so
    every backend starts from the same numbers.
    backend: "numpy", "cupy" or "auto". dtype: "float32" (default) or "float64" (gradient checks).
    """
    layers, width = architecture_layers(name, width)
    input_size = check_input_size(name, input_size, layers)
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {dropout}")
    backend = resolve_backend(backend)
    body, stream = _assemble(layers, input_size, int(seed), float(dropout), np.dtype(dtype))
    spec = {"arch": name, "input_size": input_size, "seed": int(seed), "width": width,
            "dropout": float(dropout), "dtype": dtype, "layers": layers}
    body.to(xp_for(backend)).pack()
    return Model(spec, body, stream, backend, (1, input_size, input_size))


def loss_and_grads(model: Model, x, t, training: bool = False, weights=None):
    """BCE of the model on (x, t) and the gradient of every parameter.

    x: (B, 1, H, W) (NumPy or the model's backend); t: (B,) or (B, 1), 1 = normal, 0 = abnormal;
    weights: None, or one loss weight per example (B,) (``losses.bce_with_logits``).
    Returns (loss as a float: mean over the batch; dict name -> gradient with exactly the keys
    of ``model.parameters()``). The gradients are the layers' own buffers, overwritten by the
    next backward pass: copy them to keep them. The loss is taken from the logits
    (``losses.bce_with_logits``), so saturated outputs still give finite values.
    """
    loss, grads = loss_and_grads_on_device(model, x, t, training, weights)
    return float(loss), grads  # read after the backward pass is queued


def loss_and_grads_on_device(model: Model, x, t, training: bool = False, weights=None):
    """``loss_and_grads`` with the loss left as a 0-d array of the model's backend. Reading a
    GPU value waits for the device to finish its queue; a caller that reads the loss together
    with other values (the trainer, with its check of the gradients) waits once."""
    z = model.logits(x, training)
    loss, dz = bce_with_logits_on_device(z, t, weights)
    model.backward_from_logits(dz)
    return loss, model.gradients()
