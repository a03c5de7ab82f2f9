"""One task function over many tasks, in worker processes, with a progress bar.

Both slow passes over the data use it: the cache build (decode every image) and the synthetic
generator (draw every image). Results come back in task order. Below ``inline_below`` tasks,
or with one worker, the tasks run in this process: a pool costs more than it saves there.

The workers are forked (they start in milliseconds and need no ``__main__`` guard in scripts
or notebooks). A worker that dies (killed, out of memory, SIGBUS on a full disk) breaks the
pool (``BrokenProcessPool``) instead of leaving it waiting for the results it held; when the
caller stops before the end (a signal, an error), the workers are killed at once, not waited
for. SIGTERM keeps its default action in a worker, so it ends even inside a decoder's C code;
Ctrl+C, which the terminal sends to the whole process group, is the main process's to act on.
"""
from __future__ import annotations

import concurrent.futures
import itertools
import multiprocessing
import signal
from collections.abc import Callable, Iterator, Sequence

from ..progress import bar as progress_bar
from ..resources import usable_cores

INLINE_BELOW = 48  # tasks
STOP_WAIT = 10.0  # seconds for a stopped pool to fail its futures


def map_in_processes(func: Callable, tasks: Sequence, workers: int | None = None, *,
                     initializer: Callable | None = None, initargs: tuple = (),
                     progress: bool = True, desc: str = "", unit: str = "img",
                     inline_below: int = INLINE_BELOW) -> Iterator:
    """Yield ``func(task)`` for every task, in order. ``workers`` None: one per usable core.
    ``initializer(*initargs)`` runs once in each worker (or once here when inline)."""
    n_workers = usable_cores() if workers is None else int(workers)
    with progress_bar(total=len(tasks), desc=desc, unit=unit, disable=not progress,
                      smoothing=0.1) as bar:
        if n_workers <= 1 or len(tasks) < inline_below:
            if initializer is not None:
                initializer(*initargs)
            for task in tasks:
                yield func(task)
                bar.update(1)
            return
        yield from _pooled(func, tasks, n_workers, initializer, initargs, bar)


def _start_worker(initializer: Callable | None, initargs: tuple) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)


def _run_chunk(func: Callable, chunk: list) -> list:
    return [func(task) for task in chunk]


def _pooled(func, tasks, n_workers, initializer, initargs, bar):
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    size = max(1, min(64, len(tasks) // (n_workers * 8)))
    pool = concurrent.futures.ProcessPoolExecutor(
        n_workers, mp_context=context, initializer=_start_worker,
        initargs=(initializer, initargs))
    remaining = iter(tasks)
    futures = [pool.submit(_run_chunk, func, chunk)
               for chunk in iter(lambda: list(itertools.islice(remaining, size)), [])]
    finished = False
    try:
        for future in futures:
            for result in future.result():
                yield result
                bar.update(1)
        finished = True
    finally:
        if not finished:
            # Python 3.11's pool has no public way to stop its workers. Once they are killed,
            # the pool fails every future it still holds (BrokenProcessPool): wait for that
            # rather than cancel them, which races with it and prints a thread's traceback
            # (CPython gh-107219).
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.kill()
            concurrent.futures.wait(futures, timeout=STOP_WAIT)
        pool.shutdown(wait=True, cancel_futures=True)
