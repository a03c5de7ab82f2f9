"""Counter-based uniforms: SplitMix64 exactly, uniform in distribution, equal on every backend."""
import numpy as np
import pytest

from mura_core.nn.backend import to_numpy
from mura_core.nn.rng import GAMMA, keep_mask, mix64, stream_key, uniform


def test_uniforms_are_splitmix64_outputs(xp):
    key = stream_key(7, 3)
    u = to_numpy(uniform(xp, (5, 4), key)).reshape(-1)
    reference = [(mix64(key + (i + 1) * GAMMA) >> 40) / 2**24 for i in range(20)]
    assert u.dtype == np.float32
    np.testing.assert_array_equal(u, np.array(reference, dtype=np.float32))


def test_uniforms_are_uniform_and_streams_independent():
    u = uniform(np, (1_000_000,), stream_key(0, 0))
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.002 and abs(u.std() - 12 ** -0.5) < 0.002
    assert abs((u < 0.3).mean() - 0.3) < 0.002
    hist = np.histogram(u, bins=20, range=(0, 1))[0]
    assert hist.min() > 0.97 * 50_000 and hist.max() < 1.03 * 50_000
    other = uniform(np, (1_000_000,), stream_key(0, 1))
    assert abs(np.corrcoef(u, other)[0, 1]) < 0.005
    assert len({stream_key(s, c) for s in range(5) for c in range(100)}) == 500


@pytest.mark.parametrize("dtype,p", [(np.float32, 0.25), (np.float64, 0.3)])
def test_keep_mask_scales_kept_units_and_keeps_dtype(xp, dtype, p):
    like = xp.zeros((64, 1000), dtype=dtype)
    mask = to_numpy(keep_mask(like, p, stream_key(1, 0)))
    assert mask.dtype == dtype
    assert set(np.unique(mask)) == {0.0, dtype(1 / (1 - p))}
    assert abs((mask == 0).mean() - p) < 0.01
    # the same units on every backend: the uniforms are compared with p in float32
    u = uniform(np, (64, 1000), stream_key(1, 0))
    np.testing.assert_array_equal(mask != 0, u >= np.float32(p))
    np.testing.assert_array_equal(mask, keep_mask(np.zeros((64, 1000), dtype), p, stream_key(1, 0)))
