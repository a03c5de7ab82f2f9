"""Shared fixtures: every layer test runs on each available backend (NumPy always, CuPy where
it imports and sees a GPU; the CuPy cases are skipped, with the reason, only where it is absent).
``MURA_TEST_BACKEND=cupy`` makes the model-level tests build their models on CuPy as well."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mura_core.nn.backend import cupy_available

os.environ.setdefault("MPLBACKEND", "agg")
ROOT = Path(__file__).resolve().parent.parent

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


def run_smoke_report(tmp: Path, *options: str) -> subprocess.CompletedProcess:
    """``python -m mura_core report --profile smoke OPTIONS`` into ``tmp`` (report/,
    figures/, work/); asserts that it succeeded."""
    env = dict(os.environ, MPLBACKEND="agg", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "mura_core", "report", "--profile", "smoke", "--no-progress",
           "--out", str(tmp / "report"), "--figures", str(tmp / "figures"),
           "--work", str(tmp / "work"), *options]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="session")
def smoke_report(tmp_path_factory):
    """The smoke report, run once (in this process's environment, local executor) for the
    tests of the pipeline and of the cluster executor: (its folder, its stdout)."""
    tmp = tmp_path_factory.mktemp("smoke")
    return tmp, run_smoke_report(tmp).stdout
