"""The committed notebooks are inputs: no outputs, one tagged ``parameters`` cell with the
common parameters, and thin code cells (the logic lives in ``mura_core``)."""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from mura_core.experiments import profiles
from mura_core.report.context import COMMON_PARAMETERS

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
MAX_CODE_LINES = 16  # a cell longer than this is logic that belongs in mura_core
MAX_CELL_CHARACTERS = 1200
MAX_LINE_CHARACTERS = 110
#: The report's notebooks and the explorer, which JupyterLab opens beside them.
ALL = (*profiles.NOTEBOOKS, profiles.EXPLORER)


def _notebook(name: str) -> nbformat.NotebookNode:
    return nbformat.read(str(NOTEBOOKS / f"{name}.ipynb"), as_version=4)


def _assigned(source: str) -> dict:
    """name -> literal value of every ``name = literal`` in a cell."""
    values = {}
    for node in ast.parse(source).body:
        assert isinstance(node, ast.Assign), \
            f"parameters cell holds more than assignments: {ast.dump(node)[:80]}"
        for target in node.targets:
            values[target.id] = ast.literal_eval(node.value)
    return values


def test_every_notebook_of_the_report_and_the_explorer_is_committed():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(ALL)


@pytest.mark.parametrize("name", ALL)
def test_notebook_is_valid_and_has_no_outputs(name):
    nb = _notebook(name)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name} cell {i} has outputs: clear them before committing"
            assert cell.execution_count is None, f"{name} cell {i} has an execution count"
    assert "papermill" not in nb.metadata, f"{name} is an executed copy, not the source"


@pytest.mark.parametrize("name", ALL)
def test_notebook_has_one_parameters_cell_with_the_common_parameters_and_its_knobs(name):
    nb = _notebook(name)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{name}: {len(tagged)} cells tagged 'parameters'"
    assert tagged[0].cell_type == "code"
    values = _assigned(tagged[0].source)
    assert set(COMMON_PARAMETERS) <= set(values)
    assert values["profile"] == profiles.DEFAULT_PROFILE
    assert values["data_dir"] is None and values["backend"] == "numpy"
    knobs = set(values) - set(COMMON_PARAMETERS)
    assert {k: values[k] for k in COMMON_PARAMETERS} == COMMON_PARAMETERS, "the defaults"
    assert knobs == set(profiles.get_profile("quick").notebook_knobs(name)), \
        "every profile knob of the notebook is a parameter, and no other"
    assert all(values[k] is None for k in knobs), "knobs default to None (the profile's value)"


@pytest.mark.parametrize("name", ALL)
def test_notebook_is_thin(name):
    nb = _notebook(name)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "parameters" not in cell.metadata.get("tags", []):
            lines = [ln for ln in cell.source.splitlines() if ln.strip()]
            assert len(lines) <= MAX_CODE_LINES, f"{name} cell {i}: {len(lines)} lines"
            assert len(cell.source) <= MAX_CELL_CHARACTERS, f"{name} cell {i}: {len(cell.source)} characters"
            long = [ln for ln in lines if len(ln) > MAX_LINE_CHARACTERS]
            assert not long, f"{name} cell {i}: a line of {len(long[0])} characters"
            tree = ast.parse(cell.source)
            assert not [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))], \
                f"{name} cell {i} defines a function or class: move it to mura_core"
