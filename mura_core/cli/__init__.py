"""The command line, ``python -m mura_core COMMAND`` (``__main__.py`` imports only the module
of the command that runs). One convention for every command:

- bad input (a setting, a missing or unreadable file, a folder that holds another run or
  that another process is using, a place that cannot be written or has not the space the
  work needs, a backend that cannot run here): one line ``error: ...``
  on stderr naming the file and the fix, exit status 2, no traceback; checked before any
  work where it can be;
- a run that failed (training diverged, a report that could not be built, files that could
  not be predicted, a disk that filled up or a worker process that died during the work, the
  memory running out): one line on stderr, exit status 1;
- stopped by Ctrl+C or SIGTERM: exit status 130 or 143 (128 + the signal, as the shell
  reports it), after the checkpoint is written; both run the same clean-up;
- a warning (an image file skipped, say): one line ``warning: ...``, not Python's two lines
  with the source line of the caller.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import typing
import warnings

from ..signals import exit_status, sigterm_raises

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # Ctrl+C; SIGTERM gives 143 (signals.exit_status)


class CommandFailed(Exception):
    """A run that started but could not finish; its message is printed, exit status 1."""


def input_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean bad input (exit status 2)."""
    from ..data.mura import MuraFormatError
    from ..files import NotEnoughSpace
    from ..locks import FolderLocked
    from ..nn.backend import BackendUnavailable
    from ..nn.serialization import ModelFileError

    return (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
            IsADirectoryError, PermissionError, ModelFileError, MuraFormatError, FolderLocked,
            NotEnoughSpace, BackendUnavailable)


def run_errors() -> tuple[type[BaseException], ...]:
    """The exceptions of a run that failed during its work (exit status 1), each with a
    message that names the place and the fix."""
    from ..data.cache import CacheBuildError
    from ..files import DiskFull

    return (CommandFailed, DiskFull, CacheBuildError)


def fail(message: str, status: int = EXIT_BAD_INPUT) -> int:
    """Print ``error: message`` on stderr; return ``status`` for the command to return."""
    print(f"error: {message}", file=sys.stderr)
    return status


def command(func):
    """Wrap a command ``func(args) -> int`` in the convention above."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            with sigterm_raises(), warnings.catch_warnings():
                warnings.showwarning = _warning_line
                return int(func(args) or 0)
        except run_errors() as exc:
            return fail(str(exc), EXIT_FAILED)
        except input_errors() as exc:
            return fail(str(exc), EXIT_BAD_INPUT)
        except MemoryError as exc:
            return fail(f"out of memory ({exc or 'MemoryError'}): use a smaller --batch-size or "
                        "--size, or a machine with more memory", EXIT_FAILED)
        except OSError as exc:
            from ..files import is_disk_full

            if not is_disk_full(exc):
                raise
            where = f" while writing {exc.filename}" if exc.filename else ""
            return fail(f"the disk filled up{where} ({exc.strerror}): free some space, or "
                        "choose another output folder", EXIT_FAILED)
        except KeyboardInterrupt as exc:
            print("interrupted", file=sys.stderr)
            return exit_status(exc)

    return run


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=file or sys.stderr)


def add_config_options(parser: argparse.ArgumentParser, config_cls, *, skip=(),
                       names: dict[str, str] | None = None, required=()) -> None:
    """One option per field of the dataclass ``config_cls``, with its default and help.

    ``--batch-size`` for ``batch_size``, unless ``names`` renames it; a bool field becomes
    ``--flag`` (default False) or ``--no-flag`` (default True); ``int | None`` takes an int or
    is left out; a field's
    ``metadata`` gives ``help`` and ``choices``. ``skip``: fields with no option; ``required``:
    fields the user must give."""
    names = names or {}
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        if f.name in skip:
            continue
        option = names.get(f.name, f.name)
        flag = "--" + option.replace("_", "-")
        kind = hints[f.name]
        base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
        help_text = f.metadata.get("help", "")
        if f.name in required:
            parser.add_argument(flag, dest=f.name, type=base, required=True, help=help_text,
                                metavar=option.upper())
        elif base is bool and f.default:
            parser.add_argument("--no-" + option.replace("_", "-"), dest=f.name,
                                action="store_false", help=f"do not {help_text}")
        elif base is bool:
            parser.add_argument(flag, dest=f.name, action="store_true", help=help_text)
        else:
            default = "none" if f.default is None else "%(default)s"
            parser.add_argument(flag, dest=f.name, type=base, default=f.default,
                                choices=f.metadata.get("choices"),
                                help=f"{help_text} (default: {default})")


def config_from_args(config_cls, args: argparse.Namespace):
    """The dataclass ``config_cls`` built from the options ``add_config_options`` added."""
    given = vars(args)
    return config_cls(**{f.name: given[f.name] for f in dataclasses.fields(config_cls)
                         if f.name in given})
