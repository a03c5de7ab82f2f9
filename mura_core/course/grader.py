"""Grade a package folder against the assignment: every piece's checks (``check.py``) in a
child process of their own, with a time and a memory limit, so that an infinite loop or a
giant allocation costs that piece's row and nothing else; a table per requirement and the
same as JSON.

A piece earns its points in proportion to the checks it passes. The last row, a small
network of the package's layers trained for 80 steps, is reported and not scored: every
piece goes into it, so it would take a bug's points a second time.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .assignment import PIECES, REQUIREMENTS, TRAINING, total_points

CHECK = Path(__file__).with_name("check.py")
#: Per piece: seconds of wall time, and bytes of address space of its process.
TIME_LIMIT_S = 60.0
MEMORY_LIMIT = 4 << 30


def _limit_memory(limit: int):
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def check_piece(name: str, root: Path, time_limit_s: float = TIME_LIMIT_S,
                memory_limit: int = MEMORY_LIMIT, use_torch: bool = True) -> tuple[list[dict], float]:
    """(rows of ``check.py`` for the piece ``name`` of the package at ``root``, seconds);
    ``use_torch``: the comparisons with PyTorch too, where it is installed."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               MPLBACKEND="agg")
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, str(CHECK), name, str(root)]
                              + ([] if use_torch else ["--no-torch"]), env=env,
                              cwd=root, capture_output=True, text=True, timeout=time_limit_s,
                              preexec_fn=_limit_memory(memory_limit))
    except subprocess.TimeoutExpired:
        return [_failed(f"stopped at the time limit ({time_limit_s:g} s)")], time_limit_s
    seconds = time.perf_counter() - start
    lines = done.stdout.strip().splitlines()
    if done.returncode == 0 and lines:
        return json.loads(lines[-1]), seconds
    last = (done.stderr.strip().splitlines() or [""])[-1]
    if "MemoryError" in done.stderr:
        last = f"out of memory (limit {memory_limit >> 20} MiB): {last}"
    return [_failed(f"the check process exited with status {done.returncode}: {last}")], seconds


def _failed(where: str) -> dict:
    return {"check": "all checks", "error": None, "passed": False, "where": where}


def grade(root, time_limit_s: float = TIME_LIMIT_S, memory_limit: int = MEMORY_LIMIT,
          jobs: int = 2, use_torch: bool = True) -> dict:
    """The grade of the package folder ``root`` (it holds ``mura_core/``): per piece its
    requirement, points earned of its points and its check rows; the training row; totals."""
    root = _package_root(root)
    names = [p.name for p in PIECES] + [TRAINING]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = dict(zip(names, pool.map(
            lambda n: check_piece(n, root, time_limit_s, memory_limit, use_torch), names)))
    pieces = []
    for p in PIECES:
        rows, seconds = results[p.name]
        passed = sum(r["passed"] for r in rows)
        pieces.append({"piece": p.name, "title": p.title, "requirement": p.requirement,
                       "points": p.points, "earned": round(p.points * passed / len(rows), 2),
                       "seconds": round(seconds, 2), "checks": rows})
    rows, seconds = results[TRAINING]
    return {"folder": str(root), "pieces": pieces,
            "training": {"checks": rows, "passed": all(r["passed"] for r in rows),
                         "seconds": round(seconds, 2)},
            "earned": round(sum(p["earned"] for p in pieces), 2), "points": total_points(),
            "seconds": round(time.perf_counter() - start, 2)}


def _error(row: dict) -> str:
    e = row["error"]
    return "-" if e is None else "inf" if e == float("inf") else f"{e:.1e}"


def _wrapped(where: str, width: int) -> str:
    return textwrap.fill(where, width, initial_indent=" " * 27 + "-> ",
                         subsequent_indent=" " * 30)


def format_table(result: dict, width: int = 110) -> str:
    """The grade as text: per requirement its pieces, each check with its largest relative
    error, the points, and for a failure the first case and entry that is wrong."""
    lines = [f"Grade of {result['folder']}", ""]
    header = f"{'piece':<22} {'check':<50} {'max rel err':>11}  {'points':>11}"
    for number, requirement in REQUIREMENTS.items():
        pieces = [p for p in result["pieces"] if p["requirement"] == number]
        earned, points = sum(p["earned"] for p in pieces), sum(p["points"] for p in pieces)
        lines += [f"Requirement {number}: {requirement} ({earned:g} of {points})", header,
                  "-" * len(header)]
        for p in pieces:
            said = None
            for i, row in enumerate(p["checks"]):
                first = i == 0
                score = f"{p['earned']:g} / {p['points']}" if first else ""
                mark = "ok " if row["passed"] else "FAIL"
                lines.append(f"{p['title'] if first else '':<22} {mark} {row['check'][:45]:<45} "
                             f"{_error(row):>11}  {score:>11}")
                if not row["passed"]:
                    where = "the same" if row["where"] == said else row["where"]
                    lines.append(_wrapped(where, width))
                    said = row["where"]
        lines.append("")
    training = result["training"]
    lines.append("Not scored: a small network of these layers, trained "
                 f"({'learns' if training['passed'] else 'does not learn'})")
    for row in training["checks"]:
        lines.append(f"{'':<22} {'ok ' if row['passed'] else 'FAIL'} {row['check']}")
        if not row["passed"]:
            lines.append(_wrapped(row["where"], width))
    lines += ["", f"Total: {result['earned']:g} of {result['points']} points "
                  f"({result['seconds']:.1f} s)"]
    return "\n".join(lines)


def _package_root(folder) -> Path:
    root = Path(folder).resolve()
    if not (root / "mura_core" / "__init__.py").is_file():
        raise FileNotFoundError(f"{root} holds no mura_core package: give the folder of a "
                                "student edition (the one with mura_core/ in it)")
    return root


def grade_command(folders, json_path=None, time_limit_s: float = TIME_LIMIT_S,
                  use_torch: bool = True) -> list[dict]:
    """Grade each of ``folders`` (all checked first), print the tables, a line per folder
    when there are several, and write the JSON to ``json_path`` if given (one folder: its
    grade; several: the list)."""
    roots = [_package_root(f) for f in folders]
    results = []
    for root in roots:
        results.append(grade(root, time_limit_s, use_torch=use_torch))
        print(format_table(results[-1]), end="\n\n" if len(roots) > 1 else "\n")
    if len(roots) > 1:
        for r in results:
            print(f"{r['earned']:>6g} / {r['points']}  {r['folder']}")
    if json_path is not None:
        data = results[0] if len(results) == 1 else results
        Path(json_path).write_text(json.dumps(data, indent=1) + "\n")
    return results
