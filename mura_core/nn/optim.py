"""Stochastic gradient descent with momentum and optional (L2) weight decay."""
from __future__ import annotations

from . import backend, plain
from .backend import get_array_module, gpu_kernels, shared_buffer, to_numpy

#: Elements per chunk of the NumPy update: the chunks of theta, v and g (1 MB each) stay in
#: cache through the three operations, instead of three passes over the whole arrays (fc1.W
#: alone holds 25.7 million weights).
_CHUNK = 1 << 18


def _momentum_update(theta, v, g, lr: float, momentum: float, weight_decay: float) -> None:
    """v <- momentum v + (g + weight_decay theta); theta <- theta - lr v, in place, chunk by
    chunk (the same operations in the same order as whole-array ones, so the same numbers)."""
    xp = get_array_module(theta)
    flat_theta, flat_v, flat_g = theta.reshape(-1), v.reshape(-1), g.reshape(-1)
    scratch = xp.empty(min(_CHUNK, flat_theta.size), dtype=theta.dtype)
    for start in range(0, flat_theta.size, _CHUNK):
        part = slice(start, start + _CHUNK)
        vc, tc, gc = flat_v[part], flat_theta[part], flat_g[part]
        tmp = scratch[:vc.size]
        vc *= momentum
        if weight_decay:
            xp.multiply(tc, weight_decay, out=tmp)
            tmp += gc
            vc += tmp
        else:
            vc += gc
        xp.multiply(vc, lr, out=tmp)
        tc -= tmp


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
        # Parameters packed in one buffer (``Layer.pack``): the velocities get one too, at the
        # same offsets, and on a GPU a step is one kernel launch over the three buffers.
        self._packed = shared_buffer(list(params.values()))
        if self._packed is not None:
            buffer, offsets = self._packed
            self._flat_velocity = get_array_module(buffer).zeros_like(buffer)
            self.velocity = {name: self._flat_velocity[o:o + p.size].reshape(p.shape)
                             for (name, p), o in zip(params.items(), offsets)}
        else:
            self.velocity = {name: get_array_module(p).zeros_like(p) for name, p in params.items()}

    def step(self, grads: dict) -> None:
        """Apply one update from ``grads`` (same keys as the parameters)."""
        missing = set(self.params) - set(grads)
        if missing:
            raise KeyError(f"no gradient for parameters: {sorted(missing)}")
        if not backend.FAST_PATHS:
            for name, theta in self.params.items():
                plain.sgd_momentum_step(theta, self.velocity[name], grads[name], self.lr,
                                        self.momentum, self.weight_decay)
            return
        if self._step_packed(grads):
            return
        for name, theta in self.params.items():
            g = grads[name]
            kernels = gpu_kernels(get_array_module(theta))
            if kernels is not None:
                kernels.sgd_momentum(theta, self.velocity[name], g, self.lr, self.momentum,
                                     self.weight_decay)
                continue
            _momentum_update(theta, self.velocity[name], g, self.lr, self.momentum,
                             self.weight_decay)

    def _step_packed(self, grads: dict) -> bool:
        """The whole update as one fused kernel, when on a GPU the parameters, their
        gradients and the velocities lie in three buffers at the same offsets; False (nothing
        done) otherwise. The gaps between the arrays are zero in all three and stay zero."""
        if self._packed is None:
            return False
        buffer, offsets = self._packed
        kernels = gpu_kernels(get_array_module(buffer))
        if kernels is None:
            return False
        packed_params = shared_buffer(list(self.params.values()))
        if packed_params is None or packed_params[0] is not buffer:  # a parameter was replaced
            return False
        packed_grads = shared_buffer([grads[name] for name in self.params])
        if packed_grads is None or packed_grads[1] != offsets \
                or packed_grads[0].size != buffer.size:
            return False
        kernels.sgd_momentum(buffer, self._flat_velocity, packed_grads[0], self.lr,
                             self.momentum, self.weight_decay)
        return True

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
