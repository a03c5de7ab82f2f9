"""Measurement helpers shared by the benchmarks: step timing, resident memory, machine facts.

Nothing here asserts on a time; tests may call these functions and check the shapes of what
they return, never the numbers.
"""
from __future__ import annotations

import os
import platform
import resource
import statistics
import time


def time_calls(fn, steps: int, warmup: int = 1, sync=None) -> list[float]:
    """Call ``fn()`` ``warmup`` times untimed, then ``steps`` times; seconds of each timed call.

    ``sync`` (optional) is called before starting a clock and before stopping it, so work
    queued on a GPU is inside the interval it belongs to.
    """
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        sync()
        seconds.append(time.perf_counter() - start)
    return seconds


def summarize_ms(seconds: list[float]) -> dict:
    """Median and minimum of step times, in milliseconds, and every step's time."""
    ms = [s * 1e3 for s in seconds]
    return {"median": statistics.median(ms), "min": min(ms), "all": [round(v, 3) for v in ms]}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if platform.system() != "Darwin" else peak / 2**20


def current_rss_mb() -> float:
    """Resident set size of this process now, in MiB (the peak so far where /proc is absent)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mb()


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the system has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def blas_info() -> list[dict]:
    """threadpoolctl's view of the BLAS and OpenMP libraries loaded in this process."""
    from threadpoolctl import threadpool_info

    keep = ("user_api", "internal_api", "version", "num_threads", "architecture",
            "threading_layer", "prefix")
    return [{k: lib.get(k) for k in keep if k in lib} for lib in threadpool_info()]


def blas_threads() -> int:
    """Threads NumPy's BLAS uses now (1 where threadpoolctl sees no BLAS)."""
    threads = [lib["num_threads"] for lib in blas_info() if lib.get("user_api") == "blas"]
    return max(threads) if threads else 1


OPENBLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def machine_info() -> dict:
    """CPU model, cores, Python, NumPy, BLAS and the OpenBLAS-related environment variables."""
    import numpy as np

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas_info(),
        "env": {name: os.environ.get(name) for name in OPENBLAS_ENV},
        "load_average": load_average(),
    }
