"""Writing results so that nothing is ever half-written: text and JSON through the one
atomic writer (``nn.serialization.atomic_write``: temp file beside the target, then
``os.replace``); checking that an output place can be written before any work starts; and
removing the temp files a killed writer left behind."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from .nn.serialization import TEMP_PREFIX, TEMP_SUFFIX, atomic_write


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (parent folders created); returns the path."""
    atomic_write(path, lambda f: f.write(data))
    return Path(path)


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path, obj, indent: int | None = 2, allow_nan: bool = True) -> Path:
    """Write ``obj`` as JSON (NumPy scalars and arrays and paths allowed), atomically;
    returns the path. ``allow_nan=False`` refuses NaN and infinities (strict JSON)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=_json_default,
                                              allow_nan=allow_nan) + "\n")


def _json_default(obj):
    import numpy as np  # noqa: PLC0415

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def check_writable_folder(folder, what: str) -> None:
    """Raise a one-line error unless the folder ``folder`` (``what`` names it in the message,
    e.g. "run folder") exists and can be written, or can be created. Creates nothing: the
    probe is an unnamed temp file in the deepest folder that exists. Call it before any work,
    so an unwritable place fails in a second instead of after the compute."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"the {what} {folder} is a file, not a folder; choose a folder")
    _probe(_deepest_existing(folder), folder, what)


def check_writable_file(path, what: str) -> None:
    """Like ``check_writable_folder`` for a file to be written: ``path`` is not a folder and
    its folder can be written (or created)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"the {what} {path} is a folder; give a file name")
    _probe(_deepest_existing(path.parent), path, what)


def _deepest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, so no folder can be made below it")
    return path


def _probe(existing: Path, target: Path, what: str) -> None:
    # A real write, not os.access: it also sees read-only file systems and works for root.
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        where = "" if existing == target.absolute() else f" ({existing} cannot be written)"
        raise PermissionError(f"cannot write the {what} {target}{where}: {exc.strerror}; "
                              "choose a place you can write to") from None


def remove_stale_temp_files(folder) -> list[Path]:
    """Remove the atomic writer's temp files (``.NAME.<random>.tmp``) in ``folder``; the
    removed paths. Only for a folder this process holds the lock of (``locks``): then no
    other writer is running there, and every temp file is one a killed process left."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir()
             if p.name.startswith(TEMP_PREFIX) and p.name.endswith(TEMP_SUFFIX) and p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
