"""The course kit on known answers: the reference earns every point; the untouched student
edition earns none; a copy of the reference with one planted bug loses that piece's points
and no other's; a piece that loops forever or allocates too much costs its own row only."""
from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mura_core.course import assignment, grader, student

ROOT = Path(__file__).resolve().parent.parent

#: (piece, file, function, text in that function, the text with the bug): the planted bugs.
PLANTED = [
    ("conv", "mura_core/nn/plain.py", "conv_backward",  # a transposed kernel in the backward
     "dcol = (w.reshape(d, -1).T", "dcol = (w.transpose(0, 1, 3, 2).reshape(d, -1).T"),
    ("dropout", "mura_core/nn/plain.py", "dropout_backward",  # the mask missing
     "return dy * cache", "return dy"),
    ("sgd", "mura_core/nn/plain.py", "sgd_momentum_step",  # momentum with the wrong sign
     "v *= momentum", "v *= -momentum"),
    ("pool", "mura_core/nn/plain.py", "maxpool_forward",  # the last maximum wins a tie
     "better = window > y", "better = window >= y"),
    ("bce", "mura_core/nn/plain.py", "bce_with_logits",  # the gradient not divided by B
     "/ z.dtype.type(z.shape[0])", ""),
    ("residual", "mura_core/nn/layers.py", "Residual.backward",  # the skip path's gradient lost
     "return dx + (ds if", "return dx + 0 * (ds if"),
]


def _copy(tmp_path: Path) -> Path:
    """The reference's package, copied (what a student hands in: a folder with mura_core/)."""
    shutil.copytree(ROOT / "mura_core", tmp_path / "mura_core",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _plant(root: Path, path: str, function: str, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` inside ``function`` only (it must be there once)."""
    file = root / path
    source = file.read_text()
    node = ast.parse(source)
    for name in function.split("."):
        node = next(n for n in ast.iter_child_nodes(node) if getattr(n, "name", None) == name)
    lines = source.splitlines(keepends=True)
    body = "".join(lines[node.lineno - 1:node.end_lineno])
    assert body.count(old) == 1, (function, old)
    lines[node.lineno - 1:node.end_lineno] = [body.replace(old, new)]
    file.write_text("".join(lines))


def _earned(result: dict) -> dict:
    return {p["piece"]: p["earned"] for p in result["pieces"]}


FULL = {p.name: p.points for p in assignment.PIECES}


def test_the_reference_earns_every_point():
    result = grader.grade(ROOT)
    assert _earned(result) == FULL
    assert result["earned"] == assignment.total_points() == 100
    assert result["training"]["passed"]
    assert all(row["passed"] and row["error"] < 1e-5 for p in result["pieces"] for row in p["checks"])
    compared = {p["piece"] for p in result["pieces"]
                if any("torch" in row["check"].lower() for row in p["checks"])}
    has_torch = importlib.util.find_spec("torch") is not None
    assert compared == ({"conv", "pool", "linear", "bce", "sgd"} if has_torch else set())


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    return student.make_edition(ROOT, tmp_path_factory.mktemp("kit") / "student")


def test_the_student_edition_earns_nothing_and_says_what_to_write(edition):
    result = grader.grade(edition, use_torch=False)
    assert all(v == 0 for v in _earned(result).values())
    assert not result["training"]["passed"]
    for p in result["pieces"]:
        assert all("not written yet" in row["where"] for row in p["checks"]), p["piece"]
    table = grader.format_table(result)
    assert "Total: 0 of 100 points" in table and "Requirement 1:" in table


def test_the_edition_blanks_exactly_the_assignment_and_keeps_the_rest(edition):
    blanked = {path for p in assignment.PIECES for path, _ in p.functions}
    for path in blanked:
        source = (edition / path).read_text()
        reference = (ROOT / path).read_text()
        assert source != reference
        tree = ast.parse(source)
        for p in assignment.PIECES:
            for (file, name), statement in zip(p.functions, p.statements):
                if file != path:
                    continue
                node = student._function(tree, name)
                raised = node.body[-1]
                assert isinstance(raised, ast.Raise) and len(node.body) == 1 + bool(
                    ast.get_docstring(node)), name  # its docstring, if any, and the stub
                assert ast.literal_eval(raised.exc.args[0]) == statement
    backend_source = (edition / "mura_core/nn/backend.py").read_text()
    assert "FAST_PATHS = False\n" in backend_source
    assert backend_source.replace("FAST_PATHS = False", "FAST_PATHS = True") == \
        (ROOT / "mura_core/nn/backend.py").read_text()
    for kept in ("mura_core/nn/conv.py", "mura_core/nn/models.py", "notebooks/02_training.ipynb",
                 "mura_core/data/synthetic.py", "pyproject.toml"):
        assert (edition / kept).read_bytes() == (ROOT / kept).read_bytes(), kept
    assert not (edition / "tests").exists()
    assert "grade:" in (edition / "Makefile").read_text()
    text = (edition / "ASSIGNMENT.md").read_text()
    assert all(p.title in text for p in assignment.PIECES) and "| | total | | 100 |" in text


def test_the_edition_is_never_written_into_the_reference_nor_over_files(tmp_path, edition):
    with pytest.raises(ValueError, match="cannot be written into the reference"):
        student.make_edition(ROOT, ROOT / "mura_core" / "student")
    with pytest.raises(FileExistsError, match="already holds files"):
        student.make_edition(ROOT, edition)


@pytest.mark.parametrize("piece,path,function,old,new", PLANTED, ids=[p[0] for p in PLANTED])
def test_a_planted_bug_loses_its_piece_and_only_its_piece(tmp_path, piece, path, function, old, new):
    root = _copy(tmp_path)
    _plant(root, path, function, old, new)
    earned = _earned(grader.grade(root, use_torch=False))  # the references are enough here
    assert earned[piece] < FULL[piece], earned
    assert {k: v for k, v in earned.items() if k != piece} == \
        {k: v for k, v in FULL.items() if k != piece}


def test_a_loop_or_a_giant_allocation_costs_one_row(tmp_path):
    root = _copy(tmp_path)
    plain = "mura_core/nn/plain.py"
    _plant(root, plain, "relu_forward", "y = xp.maximum", "while True:\n        pass\n    y = xp.maximum")
    _plant(root, plain, "linear_forward", "return x @ w + b",
           "return x @ w + b + __import__('numpy').ones(1 << 40)[0]")
    result = grader.grade(root, time_limit_s=5, use_torch=False)
    earned = _earned(result)
    assert earned["relu"] == 0 and earned["linear"] == 0
    assert {k: v for k, v in earned.items() if k not in ("relu", "linear")} == \
        {k: v for k, v in FULL.items() if k not in ("relu", "linear")}
    relu = next(p for p in result["pieces"] if p["piece"] == "relu")
    assert "time limit (5 s)" in relu["checks"][0]["where"]
    linear = next(p for p in result["pieces"] if p["piece"] == "linear")
    assert all("MemoryError" in row["where"] for row in linear["checks"])


def test_grade_command_writes_the_table_and_json(tmp_path, edition):
    out = tmp_path / "grade.json"
    done = subprocess.run([sys.executable, "-m", "mura_core", "grade", str(edition), str(ROOT),
                           "--json", str(out), "--no-torch"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Total: 0 of 100 points" in done.stdout and "Total: 100 of 100 points" in done.stdout
    assert f"     0 / 100  {edition}" in done.stdout and f"   100 / 100  {ROOT}" in done.stdout
    import json

    assert [r["earned"] for r in json.loads(out.read_text())] == [0, 100]
    bad = subprocess.run([sys.executable, "-m", "mura_core", "grade", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "holds no mura_core" in bad.stderr
