"""Writing results so that nothing is ever half-written: text and JSON through the one
atomic writer (``nn.serialization.atomic_write``: temp file beside the target, then
``os.replace``), and reading JSON back with an error that names the file."""
from __future__ import annotations

import json
from pathlib import Path

from .nn.serialization import atomic_write


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
