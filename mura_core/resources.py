"""What this machine can give a run: the cores this process may use, the memory available,
the open-file limit. Read before any work, so that a run too large for the machine is
refused in one line instead of failing (or swapping) half-way."""
from __future__ import annotations

import numbers
import os
import resource


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; all of them where that is not
    known)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def available_memory() -> int | None:
    """Bytes of memory a new allocation can get without swapping: ``MemAvailable`` of
    /proc/meminfo (Linux), else the free physical pages; None where neither is known."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def open_file_limit() -> int:
    """How many files (sockets and pipes included) this process may hold open at once: the
    soft RLIMIT_NOFILE (``ulimit -n``)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


#: Worker processes per core at most: a decode or a run is CPU-bound, so more only slow each
#: other down (and each holds its own memory).
WORKERS_PER_CORE = 4


def check_worker_count(workers, option: str = "--workers") -> None:
    """ValueError naming ``option`` unless ``workers`` is None (the default) or a whole number
    from 1 to ``WORKERS_PER_CORE`` per usable core."""
    if workers is None:
        return
    cores = usable_cores()
    limit = WORKERS_PER_CORE * cores
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral):
        raise ValueError(f"{option} must be a whole number of worker processes, got {workers!r}")
    if workers < 1:
        raise ValueError(f"{option} must be at least 1 worker process, got {workers}")
    if workers > limit:
        raise ValueError(f"{option} {workers}: at most {limit} worker processes on this machine "
                         f"({WORKERS_PER_CORE} per core on its {cores} core(s); more only slow "
                         f"each other down); use {option} {cores}, one per core")
