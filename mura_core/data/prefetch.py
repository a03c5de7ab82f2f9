"""Read ahead: the items of an iterator produced in a background thread while the caller works.

    with Prefetcher(iterate_batches(...), depth=1) as batches:
        for batch in batches:
            step(batch)          # the next batch is being read and standardized meanwhile

Same items, same order: the thread only runs the iterator ahead of the caller, by at most
``depth`` items waiting in a bounded queue (plus the one being produced). An exception raised by
the iterator is raised again by the caller's ``next``, with its traceback. Leaving the ``with``
block (the end, an early ``break``, an exception, Ctrl+C) stops the thread and waits for it,
so no thread outlives the loop; ``close()`` does the same. The work that overlaps is NumPy and
Pillow code, which releases the GIL.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator

_ITEM, _END, _ERROR = range(3)


class Prefetcher:
    """Iterate ``source`` in a background thread, at most ``depth`` items ahead of the caller."""

    #: How often (seconds) a producer blocked on a full queue checks whether to stop.
    POLL_S = 0.05

    def __init__(self, source: Iterable, depth: int = 1, name: str = "mura-prefetch"):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._produce, args=(iter(source),),
                                        name=name, daemon=True)
        self._thread.start()

    def _produce(self, items: Iterator) -> None:
        try:
            for item in items:
                if not self._put((_ITEM, item)):
                    return
        except BaseException as exc:  # handed to the caller, who decides
            self._put((_ERROR, exc))
            return
        finally:
            close = getattr(items, "close", None)
            if close is not None and self._stop.is_set():
                close()  # a generator stopped early runs its cleanup in this thread
        self._put((_END, None))

    def _put(self, message) -> bool:
        """Queue ``message`` unless told to stop first; True when it was queued."""
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=self.POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == _ITEM:
            return value
        self._done = True
        self._thread.join()
        if kind == _ERROR:
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop the producer and wait for it (idempotent)."""
        self._done = True
        self._stop.set()
        while self._thread.is_alive():
            try:  # free a producer blocked on a full queue
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=self.POLL_S)

    @property
    def alive(self) -> bool:
        """True while the background thread runs."""
        return self._thread.is_alive()

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False
