"""The report pipeline: data, cache, the five notebooks (papermill), then the report.

``python -m mura_core report`` (and ``make report``) runs ``run_report``:

1. Data: the MURA folder given with ``--data``, or, when none is given, a synthetic set with
   MURA's layout generated under ``WORK/data/`` (said so on the terminal and in the report).
2. The preprocessing cache under ``WORK/cache/``.
3. The notebooks of ``notebooks/`` in order, executed with papermill; each gets the data
   folder, profile, backend, seed, output folders and its knobs from the profile as
   parameters. Executed copies go to ``OUT/executed/``. A failing notebook stops the
   pipeline with the notebook, the cell and the error named; its executed copy (with the
   traceback) is kept.
4. ``OUT/results/provenance.json``, then ``OUT/report.html`` and ``OUT/report.pdf``
   (nbconvert, XeLaTeX, no code shown; see ``report.py``).

Where things go (defaults for ``make report``): ``OUT = report/``, figures in ``figures/``
(PNG + PDF, one pair per figure), the numbers of each notebook in ``OUT/results/NAME.json``,
models and training runs under ``WORK/models`` and ``WORK/runs`` (``WORK = .``).

A notebook run by hand (JupyterLab) calls ``open_notebook`` with its parameters; paths left
at ``None`` take these same defaults, and the synthetic set and cache are built if missing.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from . import profiles as profiles_mod
from . import report as report_mod

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
REPORT_TITLE = "Normal vs abnormal radiographs (MURA v1.1) with a CNN written from scratch"


class PipelineError(RuntimeError):
    """A step of the report pipeline failed; the message says which and what to do."""


# --------------------------------------------------------------------------- paths


@dataclass(frozen=True)
class Paths:
    """Where a run reads and writes. ``out``: report, executed notebooks and results;
    ``figures``: PNG/PDF figures; ``work``: data, cache, models and runs."""

    out: Path
    figures: Path
    work: Path

    @classmethod
    def make(cls, out=None, figures=None, work=None) -> "Paths":
        root = _default_root()
        return cls(
            out=Path(out if out is not None else root / "report").resolve(),
            figures=Path(figures if figures is not None else root / "figures").resolve(),
            work=Path(work if work is not None else root).resolve(),
        )

    @property
    def results(self) -> Path:
        return self.out / "results"

    @property
    def executed(self) -> Path:
        return self.out / "executed"

    @property
    def cache(self) -> Path:
        return self.work / "cache"

    @property
    def models(self) -> Path:
        return self.work / "models"

    @property
    def runs(self) -> Path:
        return self.work / "runs"

    def synthetic_data(self, profile: str, seed: int) -> Path:
        return self.work / "data" / f"synthetic-{profile}-seed{seed}"


def _default_root() -> Path:
    """The project folder when running from a checkout, else the current folder."""
    if (PROJECT_ROOT / "pyproject.toml").exists():
        return PROJECT_ROOT
    return Path.cwd()


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DataSource:
    """The data a run uses: a MURA-layout folder, and whether it was generated."""

    root: Path
    synthetic: bool
    seed: int | None = None

    @property
    def label(self) -> str:
        if self.synthetic:
            return f"synthetic data, seed {self.seed}"
        return f"MURA v1.1 at {self.root}"


def prepare_data(data_dir, profile: str, seed: int, paths: Paths, log=print) -> DataSource:
    """The data folder to use; generates the synthetic set when ``data_dir`` is None.

    A given folder written by the synthetic generator (it holds ``SYNTHETIC.json``) is
    reported as synthetic data with the seed it was made from. Generation is skipped when
    the profile's synthetic folder already holds a set made by the same generator version
    with the same seed and counts (the generator is deterministic in them); a set that
    differs in any of them is generated again.
    """
    from . import data as data_mod  # noqa: PLC0415
    from .data.synthetic import marker_mismatch  # noqa: PLC0415

    prof = profiles_mod.get_profile(profile)
    if data_dir is not None:
        root = Path(data_dir).expanduser().resolve()
        if not root.exists():
            raise PipelineError(
                f"MURA folder {root} does not exist. Pass the folder that holds MURA-v1.1 "
                "(or MURA-v1.1 itself) with --data / MURA_DIR, or leave it out to use "
                "synthetic data.")
        marker = _synthetic_marker(root)
        if marker is not None:
            return DataSource(root=root, synthetic=True, seed=marker.get("seed"))
        return DataSource(root=root, synthetic=False)
    if prof.real_data:
        log(f"note: profile {profile!r} is sized for real MURA; with no --data it runs on a "
            "synthetic set, which takes long and means little.")
    root = paths.synthetic_data(profile, seed)
    marker = _synthetic_marker(root)
    mismatch = None if marker is None else marker_mismatch(
        marker, seed, prof.synthetic_train, prof.synthetic_valid)
    if marker is not None and mismatch is None:
        log(f"data: no MURA folder given; using the synthetic set in {root} (seed {seed})")
    else:
        if mismatch is not None:
            log(f"data: the synthetic set in {root} is out of date ({mismatch}); generating it again")
        else:
            log(f"data: no MURA folder given; generating a synthetic set with MURA's layout "
                f"({prof.synthetic_train} train / {prof.synthetic_valid} valid images, seed "
                f"{seed}) in {root}")
        t0 = time.perf_counter()
        data_mod.generate_synthetic(root, n_train=prof.synthetic_train,
                                    n_valid=prof.synthetic_valid, seed=seed,
                                    overwrite=marker is not None)
        log(f"data: generated in {time.perf_counter() - t0:.0f} s")
    return DataSource(root=root, synthetic=True, seed=seed)


def _synthetic_marker(root: Path) -> dict | None:
    """The generator's ``SYNTHETIC.json`` for a set at ``root`` (or its MURA-v1.1), if any."""
    from .data import is_synthetic  # noqa: PLC0415
    from .data.synthetic import MARKER_NAME  # noqa: PLC0415

    if not is_synthetic(root):
        return None
    folder = root if (root / MARKER_NAME).is_file() else root.parent
    return json.loads((folder / MARKER_NAME).read_text())


def build_cache(source: DataSource, input_size: int, paths: Paths, progress: bool = False,
                log=print):
    """The preprocessing cache of ``source`` at ``input_size`` (built when missing/stale).

    Undecodable files are skipped by the cache; they are counted and named here."""
    from . import data as data_mod  # noqa: PLC0415

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", data_mod.SkippedImageWarning)
        # One folder per (data folder, size, mode), named as the data package names it.
        folder = data_mod.default_cache_dir(source.root, input_size, "pad").name
        cache = data_mod.build_cache(source.root, size=input_size, mode="pad",
                                     cache_dir=paths.cache / folder, progress=progress)
    what = "built" if cache.built else "reused"
    log(f"cache: {cache.n_images} images at {input_size}x{input_size} {what} in "
        f"{time.perf_counter() - t0:.1f} s ({cache.cache_dir})")
    if cache.skipped:
        log(f"cache: skipped {len(cache.skipped)} file(s) that cannot be decoded: "
            + "; ".join(f"{path} ({reason.split(';')[0]})" for path, reason in cache.skipped[:5]))
    return cache


# --------------------------------------------------------------------------- notebooks


@dataclass
class NotebookRun:
    name: str
    executed: Path
    wall_s: float


def notebook_parameters(name: str, profile: str, source: DataSource | None, backend: str,
                        seed: int, paths: Paths) -> dict:
    """The papermill parameters of notebook ``name``: common ones plus its profile knobs."""
    params = {
        "data_dir": None if source is None else str(source.root),
        "profile": profile,
        "backend": backend,
        "seed": seed,
        "out_dir": str(paths.out),
        "figures_dir": str(paths.figures),
        "work_dir": str(paths.work),
    }
    params.update(profiles_mod.get_profile(profile).notebook_knobs(name))
    return params


def execute_notebook(source: Path, executed: Path, parameters: dict,
                     progress: bool = False) -> float:
    """Run one notebook with papermill into ``executed``; the wall time in seconds.

    On an error in a cell, raises PipelineError naming the notebook, the cell (number and
    first line) and the error; papermill has already saved the executed copy, which shows
    the traceback.
    """
    import papermill  # noqa: PLC0415
    from papermill.exceptions import PapermillExecutionError  # noqa: PLC0415

    executed.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(source), str(executed), parameters=parameters, kernel_name="python3",
            progress_bar=progress, cwd=str(source.parent), log_output=False,
        )
    except PapermillExecutionError as exc:
        first_line = next((ln for ln in exc.source.splitlines() if ln.strip()), "").strip()
        raise PipelineError(
            f"notebook {source.name} failed in cell {exc.cell_index + 1} "
            f"(In [{exc.exec_count}]: {first_line!r}): {exc.ename}: {exc.evalue}\n"
            f"The executed copy with the full traceback is {executed}"
        ) from None
    return time.perf_counter() - t0


def notebook_paths(notebooks_dir: Path | None = None, names=None) -> list[Path]:
    """The notebooks to run, in order (default: the five of ``profiles.NOTEBOOKS``)."""
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


# --------------------------------------------------------------------------- provenance


def git_commit(root: Path = PROJECT_ROOT) -> str:
    """The checked-out commit (short hash), marked when the tree has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" with uncommitted changes" if dirty.strip() else "")


def package_versions(backend: str = "numpy") -> dict[str, str]:
    """Versions of Python and the packages the results depend on."""
    from importlib import metadata  # noqa: PLC0415

    versions = {"python": platform.python_version()}
    names = ["mura_core", "numpy", "pillow", "matplotlib", "papermill", "nbconvert"]
    if backend == "cupy":
        names.append("cupy-cuda12x")
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance(source: DataSource, profile: str, backend: str, seed: int,
               runs: list[NotebookRun], total_s: float | None = None) -> dict:
    """Where the report's numbers come from, as a JSON-ready dict."""
    from .backend import device_name  # noqa: PLC0415

    return {
        "data_source": source.label,
        "data_root": _short_path(source.root),
        "synthetic": source.synthetic,
        "profile": profile,
        "input_size": profiles_mod.get_profile(profile).input_size,
        "backend": backend,
        "device": device_name(backend),
        "cpu_count": os.cpu_count(),
        "seed": seed,
        "versions": package_versions(backend),
        "git_commit": git_commit(),
        "notebooks": [{"name": r.name, "wall_s": round(r.wall_s, 1)} for r in runs],
        "total_wall_s": None if total_s is None else round(total_s, 1),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "python -m mura_core " + " ".join(sys.argv[1:]) if sys.argv else "",
    }


def _short_path(path: Path) -> str:
    """``path`` relative to the project (or current) folder when inside it, else absolute:
    a long absolute path does not fit a report table's column."""
    for base in (_default_root(), Path.cwd()):
        try:
            return str(Path(path).resolve().relative_to(base.resolve()))
        except ValueError:
            continue
    return str(path)


def write_json(path: Path, obj) -> Path:
    """Write ``obj`` as indented JSON, atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def _json_default(obj):
    import numpy as np  # noqa: PLC0415

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


# --------------------------------------------------------------------------- whole run


@dataclass
class ReportResult:
    runs: list[NotebookRun]
    outputs: dict[str, Path] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)


def run_report(profile: str = profiles_mod.DEFAULT_PROFILE, data=None, backend: str = "numpy",
               seed: int = 0, out=None, figures=None, work=None, notebooks_dir=None,
               only=None, progress: bool | None = None, pdf: bool = True,
               log=print) -> ReportResult:
    """Data, cache, notebooks, report: everything ``make report`` does. See module doc."""
    from .backend import resolve_backend  # noqa: PLC0415

    t0 = time.perf_counter()
    prof = profiles_mod.get_profile(profile)
    backend = resolve_backend(backend)
    paths = Paths.make(out, figures, work)
    if progress is None:
        progress = sys.stderr.isatty()
    log(f"report: profile {prof.name} ({prof.description}), backend {backend}, seed {seed}")
    source = prepare_data(data, profile, seed, paths, log=log)
    build_cache(source, prof.input_size, paths, progress=progress, log=log)
    sources = notebook_paths(notebooks_dir, only)
    runs = run_notebooks(
        sources, paths,
        lambda name: notebook_parameters(name, profile, source, backend, seed, paths),
        progress=progress, log=log)
    prov = provenance(source, profile, backend, seed, runs,
                      total_s=time.perf_counter() - t0)
    write_json(paths.results / "provenance.json", prov)
    t_report = time.perf_counter()
    nb = assemble_report(runs, prov, paths)
    outputs = report_mod.export_report(nb, paths.out, pdf=pdf, log=log)
    log(f"report: built in {time.perf_counter() - t_report:.0f} s: "
        + ", ".join(str(p) for k, p in outputs.items() if k != "ipynb"))
    log(f"report: total {time.perf_counter() - t0:.0f} s")
    return ReportResult(runs=runs, outputs=outputs, provenance=prov)


def assemble_report(runs: list[NotebookRun], prov: dict, paths: Paths):
    """The report notebook: front matter, the executed notebooks' content, provenance."""
    results = {}
    for run in runs:
        path = paths.results / f"{run.name}.json"
        if path.exists():
            results[run.name] = json.loads(path.read_text())
    front = report_mod.front_matter(prov, results)
    back = [report_mod.provenance_section(prov)]
    return report_mod.build_report_notebook([r.executed for r in runs], front, back,
                                            title=REPORT_TITLE)


# --------------------------------------------------------------------------- in a notebook


@dataclass
class NotebookContext:
    """What a notebook needs besides its own knobs: paths, data, and how to show results.

    ``figure`` saves a figure as ``FIGURES/NAME_STEM.png`` and ``.pdf`` and displays the PNG
    with a numbered caption (which says "synthetic data" when it is); ``table`` displays a
    Markdown table with its caption; ``save_results`` writes ``OUT/results/NAME.json``.
    """

    name: str
    profile: str
    backend: str
    seed: int
    settings: dict
    source: DataSource
    paths: Paths
    _figures: int = 0
    _tables: int = 0
    _cache: object = None

    @property
    def synthetic(self) -> bool:
        return self.source.synthetic

    @property
    def number(self) -> str:
        return self.name.split("_", 1)[0].lstrip("0") or "0"

    @property
    def input_size(self) -> int:
        return int(self.settings.get("input_size",
                                     profiles_mod.get_profile(self.profile).input_size))

    @property
    def cache(self):
        """The preprocessing cache at this notebook's input size (built when missing)."""
        if self._cache is None:
            self._cache = build_cache(self.source, self.input_size, self.paths,
                                      log=lambda *a, **k: None)
        return self._cache

    def label(self, text: str) -> str:
        """``text`` with "(synthetic data)" appended when the data is synthetic."""
        return f"{text} (synthetic data)" if self.synthetic else text

    def figure(self, fig, stem: str, caption_text: str, from_data: bool = True):
        """Save ``fig`` (PNG + PDF) under the figures folder, display it with its caption,
        and close it. Returns the PNG path. ``from_data=False`` for a figure that does not
        come from the data set (its caption then does not say "synthetic data")."""
        from IPython.display import Image, Markdown, display  # noqa: PLC0415

        from .plots import save_figure  # noqa: PLC0415

        self._figures += 1
        written = save_figure(fig, self.paths.figures / f"{self.name}_{stem}")
        png = next(p for p in written if Path(p).suffix == ".png")
        _close(fig)
        display(Image(filename=str(png)))
        display(Markdown(report_mod.caption(caption_text, f"Figure {self.number}.{self._figures}",
                                            synthetic=self.synthetic and from_data)))
        return Path(png)

    def table(self, rows: list[dict], columns=None, caption_text: str | None = None,
              formats: dict | None = None, align: dict | None = None,
              from_data: bool = True) -> str:
        """Display ``rows`` as a Markdown table, with a numbered caption above it
        (``from_data`` as for ``figure``)."""
        from IPython.display import Markdown, display  # noqa: PLC0415

        text = report_mod.markdown_table(rows, columns, formats=formats, align=align)
        if caption_text:
            self._tables += 1
            text = report_mod.caption(caption_text, f"Table {self.number}.{self._tables}",
                                      synthetic=self.synthetic and from_data) + "\n\n" + text
        display(Markdown(text))
        return text

    def markdown(self, text: str) -> None:
        from IPython.display import Markdown, display  # noqa: PLC0415

        display(Markdown(text))

    def results_path(self, name: str | None = None) -> Path:
        return self.paths.results / f"{name or self.name}.json"

    def save_results(self, results: dict) -> Path:
        """Write this notebook's numbers (plus its settings and data source) as JSON."""
        payload = {"notebook": self.name, "profile": self.profile, "backend": self.backend,
                   "seed": self.seed, "data_source": self.source.label,
                   "synthetic": self.synthetic, "settings": self.settings, **results}
        return write_json(self.results_path(), payload)

    def load_results(self, name: str) -> dict:
        """The results JSON of an earlier notebook; a clear error when it has not run."""
        path = self.results_path(name)
        if not path.exists():
            raise PipelineError(f"{path} is missing: run notebook {name}.ipynb first "
                                "(or the whole pipeline: python -m mura_core report)")
        return json.loads(path.read_text())


def _close(fig) -> None:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    if plt.fignum_exists(getattr(fig, "number", -1)):
        plt.close(fig)


def open_notebook(name: str, *, data_dir=None, profile: str = profiles_mod.DEFAULT_PROFILE,
                  backend: str = "numpy", seed: int = 0, out_dir=None, figures_dir=None,
                  work_dir=None, **knobs) -> NotebookContext:
    """The context of notebook ``name`` from its parameters.

    Knobs left at None take the profile's values; paths left at None take the defaults of
    ``make report``. Without ``data_dir`` the synthetic set of (profile, seed) is used,
    generated first when it does not exist yet (the pipeline has normally done it).
    """
    from .backend import resolve_backend, seed_all  # noqa: PLC0415

    settings = profiles_mod.notebook_settings(name, profile, **knobs)
    paths = Paths.make(out_dir, figures_dir, work_dir)
    backend = resolve_backend(backend)
    seed_all(seed)
    source = prepare_data(data_dir, profile, seed, paths, log=lambda *a, **k: None)
    return NotebookContext(name=name, profile=profile, backend=backend, seed=int(seed),
                           settings=settings, source=source, paths=paths)


# --------------------------------------------------------------------------- CLI


def add_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="run the notebooks and build report/report.pdf and report.html",
        description="Generate synthetic data when no MURA folder is given, build the cache, "
                    "execute the notebooks with papermill and build the PDF/HTML report.")
    p.add_argument("--profile", default=profiles_mod.DEFAULT_PROFILE,
                   choices=list(profiles_mod.PROFILES), help="run size (default: %(default)s)")
    p.add_argument("--data", default=None, metavar="MURA_DIR",
                   help="MURA-v1.1 folder or its parent; synthetic data when left out")
    p.add_argument("--backend", default="numpy", choices=["numpy", "cupy", "auto"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="report folder (default: report/)")
    p.add_argument("--figures", default=None, help="figures folder (default: figures/)")
    p.add_argument("--work", default=None,
                   help="folder for data/, cache/, models/, runs/ (default: project folder)")
    p.add_argument("--only", nargs="+", default=None, metavar="NOTEBOOK",
                   help="run only these notebooks (e.g. 01_model); the report covers them")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no per-cell progress bar")
    p.add_argument("--no-pdf", dest="pdf", action="store_false", help="HTML report only")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args) -> int:
    try:
        run_report(profile=args.profile, data=args.data, backend=args.backend, seed=args.seed,
                   out=args.out, figures=args.figures, work=args.work, only=args.only,
                   progress=args.progress, pdf=args.pdf)
    except PipelineError as exc:
        print(f"report failed: {exc}", file=sys.stderr)
        return 1
    return 0
