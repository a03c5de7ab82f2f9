"""Where the report's numbers come from: data, profile, backend and device, the executor
that trained the runs, seed, package versions, git commit, and the wall time of every
notebook."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from ..experiments.executors import LocalExecutor
from ..experiments.profiles import Profile
from ..formatting import duration
from ..nn.backend import device_name
from .tables import table_block
from .workspace import PROJECT_ROOT, DataSource, short_path


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
    from importlib import metadata

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


def provenance(source: DataSource, profile: Profile, backend: str, seed: int,
               runs: list, total_s: float | None = None, executor: dict | None = None) -> dict:
    """Where the report's numbers come from, as a JSON-ready dict. ``executor``: the
    ``describe()`` of the executor that trained the runs (None: the local one)."""
    return {
        "data_source": source.label,
        "data_root": short_path(source.root),
        "synthetic": source.synthetic,
        "profile": profile.name,
        "profile_why": profile.why,
        "input_size": profile.input_size,
        "backend": backend,
        "device": device_name(backend),
        "cpu_count": os.cpu_count(),
        "executor": executor or LocalExecutor().describe(),
        "seed": seed,
        "versions": package_versions(backend),
        "git_commit": git_commit(),
        "notebooks": [{"name": r.name, "wall_s": round(r.wall_s, 1)} for r in runs],
        "total_wall_s": None if total_s is None else round(total_s, 1),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "python -m mura_core " + " ".join(sys.argv[1:]) if sys.argv else "",
    }



def describe_executor(executor: dict | None) -> str:
    """"local (...)", "2 worker processes ..." or "Dask, 2 workers at tcp://...": who trained
    the runs."""
    if not executor or executor.get("executor") == "local":
        return "local: one run after another in each notebook's process"
    if executor.get("executor") == "processes":
        return (f"{executor['workers']} worker processes on this machine, each run on "
                f"{executor.get('blas_threads', 1)} BLAS thread(s)")
    where = f"`{executor.get('address')}`"
    if str(executor.get("scheduler", "")).startswith("local:"):
        where += f" (a LocalCluster started for the report, {executor['scheduler']})"
    return f"Dask, {executor.get('workers')} worker(s), scheduler {where}"


def provenance_section(prov: dict) -> list:
    """The provenance table (data, backend, device, seed, versions, commit, wall times)."""
    rows = [
        {"item": "data source", "value": prov.get("data_source")},
        {"item": "data folder", "value": f"`{prov.get('data_root')}`"},
        {"item": "profile", "value": f"{prov.get('profile')} "
                                     f"({prov.get('input_size')}x{prov.get('input_size')} input)"},
        {"item": "backend and device", "value": f"{prov.get('backend')} on {prov.get('device')}"
                                                f" ({prov.get('cpu_count')} CPU cores)"},
        {"item": "executor of the training runs", "value": describe_executor(prov.get("executor"))},
        {"item": "seed", "value": str(prov.get("seed"))},
        {"item": "git commit", "value": prov.get("git_commit")},
        {"item": "generated", "value": prov.get("generated")},
    ]
    rows += [{"item": f"version of {name}", "value": version}
             for name, version in prov.get("versions", {}).items()]
    rows += [{"item": f"wall time of {nb['name']}", "value": duration(nb["wall_s"])}
             for nb in prov.get("notebooks", [])]
    if prov.get("total_wall_s") is not None:
        rows.append({"item": "wall time of the whole pipeline (to the report build)",
                     "value": duration(prov["total_wall_s"])})
    return ["# Provenance\n\nWhere the numbers of this report come from.",
            table_block(rows, {"item": "item", "value": "value"}, align={"value": "l"})]
