"""Test helpers: the command line in real processes (locks and signals only mean something
between processes), and places a process cannot write even when the tests run as root."""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_PR_CAPBSET_DROP, _CAP_DAC_OVERRIDE = 24, 1


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", MPLBACKEND="agg")


def _obey_permission_bits() -> None:
    """preexec_fn: drop CAP_DAC_OVERRIDE, so even root is refused by a folder's mode bits
    (root owns the test folders, and their owner bits then apply)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_CAPBSET_DROP, _CAP_DAC_OVERRIDE, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def cli(*args, obey_permissions: bool = False, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run ``python -m mura_core ARGS`` to its end. ``obey_permissions``: the process cannot
    write into a folder made read-only with chmod, even when the tests run as root."""
    preexec = None
    if obey_permissions and os.geteuid() == 0:
        preexec = _obey_permission_bits
    try:
        return subprocess.run([sys.executable, "-m", "mura_core", *map(str, args)], cwd=REPO,
                              env=_env(), capture_output=True, text=True, timeout=timeout,
                              preexec_fn=preexec, check=False)
    except subprocess.SubprocessError as exc:
        if preexec is None or isinstance(exc, subprocess.TimeoutExpired):
            raise
        pytest.skip(f"running as root and cannot drop CAP_DAC_OVERRIDE: {exc}")


def start_cli(*args) -> subprocess.Popen:
    """Start ``python -m mura_core ARGS``; the caller waits for it (or kills it)."""
    return subprocess.Popen([sys.executable, "-m", "mura_core", *map(str, args)], cwd=REPO,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, proc: subprocess.Popen | None = None, timeout: float = 90, what: str = ""):
    """Poll ``condition()`` until it is truthy (its value); fail when ``proc`` ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the process ended (status {proc.returncode}) before {what}: {err[-2000:]}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def history_of(folder: Path) -> dict | None:
    """history.json of a run folder, or None while there is none (it is written atomically)."""
    try:
        return json.loads((folder / "history.json").read_text())
    except FileNotFoundError:
        return None


def one_error_line(stderr: str) -> str:
    """The error of a refused command: one line ``error: ...``, the last on stderr (a cache
    build may have warned about skipped files before), and no traceback."""
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert "Traceback" not in stderr and errors == lines[-1:], stderr
    return errors[0]
