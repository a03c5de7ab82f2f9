"""The report pipeline: data, cache, the notebooks (papermill), then the report.

``python -m mura_core report`` (and ``make report``) runs ``run_report``:

1. Data: the MURA folder given with ``--data``, or, when none is given, a synthetic set with
   MURA's layout generated under ``WORK/data/`` (said so on the terminal and in the report).
2. The preprocessing cache under ``WORK/cache/``.
3. The notebooks of ``notebooks/`` in order, executed with papermill; each gets the data
   folder, profile, backend, seed, output folders and its knobs from the profile as
   parameters. Executed copies go to ``OUT/executed/``. With ``scheduler`` (``--scheduler
   ADDRESS|local:N``) their training runs go to a Dask cluster (``cluster.py``), connected
   (or started) before anything is written. A failing notebook stops the
   pipeline with the notebook, the cell and the error named; its executed copy (with the
   traceback) is kept.
4. ``OUT/results/provenance.json``, then ``OUT/report.html`` and ``OUT/report.pdf``
   (nbconvert, XeLaTeX, no code shown; see ``document.py``).

Before any of it, the three folders are checked for writability and locked (``locks``: a
second report on them is refused, naming the first). Steps 3 and 4 write into staging
folders, published together only when all succeeded (``workspace.stage`` / ``publish``): a
failed build leaves the last good report, its results and figures intact.

Where things go (defaults for ``make report``): ``OUT = report/``, figures in ``figures/``
(PNG + PDF, one pair per figure), the numbers of each notebook in ``OUT/results/NAME.json``,
models and training runs under ``WORK/models`` and ``WORK/runs`` (``WORK = .``).

A notebook run by hand (JupyterLab) calls ``open_notebook`` with its parameters; paths left
at ``None`` take these same defaults, and the synthetic set and cache are built if missing.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
import unittest.mock
from dataclasses import dataclass, field
from pathlib import Path

from ..experiments import profiles as profiles_mod
from ..experiments.executors import make_executor, parse_scheduler
from ..experiments.profiles import Profile
from ..files import check_writable_folder, write_json
from ..locks import hold_folder
from ..progress import BATCH_ENV
from ..signals import before_stopping
from .provenance import provenance
from .workspace import (
    NOTEBOOKS_DIR,
    DataSource,
    Paths,
    PipelineError,
    build_cache,
    prepare_data,
    publish,
    stage,
)

REPORT_TITLE = "Normal vs abnormal radiographs (MURA v1.1) with a CNN written from scratch"


@dataclass
class NotebookRun:
    name: str
    executed: Path
    wall_s: float


def notebook_parameters(name: str, profile: Profile, source: DataSource | None, backend: str,
                        seed: int, paths: Paths, scheduler: str | None = None) -> dict:
    """The papermill parameters of notebook ``name``: common ones plus its profile knobs."""
    params = {
        "data_dir": None if source is None else str(source.root),
        "profile": profile.name,
        "backend": backend,
        "seed": seed,
        "out_dir": str(paths.out),
        "figures_dir": str(paths.figures),
        "work_dir": str(paths.work),
        "scheduler": scheduler,
    }
    params.update(profile.notebook_knobs(name))
    return params


def _local_kernel_manager(folder: str, stderr: int | None = None):
    """A kernel manager class whose kernels talk over Unix sockets in ``folder`` and write
    their stderr to the file descriptor ``stderr`` (None: this process's).

    Kernel and pipeline always run on one machine, so IPC is the natural transport; over TCP
    (jupyter_client's default) ipykernel warns on every start that the traffic is not
    encrypted. The socket path is absolute: the kernel runs in the notebook's folder."""
    from jupyter_client import AsyncKernelManager
    from traitlets import default

    class LocalKernelManager(AsyncKernelManager):
        @default("transport")
        def _default_transport(self):
            return "ipc"

        @default("ip")
        def _default_ip(self):
            return str(Path(folder) / "kernel")

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            if stderr is not None:
                kw.setdefault("stderr", stderr)
            return await super()._async_launch_kernel(kernel_cmd, **kw)

    return LocalKernelManager


class KernelStderr:
    """A pipe for a kernel's stderr, whose lines a thread passes on to this process's stderr
    until ``quiet()``. A kernel shut down in the middle of a cell (the report stopped by
    Ctrl+C or SIGTERM) logs its closing sockets' errors (ZMQError) there, the notebook client
    logs that the kernel died, and the cell's task, cut short, is logged as "never retrieved"
    when collected: none says anything to whoever stopped the report, who is told
    "interrupted"."""

    def __init__(self):
        read_fd, self.fd = os.pipe()
        self.quieted = False
        self._thread = threading.Thread(target=self._pass_on, args=(read_fd,), daemon=True,
                                        name="mura-kernel-stderr")
        self._thread.start()

    def _pass_on(self, read_fd: int) -> None:
        with os.fdopen(read_fd, "rb") as pipe:
            for line in pipe:
                if not self.quieted:
                    sys.stderr.write(line.decode(errors="replace"))
                    sys.stderr.flush()

    def quiet(self) -> None:
        """Called as the report stops: nothing more from the kernel, nor from the loggers of
        the notebook client ("Kernel died while waiting for execute reply") or asyncio."""
        self.quieted = True
        logging.disable(logging.CRITICAL)

    def close(self) -> None:
        """Close this end of the pipe; the thread ends when the kernel's end is closed too."""
        os.close(self.fd)
        self._thread.join(timeout=2)


def batch_kernels():
    """Kernels started inside are batch runs (``progress.BATCH_ENV``): papermill has no widget
    frontend, so they show no live widgets (the same numbers, plain outputs)."""
    return unittest.mock.patch.dict(os.environ, {BATCH_ENV: "1"})


def execute_notebook(source: Path, executed: Path, parameters: dict,
                     progress: bool = False) -> float:
    """Run one notebook with papermill into ``executed``; the wall time in seconds.

    On an error in a cell, raises PipelineError naming the notebook, the cell (number and
    first line) and the error; papermill has already saved the executed copy, which shows
    the traceback.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    executed.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    kernel_stderr = KernelStderr()
    try:
        with tempfile.TemporaryDirectory(prefix="mura-kernel-") as sockets, \
                before_stopping(kernel_stderr.quiet), batch_kernels():
            papermill.execute_notebook(
                str(source), str(executed), parameters=parameters, kernel_name="python3",
                progress_bar=progress, cwd=str(source.parent), log_output=False,
                kernel_manager_class=_local_kernel_manager(sockets, kernel_stderr.fd),
            )
    except PapermillExecutionError as exc:
        first_line = next((ln for ln in exc.source.splitlines() if ln.strip()), "").strip()
        raise PipelineError(
            f"notebook {source.name} failed in cell {exc.cell_index + 1} "
            f"(In [{exc.exec_count}]: {first_line!r}): {exc.ename}: {exc.evalue}\n"
            f"The executed copy with the full traceback is {executed}"
        ) from None
    finally:
        kernel_stderr.close()
    return time.perf_counter() - t0


def notebook_paths(notebooks_dir: Path | None = None, names=None) -> list[Path]:
    """The notebooks to run, in order (default: all of ``profiles.NOTEBOOKS``)."""
    folder = Path(notebooks_dir) if notebooks_dir else NOTEBOOKS_DIR
    names = names or profiles_mod.NOTEBOOKS
    paths = [folder / (n if n.endswith(".ipynb") else n + ".ipynb") for n in names]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise PipelineError(f"notebook(s) not found: {', '.join(missing)}")
    return paths


def run_notebooks(sources: list[Path], paths: Paths, parameters_of, progress: bool = False,
                  log=print) -> list[NotebookRun]:
    """Execute ``sources`` in order; ``parameters_of(name)`` gives each one's parameters."""
    runs = []
    for i, source in enumerate(sources, 1):
        name = source.stem
        executed = paths.executed / source.name
        log(f"[{i}/{len(sources)}] {name} ...", flush=True)
        wall = execute_notebook(source, executed, parameters_of(name), progress=progress)
        log(f"[{i}/{len(sources)}] {name} done in {wall:.0f} s -> {executed}")
        runs.append(NotebookRun(name=name, executed=executed, wall_s=wall))
    return runs


@dataclass
class ReportResult:
    runs: list[NotebookRun]
    outputs: dict[str, Path] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)


def import_report_stack():
    """The document module, after importing everything that builds the report (papermill,
    nbformat, nbconvert), so a missing or broken Jupyter stack stops the report before any
    work rather than after the notebooks have run."""
    try:
        import nbconvert  # noqa: F401
        import papermill  # noqa: F401

        from . import document
    except Exception as exc:  # ImportError, or a package that fails while importing
        raise PipelineError(
            f"the report's Jupyter stack does not import ({exc.__class__.__name__}: {exc}); "
            "install it with `pip install -e '.[report]'` (make report does)") from None
    return document


def choose_profile(profile: str | Profile | None, backend: str) -> Profile:
    """The profile asked for (by name or itself), or, when none is, ``full`` on CuPy and
    ``quick`` on NumPy."""
    if isinstance(profile, Profile):
        return profile
    if profile is None:
        profile = profiles_mod.GPU_PROFILE if backend == "cupy" else profiles_mod.DEFAULT_PROFILE
    return profiles_mod.get_profile(profile)


def run_report(profile: str | Profile | None = None, data=None, backend: str = "numpy",
               seed: int = 0, out=None, figures=None, work=None, notebooks_dir=None,
               only=None, progress: bool | None = None, pdf: bool = True,
               scheduler: str | None = None, log=print) -> ReportResult:
    """Data, cache, notebooks, report: everything ``make report`` does. See module doc.

    ``profile`` None: ``full`` when the backend resolves to CuPy, else ``quick``."""
    from ..nn.backend import resolve_backend

    document = import_report_stack()
    t0 = time.perf_counter()
    backend = resolve_backend(backend)
    prof = choose_profile(profile, backend)
    paths = Paths.make(out, figures, work)
    sources = notebook_paths(notebooks_dir, only)
    for folder, what in paths.places():
        check_writable_folder(folder, what)
    if progress is None:
        progress = sys.stderr.isatty()
    # Before anything is written: a scheduler that does not answer stops the report here.
    cluster = open_cluster(scheduler, backend, progress, log)
    try:
        with contextlib.ExitStack() as locks:
            for folder, what in paths.places():
                locks.enter_context(hold_folder(folder, what))
            log(f"report: profile {prof.name} ({prof.description}), backend {backend}, "
                f"seed {seed}")
            source = prepare_data(data, prof, seed, paths, log=log)
            build_cache(source, prof.input_size, paths, progress=progress, log=log)
            staged = stage(paths, keep_results=only is not None)
            address = None if cluster is None else cluster.address
            runs = run_notebooks(
                sources, staged,
                lambda name: notebook_parameters(name, prof, source, backend, seed, staged,
                                                 address),
                progress=progress, log=log)
            prov = provenance(source, prof, backend, seed, runs,
                              total_s=time.perf_counter() - t0,
                              executor=(make_executor(scheduler, backend=backend) if cluster is None
                                        else cluster).describe())
            write_json(staged.results / "provenance.json", prov)
            t_report = time.perf_counter()
            nb = assemble_report(runs, prov, staged)
            outputs = document.export_report(nb, staged.out, pdf=pdf, log=log)
            publish(staged, paths)
    finally:
        if cluster is not None:
            cluster.close()
    outputs = {kind: paths.out / path.name for kind, path in outputs.items()}
    runs = [NotebookRun(r.name, paths.executed / r.executed.name, r.wall_s) for r in runs]
    log(f"report: built in {time.perf_counter() - t_report:.0f} s: "
        + ", ".join(str(p) for k, p in outputs.items() if k != "ipynb"))
    log(f"report: total {time.perf_counter() - t0:.0f} s")
    return ReportResult(runs=runs, outputs=outputs, provenance=prov)


def open_cluster(scheduler: str | None, backend: str, progress: bool, log=print):
    """The Dask cluster the notebooks train on (``cluster.Cluster``), or None to train in
    their own processes. One cluster serves every notebook: a LocalCluster (``local:N``) is
    started once, and each notebook gets its address. With ``progress``, the runs the
    notebooks hand to it show as a bar on this terminal."""
    address = parse_scheduler(scheduler)
    if address is None:
        return None
    from ..experiments.cluster import RunsBar, connect, follow_progress

    cluster = connect(address, backend=backend, log=log)
    if progress:
        follow_progress(cluster.client, RunsBar())
    return cluster


def assemble_report(runs: list[NotebookRun], prov: dict, paths: Paths):
    """The report notebook: front matter, the executed notebooks' content, provenance."""
    results = {}
    for run in runs:
        path = paths.results / f"{run.name}.json"
        if path.exists():
            results[run.name] = json.loads(path.read_text())
    from . import document
    from .provenance import provenance_section

    front = document.front_matter(prov, results)
    back = provenance_section(prov)
    return document.build_report_notebook([r.executed for r in runs], front, back,
                                            title=REPORT_TITLE)
