"""Counter-based random numbers: the same numbers on NumPy and CuPy, from two integers of state.

The i-th number of stream ``key`` is the i-th output of a SplitMix64 generator seeded with
``key`` (Steele, Lea and Flood, 2014), which can be computed for every i at once::

    z = key + (i + 1) * 0x9E3779B97F4A7C15          (mod 2^64)
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB
    z = z ^ (z >> 31)
    u = (z >> 40) / 2^24                             (a float32 in [0, 1))

Integer arithmetic is exact on both backends, so dropout masks are bit-identical on the CPU
and the GPU, are drawn where the activations live (no host-to-device copy per step), and a
checkpoint only needs (seed, counter) to resume with the very same masks.
"""
from __future__ import annotations

import numpy as np

from .backend import get_array_module, gpu_kernels

GAMMA = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
MASK64 = (1 << 64) - 1


def mix64(z: int) -> int:
    """SplitMix64's output function on a Python int (the slow, obvious reference)."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    return z ^ (z >> 31)


def stream_key(seed: int, counter: int) -> int:
    """The key of the ``counter``-th stream of ``seed``, a 64-bit integer."""
    return mix64(mix64(int(seed) + GAMMA) + (int(counter) + 1) * GAMMA)


def uniform(xp, shape, key: int):
    """float32 uniforms in [0, 1) of the stream ``key``, on the array module ``xp``."""
    size = int(np.prod(shape))
    kernels = gpu_kernels(xp)
    if kernels is not None:
        return kernels.splitmix_uniform(size, key).reshape(shape)
    with np.errstate(over="ignore"):
        z = np.arange(1, size + 1, dtype=np.uint64)
        z *= np.uint64(GAMMA)
        z += np.uint64(key)
        z ^= z >> np.uint64(30)
        z *= np.uint64(MIX1)
        z ^= z >> np.uint64(27)
        z *= np.uint64(MIX2)
        z ^= z >> np.uint64(31)
    u = (z >> np.uint64(40)).astype(np.float32)
    u *= np.float32(1.0 / (1 << 24))
    return u.reshape(shape)


def keep_mask(like, p: float, key: int):
    """Inverted-dropout mask shaped like ``like``: 1/(1-p) where the uniform is >= p, else 0,
    in ``like``'s dtype and on its backend."""
    xp = get_array_module(like)
    kernels = gpu_kernels(xp)
    if kernels is not None:
        return kernels.dropout_mask(like.shape, like.dtype, p, key)
    u = uniform(xp, like.shape, key)
    scale = like.dtype.type(1.0 / (1.0 - p))
    return (u >= np.float32(p)).astype(like.dtype) * scale
