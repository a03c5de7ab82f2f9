"""Shared fixtures: every layer test runs on each available backend (NumPy always, CuPy where
it imports and sees a GPU; the CuPy cases are skipped, with the reason, only where it is absent).
``MURA_TEST_BACKEND=cupy`` makes the model-level tests build their models on CuPy as well."""
import os

import numpy as np
import pytest

from mura_core.nn.backend import cupy_available

os.environ.setdefault("MPLBACKEND", "agg")

BACKENDS = [
    "numpy",
    pytest.param("cupy", marks=pytest.mark.skipif(not cupy_available(),
                                                  reason="CuPy with a CUDA device is not available")),
]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def xp(backend):
    if backend == "cupy":
        import cupy
        return cupy
    return np


@pytest.fixture
def model_backend():
    """Backend for model-level tests: numpy unless MURA_TEST_BACKEND says otherwise."""
    return os.environ.get("MURA_TEST_BACKEND", "numpy")
