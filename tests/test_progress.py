"""Progress bars where they are seen: redrawn in place on a terminal, plain lines in a log,
never a widget outside a live Jupyter frontend."""
from __future__ import annotations

import io

from mura_core import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_plain_python_process_and_a_batch_kernel_are_not_live_frontends(monkeypatch):
    assert not progress.live_frontend()  # pytest is no Jupyter kernel
    monkeypatch.setenv(progress.BATCH_ENV, "1")
    assert not progress.live_frontend()


def test_a_bar_in_a_log_is_plain_lines_at_the_start_and_the_end():
    log = io.StringIO()
    with progress.bar(total=1000, desc="train baseline", unit="step", stream=log) as bar:
        for _ in range(1000):
            bar.update(1)
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 2, "one line when it starts, one when it ends: the updates came fast"
    assert lines[0].startswith("train baseline:   0%") and "1000/1000" in lines[-1]
    assert all(line.isascii() for line in lines)


def test_a_bar_in_a_log_writes_a_line_per_interval(monkeypatch):
    monkeypatch.setattr(progress, "LOG_SECONDS", 0.0)
    log = io.StringIO()
    with progress.bar(total=5, desc="runs", unit="run", stream=log) as bar:
        for _ in range(5):
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert [f"{i}/5" in line for i, line in enumerate(lines[:6])] == [True] * 6


def test_a_bar_on_a_terminal_is_redrawn_in_place():
    screen = Terminal()
    with progress.bar(total=3, desc="cache", stream=screen, mininterval=0) as bar:
        for _ in range(3):
            bar.update(1)
    assert "\r" in screen.getvalue() and "3/3" in screen.getvalue()


def test_a_disabled_bar_writes_nothing():
    log = io.StringIO()
    with progress.bar(total=3, stream=log, disable=True) as bar:
        bar.update(3)
    assert log.getvalue() == ""
