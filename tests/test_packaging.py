"""environment.yml and pyproject.toml name the same dependencies with the same bounds."""
from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent

# Extras a conda user gets from environment.yml; the others are documented there as optional
# (gpu: cupy matching the user's CUDA; bench: torch for the benchmarks only).
CONDA_EXTRAS = ("report", "cluster", "dev", "lab")
# pip name -> conda-forge name, where they differ.
CONDA_NAMES: dict[str, str] = {}
# environment.yml entries that are not Python packages of the project.
CONDA_ONLY = {"python", "pip"}


def _split(requirement: str) -> tuple[str, str]:
    """'numpy>=1.24' -> ('numpy', '>=1.24'); names are normalized (PEP 503)."""
    # Extras are pip's ("dask[distributed]"); conda-forge's dask package includes distributed.
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:\[[^]]*\])?\s*(.*)$", requirement)
    assert match, f"cannot parse requirement {requirement!r}"
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    return name, match.group(2).replace(" ", "")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in CONDA_EXTRAS:
        reqs += project["optional-dependencies"][extra]
    pairs = [_split(r) for r in reqs]
    return {CONDA_NAMES.get(name, name): spec for name, spec in pairs}


def conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pairs = [_split(d) for d in env["dependencies"] if isinstance(d, str)]
    return {name: spec for name, spec in pairs if name not in CONDA_ONLY}


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    pip_side, conda_side = pyproject_requirements(), conda_requirements()
    assert sorted(set(pip_side) - set(conda_side)) == [], "missing from environment.yml"
    assert sorted(set(conda_side) - set(pip_side)) == [], "missing from pyproject.toml"


def test_environment_yml_uses_the_same_version_bounds_as_pyproject():
    pip_side, conda_side = pyproject_requirements(), conda_requirements()
    differ = {n: (pip_side[n], conda_side[n]) for n in pip_side
              if n in conda_side and pip_side[n] != conda_side[n]}
    assert differ == {}


def test_environment_yml_python_matches_requires_python():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = [d for d in env["dependencies"] if isinstance(d, str) and _split(d)[0] == "python"]
    assert python == [f"python{project['requires-python']}"]


def test_optional_extras_left_out_of_environment_yml_are_documented_there():
    text = (ROOT / "environment.yml").read_text().lower()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for extra in set(project["optional-dependencies"]) - set(CONDA_EXTRAS):
        assert extra in text, f"environment.yml does not mention the {extra!r} extra"
