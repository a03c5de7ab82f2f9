"""``python -m mura_core student [--out DIR]`` and ``python -m mura_core grade FOLDER``: the
course kit (``mura_core.course``).

``student`` writes the student edition into a new folder. ``grade`` checks the pieces of the
package in each FOLDER and prints its table (and writes them as JSON with ``--json``); it
exits 0 once the grades are given, whatever the points, and 2 on bad input (a FOLDER with
no package, checked for all before any is graded).
"""
from __future__ import annotations

from pathlib import Path

from . import command


def _student(args) -> int:
    from ..course.student import make_edition

    root = Path(__file__).resolve().parents[2]
    dest = make_edition(root, args.out)
    print(f"student edition written to {dest}: see {dest / 'ASSIGNMENT.md'}; "
          f"`cd {args.out} && make grade` grades it")
    return 0


def _grade(args) -> int:
    from ..course.grader import grade_command

    grade_command(args.folders, args.json, args.time_limit, use_torch=not args.no_torch)
    return 0


def add_commands(subparsers) -> None:
    """Register ``student`` and ``grade``."""
    p = subparsers.add_parser(
        "student", help="write the course's student edition (the pieces to write blanked)",
        description="Copies the package, notebooks and data pipeline into --out with the "
                    "bodies of the assignment's pieces replaced by stubs (ASSIGNMENT.md lists "
                    "them), and the plain layers switched on.")
    p.add_argument("--out", default="student", help="a new or empty folder (default student)")
    p.set_defaults(func=command(_student))
    p = subparsers.add_parser(
        "grade", help="grade the assignment's pieces of a package folder",
        description="Checks each piece in a child process of its own (time and memory "
                    "limited) against slow references, finite differences and PyTorch where "
                    "installed; prints the points per requirement.")
    p.add_argument("folders", nargs="+", metavar="FOLDER",
                   help="folders with mura_core/ in them (student editions, one per student)")
    p.add_argument("--json", default=None,
                   help="also write the grades as JSON to this file (a list for several folders)")
    p.add_argument("--time-limit", type=float, default=60.0,
                   help="seconds per piece before its check is stopped (default 60)")
    p.add_argument("--no-torch", action="store_true",
                   help="leave out the comparisons with PyTorch (they are made where it is installed)")
    p.set_defaults(func=command(_grade))
