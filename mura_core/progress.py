"""Progress bars that suit where they are seen: every bar of the project comes from ``bar``.

- In a live Jupyter frontend (JupyterLab, Jupyter Notebook): tqdm's notebook widget.
- On a terminal: tqdm's text bar, redrawn in place.
- Anywhere else (a CI log, a file, a pipe, a batch kernel of the report pipeline): plain
  lines, one every ``LOG_SECONDS`` and one at the end, never carriage returns, which a log
  shows as one endless line.

``BATCH_ENV`` marks the kernels the report pipeline starts under papermill: they have no
widget frontend (a widget there is a line of text in the PDF), so they count as "elsewhere".
"""
from __future__ import annotations

import os
import sys

#: Set (to anything but "") in the environment of kernels that run in batch (the report
#: pipeline's papermill runs): no live widgets there.
BATCH_ENV = "MURA_CORE_BATCH"
#: Seconds between two lines of a bar written to a log.
LOG_SECONDS = 30.0


def live_frontend() -> bool:
    """Whether this process is a Jupyter kernel with a person's frontend (JupyterLab, Jupyter
    Notebook), not a batch run (``BATCH_ENV``), a terminal IPython or plain Python."""
    if os.environ.get(BATCH_ENV):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class LogLines:
    """A file for tqdm that turns each redraw into a line of its own: tqdm writes "\\r" and the
    bar's text; this writes the text and "\\n" (and nothing for an empty redraw)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip("\n")
        if text.strip():
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def bar(*, total=None, initial: int = 0, desc: str = "", unit: str = "it", disable: bool = False,
        stream=None, **options):
    """A tqdm bar for ``total`` items, in the form that suits where it is seen (the module
    docstring); ``stream``: where a text bar goes (default: standard error)."""
    stream = sys.stderr if stream is None else stream
    settings = dict(total=total, initial=initial, desc=desc, unit=unit, disable=disable, **options)
    if live_frontend():
        from tqdm.notebook import tqdm

        return tqdm(**settings)
    from tqdm import tqdm

    if getattr(stream, "isatty", lambda: False)():
        return tqdm(file=stream, dynamic_ncols=True, **settings)
    return tqdm(file=LogLines(stream), ncols=100, ascii=True, mininterval=LOG_SECONDS,
                maxinterval=LOG_SECONDS, **settings)
