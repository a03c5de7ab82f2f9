"""The PyTorch twin of a mura_core architecture, built from the same layer specs.

Conv2d with padding k//2 followed by ReLU (or, for ``residual`` specs, relu(conv(x) +
shortcut(x)) with a 1x1 projection where channels or stride change), MaxPool2d 2x2 in floor
mode, Dropout, Flatten before the first Linear, ReLU after every Linear but the output one,
which returns the logit (``BCEWithLogitsLoss`` applies the logistic). Weights are He normal
(std sqrt(2/fan_in)) before ReLUs and N(0, OUTPUT_INIT_STD^2) before the logistic, biases
zero: the same scale as ``mura_core.nn.models``. Importing this module imports torch.
"""
from __future__ import annotations

import torch
from torch import nn

from mura_core.nn.layers import OUTPUT_INIT_STD
from mura_core.nn.models import architecture_layers


class ResidualConv(nn.Module):
    """relu(conv(x) + shortcut(x)); the shortcut is the identity when ``proj`` is None."""

    def __init__(self, conv: nn.Conv2d, proj: nn.Conv2d | None):
        super().__init__()
        self.conv = conv
        self.proj = proj

    def forward(self, x):
        skip = x if self.proj is None else self.proj(x)
        return torch.relu(self.conv(x) + skip)


def _he(module: nn.Module) -> None:
    nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
    nn.init.zeros_(module.bias)


def build_torch_net(arch: str = "baseline", input_size: int = 227, width: float | None = None,
                    dropout: float = 0.5, seed: int = 0) -> nn.Sequential:
    """An ``nn.Sequential`` with the layers of ``mura_core.build_model(arch, ...)``, float32."""
    torch.manual_seed(seed)
    layers, _ = architecture_layers(arch, width)
    modules: list[nn.Module] = []
    channels = 1
    flattened = False
    for spec in layers:
        kind = spec["type"]
        if kind == "conv":
            k, stride = spec["k"], spec["stride"]
            conv = nn.Conv2d(channels, spec["out"], k, stride, padding=k // 2)
            _he(conv)
            if spec.get("residual"):
                proj = None
                if spec["out"] != channels or stride != 1:
                    proj = nn.Conv2d(channels, spec["out"], 1, stride)
                    _he(proj)
                modules.append(ResidualConv(conv, proj))
            else:
                modules += [conv, nn.ReLU()]
            channels = spec["out"]
        elif kind == "pool":
            modules.append(nn.MaxPool2d(2, 2))
        elif kind == "dropout":
            modules.append(nn.Dropout(dropout))
        elif kind == "fc":
            if not flattened:
                modules.append(nn.Flatten())
                with torch.no_grad():
                    d_in = nn.Sequential(*modules)(torch.zeros(1, 1, input_size, input_size)).shape[1]
                flattened = True
            fc = nn.Linear(d_in, spec["out"])
            if spec.get("act") == "sigmoid":
                nn.init.normal_(fc.weight, std=OUTPUT_INIT_STD)
                nn.init.zeros_(fc.bias)
                modules.append(fc)
            else:
                _he(fc)
                modules += [fc, nn.ReLU()]
            d_in = spec["out"]
        else:
            raise ValueError(f"unknown layer type {kind!r} in architecture spec")
    return nn.Sequential(*modules)


def copy_weights(model, net: nn.Sequential) -> None:
    """Load a mura_core ``Model``'s parameters into its torch twin, in layer order.

    Our Linear stores W as (d_in, d_out), torch as (d_out, d_in); convolutions agree.
    """
    import numpy as np

    from mura_core.nn.backend import to_numpy

    ours = list(model.parameters().items())
    theirs = list(net.parameters())
    if len(ours) != len(theirs):
        raise ValueError(f"{len(ours)} parameter arrays in our model, {len(theirs)} in torch's")
    with torch.no_grad():
        for (name, value), param in zip(ours, theirs):
            value = to_numpy(value)
            if value.ndim == 2:
                value = value.T
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(f"{name}: shape {value.shape} vs torch {tuple(param.shape)}")
            param.copy_(torch.from_numpy(np.ascontiguousarray(value)))
