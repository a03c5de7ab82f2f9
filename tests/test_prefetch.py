"""Prefetcher: the same items in the same order from a background thread, errors handed over,
and no thread left behind however the loop ends."""
import threading
import time

import pytest

from mura_core.data.prefetch import Prefetcher


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "mura-prefetch" and t.is_alive()]


def test_same_items_in_the_same_order():
    with Prefetcher(iter(range(1000)), depth=2) as items:
        assert list(items) == list(range(1000))
    assert not _prefetch_threads()


def test_reads_ahead_while_the_caller_works():
    produced = []

    def source():
        for i in range(3):
            produced.append(i)
            yield i

    with Prefetcher(source(), depth=1) as items:
        assert next(items) == 0
        deadline = time.monotonic() + 5
        while len(produced) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert produced == [0, 1, 2]  # one queued, one produced and waiting to be queued
        assert list(items) == [1, 2]


def test_an_error_of_the_source_reaches_the_caller_after_the_items_before_it():
    def source():
        yield 1
        yield 2
        raise OSError("truncated file")

    items = Prefetcher(source())
    assert next(items) == 1 and next(items) == 2
    with pytest.raises(OSError, match="truncated file"):
        next(items)
    assert not items.alive
    with pytest.raises(StopIteration):
        next(items)


@pytest.mark.parametrize("how", ["break", "exception", "keyboard interrupt"])
def test_leaving_the_loop_early_stops_the_thread_and_runs_the_source_cleanup(how):
    cleaned = threading.Event()

    def source():
        try:
            yield from range(10**9)
        finally:
            cleaned.set()

    error = {"exception": RuntimeError, "keyboard interrupt": KeyboardInterrupt}.get(how)
    with pytest.raises(error) if error else _nothing():
        with Prefetcher(source(), depth=1) as items:
            for i in items:
                if i == 5:
                    if error:
                        raise error("stop")
                    break
    assert cleaned.wait(5)
    assert not _prefetch_threads()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_close_while_the_producer_waits_on_a_full_queue():
    items = Prefetcher(iter(range(100)), depth=1)
    assert next(items) == 0
    time.sleep(0.05)  # the producer now waits to queue 2
    items.close()
    items.close()  # idempotent
    assert not items.alive
    with pytest.raises(StopIteration):
        next(items)


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        Prefetcher([], depth=0)
