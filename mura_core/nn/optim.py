"""Stochastic gradient descent with momentum and optional (L2) weight decay."""
from __future__ import annotations


from .backend import get_array_module, gpu_kernels, to_numpy


_CHUNK = 1 << 20


def _subtract_scaled(theta, v, lr: float) -> None:
    """theta -= lr * v in place, through chunks so the temporary stays small (fc1.W alone
    holds 25.7 million weights)."""
    flat_theta, flat_v = theta.reshape(-1), v.reshape(-1)
    for start in range(0, flat_theta.size, _CHUNK):
        flat_theta[start:start + _CHUNK] -= lr * flat_v[start:start + _CHUNK]


class SGD:
    """SGD with heavy-ball momentum, updating the parameter arrays in place.

    For each parameter theta with gradient g, at every ``step``::

        g <- g + weight_decay * theta        (only when weight_decay > 0)
        v <- momentum * v + g                (v starts at 0)
        theta <- theta - lr * v

    With momentum 0 this is plain SGD, theta <- theta - lr * g. ``lr`` may be changed between
    steps (learning-rate schedules). All arithmetic stays in the parameters' dtype. On CuPy the
    three lines are one fused kernel per parameter.
    """

    def __init__(self, params: dict, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        if not lr > 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"weight decay must be >= 0, got {weight_decay}")
        self.params = params
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.velocity = {name: get_array_module(p).zeros_like(p) for name, p in params.items()}

    def step(self, grads: dict) -> None:
        """Apply one update from ``grads`` (same keys as the parameters)."""
        missing = set(self.params) - set(grads)
        if missing:
            raise KeyError(f"no gradient for parameters: {sorted(missing)}")
        for name, theta in self.params.items():
            g = grads[name]
            kernels = gpu_kernels(get_array_module(theta))
            if kernels is not None:
                kernels.sgd_momentum(theta, self.velocity[name], g, self.lr, self.momentum,
                                     self.weight_decay)
                continue
            if self.weight_decay:
                g = g + self.weight_decay * theta
            v = self.velocity[name]
            v *= self.momentum
            v += g
            _subtract_scaled(theta, v, self.lr)

    def state_dict(self) -> dict:
        """Hyper-parameters and velocities (as NumPy arrays), for checkpoints."""
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "velocity": {name: to_numpy(v) for name, v in self.velocity.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.lr = float(state["lr"])
        self.momentum = float(state["momentum"])
        self.weight_decay = float(state["weight_decay"])
        for name, v in state["velocity"].items():
            if name not in self.velocity or self.velocity[name].shape != v.shape:
                raise ValueError(f"optimizer state does not match the model at {name!r}")
            xp = get_array_module(self.velocity[name])
            self.velocity[name][...] = xp.asarray(v, dtype=self.velocity[name].dtype)
