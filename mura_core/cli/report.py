"""``python -m mura_core report``: what ``make report`` runs (see ``report.pipeline``)."""
from __future__ import annotations

from pathlib import Path

from ..experiments import profiles as profiles_mod
from ..nn.backend import BACKENDS
from . import CommandFailed, command, fail


def add_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="run the notebooks and build report/report.pdf and report.html",
        description="Generate synthetic data when no MURA folder is given, build the cache, "
                    "execute the notebooks with papermill and build the PDF/HTML report.")
    p.add_argument("--profile", default=None, choices=list(profiles_mod.PROFILES),
                   help=f"run size (default: {profiles_mod.GPU_PROFILE} when the backend is "
                        f"cupy, else {profiles_mod.DEFAULT_PROFILE})")
    p.add_argument("--data", default=None, metavar="MURA_DIR",
                   help="MURA-v1.1 folder or its parent; synthetic data when left out")
    p.add_argument("--backend", default="numpy", choices=BACKENDS)
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
    p.add_argument("--scheduler", default=None, metavar="ADDRESS|local:N",
                   help="train the runs on a Dask cluster: the address of a running scheduler "
                        "(tcp://host:8786) or local:N to start N worker processes here; "
                        "WORK must be on a folder every worker sees (needs the cluster extra: "
                        "pip install -e '.[cluster]')")
    p.set_defaults(func=command(_report))


def check_report_inputs(args) -> None:
    """The report's inputs, checked before anything starts (exit 2): the seed, the data folder
    when one is given, and the notebooks ``--only`` names."""
    from ..data.mura import find_mura_root
    from ..report.pipeline import PipelineError, notebook_paths
    from ..training.config import check_seed

    check_seed(args.seed)
    if args.data is not None:
        if not Path(args.data).expanduser().exists():
            raise FileNotFoundError(f"--data {args.data}: no such folder; pass the folder that "
                                    "holds MURA-v1.1 (or MURA-v1.1 itself), or leave --data out "
                                    "to use synthetic data")
        find_mura_root(args.data)
    if args.only:
        try:
            notebook_paths(None, args.only)
        except PipelineError as exc:
            raise FileNotFoundError(f"--only: {exc}; choose from "
                                    f"{', '.join(profiles_mod.NOTEBOOKS)}") from None


def _report(args) -> int:
    from ..experiments.cluster import ClusterError
    from ..report.pipeline import PipelineError, run_report

    check_report_inputs(args)
    try:
        run_report(profile=args.profile, data=args.data, backend=args.backend, seed=args.seed,
                   out=args.out, figures=args.figures, work=args.work, only=args.only,
                   progress=args.progress, pdf=args.pdf, scheduler=args.scheduler)
    except ClusterError as exc:  # no Dask, no scheduler, a folder a worker cannot see
        return fail(str(exc))
    except PipelineError as exc:
        raise CommandFailed(f"report failed: {exc}") from None
    return 0
