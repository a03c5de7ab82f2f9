"""Training watched while it runs, in JupyterLab: a progress bar per run (tqdm's notebook
widget) and the loss curves, redrawn at every evaluation point.

Whoever trains a run (this kernel, a worker process, a Dask worker on a shared folder) writes
its ``history.json`` atomically at every evaluation point and checkpoint, so the kernel
follows every run the same way: a thread reads the files that changed, about once a second,
and updates the widgets (widget updates are comm messages, which need no cell to be running
in the thread that sends them).

Only a kernel that a person looks at shows this. The report pipeline marks the kernels it
starts with ``BATCH_ENV`` (papermill has no widget frontend: a widget there is a line of text
in the PDF), and a terminal or a plain Python process is not a Jupyter kernel; both train with
the same code and get the same numbers, since watching reads files and changes nothing.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

from ..progress import bar as progress_bar
from ..progress import live_frontend

#: Seconds between two looks at the runs' history files.
POLL_SECONDS = 1.0


def read_history(folder: Path) -> dict | None:
    """The run's history.json as it stands, or None while there is none (or it does not
    parse: it is written atomically, so that is a run that has not written one yet)."""
    try:
        return json.loads((Path(folder) / "history.json").read_text())
    except (OSError, ValueError):
        return None


def curves_png(histories: dict[str, dict], title: str | None = None) -> bytes:
    """The loss figure of the runs so far as PNG bytes: one run's loss per step with the
    valid loss (``plots.plot_loss``), several runs' smoothed losses and accuracies
    (``plots.plot_runs``). Empty bytes while no run has a step."""
    from ..plots import plot_loss, plot_runs, png_bytes

    started = {name: h for name, h in histories.items() if h and h.get("loss")}
    if not started:
        return b""
    if len(histories) == 1:
        fig = plot_loss(next(iter(started.values())), title=title)
    else:
        fig = plot_runs(started, metric="image_accuracy", x="step", title=title)
    return png_bytes(fig, dpi=80)


def checkpointed_step(folder: Path) -> int | None:
    """The step of the run's checkpoint (what a resumed run goes on from), or None."""
    from ..training.checkpoint import checkpoint_step
    from ..training.runfolder import CHECKPOINT_NAME

    path = Path(folder) / CHECKPOINT_NAME
    try:
        return checkpoint_step(path) if path.exists() else None
    except ValueError:  # damaged: the run trains again from step 0 and says so
        return None


def unfinished(folder: Path, steps: int) -> bool:
    """Whether the run in ``folder`` still has steps to train (none started counts)."""
    history = read_history(folder)
    return not (history and history.get("status") in ("completed", "diverged")
                and history.get("step") in (steps, history.get("total_steps")))


class RunWatch:
    """A context manager that shows the runs in ``folders`` (label -> run folder) as they
    train: one progress bar each (steps done of ``steps[label]``, the last loss) and their
    loss curves, in a live frontend; outside one it does nothing. On the way out the widgets
    show the last state; bars of unfinished runs are marked as stopped (an interrupted run
    resumes from its checkpoint when the cell runs again)."""

    def __init__(self, folders: dict[str, Path], steps: dict[str, int], title: str | None = None,
                 poll_seconds: float = POLL_SECONDS):
        self.folders = {label: Path(folder) for label, folder in folders.items()}
        self.steps = dict(steps)
        self.title = title
        self.poll_seconds = poll_seconds
        self.histories: dict[str, dict | None] = {label: None for label in self.folders}
        self._seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = None
        self.bars: dict = {}
        self.image = None

    def __enter__(self) -> "RunWatch":
        if not live_frontend():
            return self
        import ipywidgets
        from IPython.display import display

        for label, folder in self.folders.items():
            start = checkpointed_step(folder)
            if start is not None:
                print(f"{label}: resumes from its checkpoint at step {start} of "
                      f"{self.steps[label]}")
            self.bars[label] = progress_bar(total=self.steps[label], initial=start or 0, desc=label,
                                            unit="step")
        self.image = ipywidgets.Image(format="png", layout=ipywidgets.Layout(max_width="900px"))
        self.image.add_class("mura-live-curves")
        display(self.image)
        self.poll()
        self._thread = threading.Thread(target=self._follow, daemon=True, name="mura-run-watch")
        self._thread.start()
        return self

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.poll()

    def poll(self) -> bool:
        """Read the history files that changed and update the widgets; True when any had."""
        changed = False
        for label, folder in self.folders.items():
            path = folder / "history.json"
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            if self._seen.get(label) == mtime:
                continue
            history = read_history(folder)
            if history is None:
                continue
            self._seen[label], self.histories[label] = mtime, history
            changed = True
            bar = self.bars.get(label)
            if bar is not None:
                bar.n = min(int(history.get("step", 0)), bar.total)
                if history.get("loss"):
                    bar.set_postfix(loss=f"{history['loss'][-1]:.4f}", refresh=False)
                bar.refresh()
        if changed and self.image is not None:
            png = curves_png(self.histories, self.title)
            if png:
                self.image.value = png
        return changed

    def __exit__(self, kind, exc, tb) -> None:
        self._close(kind)
        if kind is KeyboardInterrupt:  # what was kept, not the worker pool's traceback
            raise KeyboardInterrupt(self.stopped()) from None

    def stopped(self) -> str:
        """What an interrupt left: each unfinished run's checkpoint, and how to go on."""
        kept = []
        for label, folder in self.folders.items():
            step = checkpointed_step(folder)
            if unfinished(folder, self.steps[label]):
                kept.append(f"{label} at step {step} of {self.steps[label]}" if step is not None
                            else f"{label} before its first checkpoint (it starts again)")
        if not kept:
            return "stopped after every run had finished: run the cell again to load them"
        return (f"stopped; the checkpoint{'s' if len(kept) > 1 else ''} kept: {'; '.join(kept)}. "
                "Run the cell again to resume.")

    def _close(self, kind) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=10)
        self.poll()
        for label, bar in self.bars.items():
            kept = checkpointed_step(self.folders[label]) if kind is not None else None
            if bar.n < bar.total and kept is not None:  # tqdm shows an unfinished bar in red
                bar.n = kept
                bar.set_description(f"{label}: stopped, checkpoint of step {kept} kept (run "
                                    "the cell again to resume)")
            bar.close()
