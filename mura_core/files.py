"""Writing results so that nothing is ever half-written: text and JSON through the one
atomic writer (``nn.serialization.atomic_write``: temp file beside the target, then
``os.replace``); checking that an output place can be written, and has the space the work
will write, before any work starts; a full disk met during the work told in one line
(``DiskFull``); and removing the temp files a killed writer left behind."""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

from .formatting import data_size
from .nn.serialization import TEMP_PREFIX, TEMP_SUFFIX, atomic_write


class NotEnoughSpace(OSError):
    """An output place whose file system has less free space than the work will write,
    found before the work starts (bad input); the message names the folder, the space
    needed and the fix."""

    def __init__(self, message: str):
        super().__init__(message)
        self.errno = errno.ENOSPC


class DiskFull(OSError):
    """The disk filled up during the work (the run failed); the message names the folder,
    what was kept and the fix."""

    def __init__(self, message: str):
        super().__init__(message)
        self.errno = errno.ENOSPC


def is_disk_full(exc: BaseException) -> bool:
    """True for an OSError that says the file system (or the user's quota) is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def free_space(folder) -> int:
    """Bytes free for this user on the file system that holds (or will hold) ``folder``."""
    return shutil.disk_usage(_deepest_existing(Path(folder), "folder")).free


def check_free_space(folder, needed: int, what: str, fix: str) -> None:
    """NotEnoughSpace unless the file system of ``folder`` (the ``what``, e.g. "cache folder")
    has ``needed`` bytes free; ``fix`` ends the message (what the user can do)."""
    free = free_space(folder)
    if needed > free:
        raise NotEnoughSpace(f"the {what} {folder} needs {data_size(needed)} of disk space, but "
                             f"its file system has {data_size(free)} free; {fix}")


def reserve_space(path, what: str, folder, fix: str) -> None:
    """Allocate every block of the file ``path`` (created at its full size, e.g. by a memory
    map) on disk now. A write through a memory map into a block the full disk cannot give
    kills the process (SIGBUS); reserved, the full disk is found here, as DiskFull naming
    the ``what`` ``folder`` and ending with ``fix``."""
    fd, size = os.open(path, os.O_RDWR), 0
    try:
        size = os.fstat(fd).st_size
        if size:
            os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFull(f"the disk of the {what} {folder} is full: {Path(path).name} needs "
                       f"{data_size(size)} and the file system has {data_size(free_space(folder))} "
                       f"free; {fix}") from None
    finally:
        os.close(fd)


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
    import numpy as np

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
    _probe(_deepest_existing(folder, what), folder, what)


def check_writable_file(path, what: str) -> None:
    """Like ``check_writable_folder`` for a file to be written: ``path`` is not a folder and
    its folder can be written (or created)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"the {what} {path} is a folder; give a file name")
    _probe(_deepest_existing(path.parent, what), path, what)


def _deepest_existing(target: Path, what: str) -> Path:
    path = target.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, so no folder can be made below it for the "
                                 f"{what} {target}; choose another place")
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
