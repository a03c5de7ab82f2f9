"""Command line: ``python -m mura_core COMMAND ...`` (also installed as ``mura-core``).

Each command group lives next to the code it drives and registers itself through an
``add_commands(subparsers)`` function that sets ``func`` on its parsers.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "mura_core.data.cli",  # data synth | index | cache
    "mura_core.cli_train",  # train | evaluate | predict
    "mura_core.pipeline",  # report
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mura_core",
        description="Train and evaluate a from-scratch CNN on MURA radiographs.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
