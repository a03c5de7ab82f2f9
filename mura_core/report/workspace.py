"""Where a report run reads and writes, and the data it uses.

``Paths``: the report folder (``OUT``: report, executed notebooks, results), the figures
folder, and the work folder (``WORK``: data/, cache/, models/, runs/). ``prepare_data``: the
MURA folder given, or the synthetic set of the profile (generated when missing or out of
date). ``build_cache``: the preprocessing cache at the profile's input size.

A report is built aside and published whole (``stage``, ``publish``): the notebooks, results
and report files of a run go to ``OUT/.building-report/`` and its figures to
``FIGURES/.building-figures/``; only when every step succeeded do ``executed/``,
``results/`` and ``report.*`` replace the previous ones together, and the new figures
replace theirs. A failed or interrupted build leaves the last good report as it was (and
its own files in the staging folders, for the traceback, until the next build).
"""
from __future__ import annotations

import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..experiments.profiles import Profile

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"


class PipelineError(RuntimeError):
    """A step of the report pipeline failed; the message says which and what to do."""


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

    def places(self) -> list[tuple[Path, str]]:
        """The folders a report writes, with what they are called in messages."""
        return [(self.out, "report folder"), (self.figures, "figures folder"),
                (self.work, "work folder")]


#: What a report publishes into OUT, all together.
REPORT_ENTRIES = ("executed", "results", "report.ipynb", "report.html", "report.pdf")
STAGED_REPORT, STAGED_FIGURES, PREVIOUS_REPORT = ".building-report", ".building-figures", ".previous-report"


def stage(paths: Paths, keep_results: bool = False) -> Paths:
    """Empty staging folders for a build (left-overs of an earlier failed build removed);
    the Paths the build writes to. ``keep_results``: start from copies of the current
    ``executed/`` and ``results/`` (a build of some notebooks only reads the others')."""
    staged = Paths(out=paths.out / STAGED_REPORT, figures=paths.figures / STAGED_FIGURES,
                   work=paths.work)
    for folder in (staged.out, staged.figures, paths.out / PREVIOUS_REPORT):
        shutil.rmtree(folder, ignore_errors=True)
    staged.out.mkdir(parents=True)
    staged.figures.mkdir(parents=True)
    if keep_results:
        for name in ("executed", "results"):
            if (paths.out / name).is_dir():
                shutil.copytree(paths.out / name, staged.out / name)
    return staged


def publish(staged: Paths, paths: Paths) -> None:
    """Replace the report in ``paths.out`` (REPORT_ENTRIES, together: an old report.pdf never
    stays beside a new report.html) and the figures with the staged ones. Each move is an
    atomic rename; only a crash between them could leave the old entries in
    ``OUT/.previous-report``."""
    previous = paths.out / PREVIOUS_REPORT
    previous.mkdir()
    for name in REPORT_ENTRIES:
        if (paths.out / name).exists():
            os.replace(paths.out / name, previous / name)
        if (staged.out / name).exists():
            os.replace(staged.out / name, paths.out / name)
    for figure in staged.figures.iterdir():
        os.replace(figure, paths.figures / figure.name)
    for folder in (previous, staged.out, staged.figures):
        shutil.rmtree(folder)


def _default_root() -> Path:
    """The project folder when running from a checkout, else the current folder."""
    if (PROJECT_ROOT / "pyproject.toml").exists():
        return PROJECT_ROOT
    return Path.cwd()


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


def prepare_data(data_dir, profile: Profile, seed: int, paths: Paths, log=print) -> DataSource:
    """The data folder to use; generates the synthetic set when ``data_dir`` is None.

    A given folder written by the synthetic generator (it holds ``SYNTHETIC.json``) is
    reported as synthetic data with the seed it was made from. Generation is skipped when
    the profile's synthetic folder already holds a set made by the same generator version
    with the same seed and counts (the generator is deterministic in them); a set that
    differs in any of them is generated again.
    """
    from .. import data as data_mod
    from ..data.synthetic import marker_mismatch

    prof = profile
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
        log(f"note: profile {prof.name!r} is sized for real MURA; with no --data it runs on a "
            f"synthetic set of MURA's size ({prof.synthetic_train:,} / {prof.synthetic_valid:,} "
            "images), whose numbers say nothing about real radiographs.")
    root = paths.synthetic_data(prof.name, seed)
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
    from ..data.synthetic import read_marker

    return read_marker(root)


def build_cache(source: DataSource, input_size: int, paths: Paths, progress: bool = False,
                log=print):
    """The preprocessing cache of ``source`` at ``input_size`` (built when missing/stale).

    Undecodable files are skipped by the cache; they are counted and named here."""
    from .. import data as data_mod

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




def short_path(path: Path) -> str:
    """``path`` relative to the project (or current) folder when inside it, else absolute:
    a long absolute path does not fit a report table's column."""
    for base in (_default_root(), Path.cwd()):
        try:
            return str(Path(path).resolve().relative_to(base.resolve()))
        except ValueError:
            continue
    return str(path)
