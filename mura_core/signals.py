"""Stopping cleanly: Ctrl+C (SIGINT) and SIGTERM (what ``kill``, a job scheduler or a
container stop sends) both become ``Stopped``, a KeyboardInterrupt that knows its signal, so
every ``except KeyboardInterrupt`` and ``finally`` runs for both; the command line then exits
with 128 + the signal number (130, 143), the shell's own convention.

``StopDeferral`` (the trainer's loop): the first signal only sets ``requested``, so a step is
never cut in half; the loop checkpoints and raises between steps. A second signal raises at
once (``forced``), wherever the loop is.

``sigterm_raises`` (a whole command): SIGTERM raises Stopped where the program is, as Ctrl+C
raises KeyboardInterrupt; locks are released and temp files removed on the way out. A process
started with SIGINT ignored (what a shell script does to the jobs it starts in the
background) gets a handler for it too, so ``kill -INT`` stops every command alike.

``before_stopping(callback)``: a SIGINT or SIGTERM calls ``callback()`` first, at once, then
does what it did before (the report quiets its kernel that way before the stop unwinds).

All three only act in the main thread of the process that installed them: a worker forked from it
(the cache build's process pool) gets the default action back, so the pool's own SIGTERM on
shutdown still ends a worker quietly.
"""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """The run was stopped by ``signum`` (SIGINT: Ctrl+C, or SIGTERM)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def exit_status(exc: BaseException) -> int:
    """128 + the signal that stopped the run: 130 for Ctrl+C, 143 for SIGTERM."""
    return 128 + getattr(exc, "signum", signal.SIGINT)


def _in_worker(owner: int, signum: int) -> bool:
    """True in a process forked from ``owner``: it gets the default action of ``signum``."""
    if os.getpid() == owner:
        return False
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return True


def _restore(signum: int, previous) -> None:
    if previous is None:  # a handler not installed from Python: put the default back
        previous = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
    signal.signal(signum, previous)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class StopDeferral:
    """While active, the first SIGINT or SIGTERM sets ``requested`` (the signal number)
    instead of raising; a second one raises Stopped at once and sets ``forced``."""

    def __init__(self):
        self.requested: int | None = None
        self.forced = False
        self._previous: dict[int, object] = {}
        self._owner = os.getpid()

    def _handler(self, signum, frame):
        if _in_worker(self._owner, signum):
            return
        if self.requested is not None:
            self.forced = True
            raise Stopped(signum)
        self.requested = signum

    def __enter__(self):
        if _main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            _restore(signum, previous)
        self._previous.clear()
        return False


@contextmanager
def sigterm_raises():
    """SIGTERM raises Stopped(SIGTERM) in this process for the ``with`` block (main thread),
    and SIGINT raises Stopped(SIGINT) where it was ignored when the process started."""
    if not _main_thread():
        yield
        return
    owner = os.getpid()

    def handler(signum, frame):
        if not _in_worker(owner, signum):
            raise Stopped(signum)

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, handler)}
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        for signum, handler_before in previous.items():
            _restore(signum, handler_before)


@contextmanager
def before_stopping(callback):
    """For the ``with`` block (main thread): a SIGINT or SIGTERM first calls ``callback()``,
    then does what it did before: the handler installed before, or raise Stopped where that
    was the default action; an ignored signal stays ignored (and calls nothing)."""
    if not _main_thread():
        yield
        return
    previous: dict[int, object] = {}

    def handler(signum, frame):
        before = previous[signum]
        if before is signal.SIG_IGN:
            return
        callback()
        if callable(before):
            return before(signum, frame)
        raise Stopped(signum)

    for signum in STOP_SIGNALS:
        previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, before in previous.items():
            _restore(signum, before)
