"""Backend selection and array movement."""
import numpy as np
import pytest

import mura_core as mc
from mura_core.nn.backend import cupy_available, get_array_module, resolve_backend, to_numpy, xp_for


def test_numpy_backend_and_array_module():
    assert resolve_backend("numpy") == "numpy"
    x = np.zeros(3, dtype=np.float32)
    assert get_array_module(x) is np and to_numpy(x) is x and xp_for("numpy") is np


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown backend 'torch'"):
        resolve_backend("torch")


def test_auto_says_which_backend_it_picked(capsys):
    chosen = resolve_backend("auto")
    assert chosen == ("cupy" if cupy_available() else "numpy")
    assert f"backend auto: using {chosen}" in capsys.readouterr().out


def test_cupy_request_is_either_honoured_or_a_clear_error():
    if cupy_available():
        assert resolve_backend("cupy") == "cupy"
    else:
        with pytest.raises(RuntimeError, match="backend 'cupy' was asked for.*backend='numpy'"):
            resolve_backend("cupy")


def test_to_numpy_round_trips_through_each_backend(xp):
    a = xp.asarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    back = to_numpy(a)
    assert isinstance(back, np.ndarray) and back.dtype == np.float32
    np.testing.assert_array_equal(back, np.arange(6).reshape(2, 3))


def test_a_numpy_model_makes_freed_memory_reusable_without_page_faults():
    """After a NumPy model is built, an array the size of a step's largest buffers, freed
    and allocated again, comes back without faulting its pages in again (glibc, Linux)."""
    import resource

    from mura_core.nn.backend import keep_freed_memory

    keep_freed_memory.cache_clear()
    mc.build_model("baseline", input_size=32, seed=0, backend="numpy")
    assert keep_freed_memory.cache_info().currsize == 1  # called by the model
    if not keep_freed_memory():
        pytest.skip("the C library here has no mallopt (not glibc)")

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    a = np.ones(8 << 20, dtype=np.float32)  # 32 MB
    del a
    before = faults()
    b = np.ones(8 << 20, dtype=np.float32)
    assert faults() - before < 16  # 8,192 pages of 4 KB if they were handed back
    del b
