"""The student edition: the reference's package, notebooks and data pipeline, copied, with
the body of every function the assignment names (``assignment.PIECES``) replaced by a stub
that raises ``NotImplementedError`` with what to compute, and ``backend.FAST_PATHS`` off, so
that the layers run the pieces the student writes. Generated, never edited by hand: it
cannot drift from the reference.
"""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from .assignment import PIECES, REQUIREMENTS, total_points

#: What the edition holds of the reference (tracked files under these), besides the
#: generated Makefile and ASSIGNMENT.md.
KEPT = ("mura_core/", "notebooks/", "figures/", "report/", "pyproject.toml", "environment.yml",
        "README.md", ".gitignore")
MARKER = ".student-edition"
FAST_PATHS_ON = "FAST_PATHS = True\n"


def _files(root: Path) -> list[str]:
    """The reference's files to copy: git's tracked files where ``root`` is a checkout, else
    the files under the kept folders (no caches)."""
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        listed = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
                  and "__pycache__" not in p.parts and ".venv" not in p.parts]
    return sorted(f for f in listed if f.startswith(KEPT) and (root / f).is_file())


def stub(statement: str, indent: str) -> str:
    """``raise NotImplementedError(...)`` with ``statement`` in string pieces of at most 90
    characters, at ``indent``."""
    parts = textwrap.wrap(statement, 86 - len(indent), drop_whitespace=False)
    body = f"\n{indent}    ".join(repr(p) for p in parts)
    return f"{indent}raise NotImplementedError(\n{indent}    {body})\n"


def _function(tree: ast.Module, qualified: str):
    nodes, node = qualified.split("."), tree
    for name in nodes:
        node = next((n for n in ast.iter_child_nodes(node)
                     if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == name), None)
        if node is None:
            raise ValueError(f"no {qualified} to blank in the reference")
    return node


def blank(source: str, blanks: list[tuple[str, str]]) -> str:
    """``source`` with the bodies of the functions ``blanks`` ((qualified name, statement)
    pairs) replaced by stubs after their docstrings; every other line unchanged."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    spans = []
    for qualified, statement in blanks:
        node = _function(tree, qualified)
        body = node.body
        has_doc = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                               ast.Constant)
        first = body[1] if has_doc and len(body) > 1 else body[0]
        indent = " " * first.col_offset
        start = first.lineno - 1 if not (has_doc and len(body) == 1) else body[0].end_lineno
        spans.append((start, node.end_lineno, stub(statement, indent)))
    for start, end, text in sorted(spans, reverse=True):
        lines[start:end] = [text]
    return "".join(lines)


def _assignment_text() -> str:
    lines = ["# The assignment", "",
             "Write the bodies of the functions below (each raises `NotImplementedError` with "
             "what it computes; its docstring says more). The layers, the loss and the "
             "optimizer call them (`FAST_PATHS = False` in `mura_core/nn/backend.py`), so the "
             "notebooks and `make report` run on your code once the pieces are written.", "",
             "`make grade` checks every piece against slow references, finite differences in "
             "float64 and PyTorch where it is installed, and prints the points per requirement "
             "(`python -m mura_core grade . --json grade.json` writes them as JSON too).", "",
             "| requirement | piece | functions | points |", "|---|---|---|---|"]
    for p in PIECES:
        functions = ", ".join(f"`{path}: {name}`" for path, name in p.functions)
        lines.append(f"| {p.requirement}. {REQUIREMENTS[p.requirement]} | {p.title} | "
                     f"{functions} | {p.points} |")
    lines += [f"| | total | | {total_points()} |", "", "## What each function computes", ""]
    for p in PIECES:
        lines += [f"- **{p.title}**"] + [f"  - {s}" for s in p.statements]
    return "\n".join(lines) + "\n"


GRADE_PY = "GRADE_PY ?= $(PY)\n"


def _makefile(reference: str) -> str:
    """The reference's Makefile, its grader's Python this folder's .venv once made, else the
    Python that wrote the edition (``make grade`` then runs at once, with no set-up)."""
    if GRADE_PY not in reference:
        raise ValueError(f"the reference's Makefile has no line {GRADE_PY.strip()!r}")
    return reference.replace(GRADE_PY, "GRADE_PY ?= $(firstword $(wildcard $(VENV)/bin/python) "
                                       f"{sys.executable})\n", 1)


def make_edition(root, dest) -> Path:
    """Write the student edition of the reference at ``root`` into ``dest`` (a new or empty
    folder, outside the package). Returns ``dest``."""
    root, dest = Path(root).resolve(), Path(dest).resolve()
    package = root / "mura_core"
    if dest == root or dest.is_relative_to(package):
        raise ValueError(f"{dest}: the student edition cannot be written into the reference "
                         "or its package; name another folder")
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} already holds files (a student's work?): remove it or "
                              "name another folder")
    blanks: dict[str, list[tuple[str, str]]] = {}
    for p in PIECES:
        for (path, name), statement in zip(p.functions, p.statements):
            blanks.setdefault(path, []).append((name, statement))
    for relative in _files(root):
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if relative in blanks:
            target.write_text(blank((root / relative).read_text(), blanks[relative]))
        elif relative == "mura_core/nn/backend.py":
            text = (root / relative).read_text()
            if FAST_PATHS_ON not in text:
                raise ValueError(f"{root / relative} has no line {FAST_PATHS_ON.strip()!r}")
            target.write_text(text.replace(FAST_PATHS_ON, "FAST_PATHS = False\n", 1))
        else:
            shutil.copy2(root / relative, target)
    (dest / "Makefile").write_text(_makefile((root / "Makefile").read_text()))
    (dest / "ASSIGNMENT.md").write_text(_assignment_text())
    (dest / MARKER).write_text(f"generated from {root}\n")
    return dest
