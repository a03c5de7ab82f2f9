"""Command line: ``python -m mura_core COMMAND ...`` (also installed as ``mura-core``).

Only the module of the command that runs is imported (``train`` never loads the report's
Jupyter stack); ``--help`` lists every command from the table below without importing any.
Each command module registers its parsers with ``add_commands(subparsers)``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

#: command -> (module that implements it, one-line help)
COMMANDS = {
    "data": ("mura_core.cli.data", "generate, index and cache MURA-layout data"),
    "train": ("mura_core.cli.train", "train a network on a MURA folder (real or synthetic)"),
    "evaluate": ("mura_core.cli.evaluate", "print the metric table of a saved model on train and valid"),
    "predict": ("mura_core.cli.evaluate", "P(normal) for image files with a saved model"),
    "explain": ("mura_core.cli.explain", "Grad-CAM maps of image files with a saved model"),
    "report": ("mura_core.cli.report", "run the notebooks and build report/report.pdf and report.html"),
    "student": ("mura_core.cli.course", "write the course's student edition (the pieces to write blanked)"),
    "grade": ("mura_core.cli.course", "grade the assignment's pieces of a package folder"),
}


def _command_name(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser, with the full options of the command named in ``argv`` (if any)."""
    parser = argparse.ArgumentParser(
        prog="python -m mura_core",
        description="Train and evaluate a from-scratch CNN on MURA radiographs.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = _command_name(sys.argv[1:] if argv is None else argv)
    if wanted in COMMANDS:
        importlib.import_module(COMMANDS[wanted][0]).add_commands(sub)
    for name, (_, help_text) in COMMANDS.items():
        if name not in sub.choices:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
