"""One writer per folder: the lock of a run folder, a cache folder, and the report's folders.

``with hold_folder(folder, "run folder"):`` holds ``FOLDER/.lock`` for the block. The lock is
an ``fcntl.flock`` on that file, and the file names its holder (pid, host, start time,
command), so a second process is refused at once with one line that names the first::

    runs/c (run folder) is in use by process 4242 on host lab1, started 2026-11-26 10:02:11
    (python -m mura_core train ...); wait for it to end or stop it, or use another folder

Why flock: the kernel releases it when its process ends, however it ends (SIGKILL and power
loss included), so a lock can never be held by a dead process, and no pid is ever guessed
from or stolen. What a killed holder does leave is the file naming it; the next process that
takes the lock reports that holder ("... ended without releasing it ...") and goes on: the
lock was free, the file only tells the story. The one exception is a file naming a process on
another machine, which cannot be checked from here: that is refused, with the way to clear it
by hand once that run is known to have ended.

A process may hold the same folder more than once (the command line takes the run folder's
lock before the cache build, the trainer takes it again): the lock is counted per process and
released when the outermost hold ends. A folder the lock had to create is removed again on
release when it is still empty, so a refused command leaves no empty folder behind.

POSIX only (fcntl). On network file systems flock works between machines on Linux NFS v4
(the kernel maps it to a POSIX lock); on older setups it may be local to each machine.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".lock"


class FolderLocked(RuntimeError):
    """Another process holds the folder's lock; the message names it."""


class _Held:
    """A lock this process holds: the open lock file and how many holds are open."""

    def __init__(self, fd: int, path: Path, created: list[Path]):
        self.fd, self.path, self.created, self.count = fd, path, created, 1


_held: dict[str, _Held] = {}
_registry = threading.Lock()


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


@contextmanager
def hold_folder(folder, what: str, *, wait: bool = False, log=_stderr):
    """Hold the lock of ``folder`` (created when missing) for the ``with`` block.

    ``what`` names the folder in messages ("run folder", "cache folder"). When another
    process holds it: raise FolderLocked naming that process, or with ``wait=True`` say whom
    we wait for (through ``log``) and wait. A lock file left by a process that ended without
    releasing it is reported through ``log`` and the lock is taken."""
    key = os.path.realpath(folder)
    with _registry:
        held = _held.get(key)
        if held is not None:
            held.count += 1
    if held is None:
        held = _acquire(Path(folder), what, wait, log)
        with _registry:
            _held[key] = held
    try:
        yield Path(folder)
    finally:
        with _registry:
            held.count -= 1
            done = held.count == 0
            if done:
                del _held[key]
        if done:
            _release(held)


def lock_holder(folder) -> dict | None:
    """What ``FOLDER/.lock`` says of its holder (pid, host, started, command), or None when
    there is no lock file. It does not tell whether that holder still runs."""
    try:
        return _parse((Path(folder) / LOCK_NAME).read_bytes())
    except FileNotFoundError:
        return None


def process_alive(pid: int, host: str | None = None) -> bool | None:
    """Whether process ``pid`` runs: True or False on this host, None (cannot tell) for a
    process of another host."""
    if host is not None and host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def describe_holder(holder: dict | None) -> str:
    """The holder in words: 'process 4242 on host lab1, started 2026-11-26 10:02:11
    (python -m mura_core train ...)'."""
    if not holder or "pid" not in holder:
        return "another process (it is just starting)"
    text = f"process {holder['pid']} on host {holder.get('host', '?')}"
    if holder.get("started"):
        text += f", started {holder['started']}"
    if holder.get("command"):
        text += f" ({holder['command']})"
    return text


# --- the mechanics ---------------------------------------------------------------------------

def _acquire(folder: Path, what: str, wait: bool, log) -> _Held:
    created = _make_folders(folder)
    path = folder / LOCK_NAME
    try:
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except FileNotFoundError:
                # The holder we waited for had made the folder and removed it, empty, on
                # release (see _remove_empty): make it again.
                folder.mkdir(parents=True, exist_ok=True)
                continue
            try:
                if not _try_flock(fd):
                    holder = _parse(_read(fd))
                    if not wait:
                        raise FolderLocked(
                            f"{folder} ({what}) is in use by {describe_holder(holder)}; wait for "
                            "it to end or stop it, or use another folder")
                    log(f"waiting for {describe_holder(holder)}, which is using {folder} ({what})")
                    fcntl.flock(fd, fcntl.LOCK_EX)
                # The holder we waited for may have removed the file on release: then this
                # lock is on a dead inode, and the folder's lock is a new file. Start again.
                if _same_file(path, fd):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
    except BaseException:
        _remove_empty(created)
        raise
    previous = _parse(_read(fd))
    if previous and "pid" in previous and process_alive(previous["pid"], previous.get("host")) is None:
        # flock may not reach across machines (older NFS): a holder on another host might
        # still be writing, and this one cannot tell. Refuse; a person can check.
        os.close(fd)
        raise FolderLocked(f"{path} names {describe_holder(previous)}, another machine, which "
                           "cannot be checked from here; if that run has ended, delete "
                           f"{path} and start again")
    if previous and "pid" in previous:
        log(f"note: the lock of {folder} ({what}) was left by {describe_holder(previous)}, "
            "which ended without releasing it (killed?); taking it over")
    _write(fd, {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": _command_line()[:200]})
    return _Held(fd, path, created)


def _command_line() -> str:
    """This process's command, as typed: 'python -m mura_core train ...' rather than the path
    of the package's __main__.py that sys.argv holds."""
    argv = list(sys.argv) or ["python"]
    if Path(argv[0]).name == "__main__.py":
        argv[0] = f"python -m {Path(argv[0]).parent.name}"
    return " ".join(argv)


def _release(held: _Held) -> None:
    # Remove the file while still holding the lock, so nobody takes an orphaned inode for it
    # (see the inode check in _acquire); then let go.
    try:
        held.path.unlink(missing_ok=True)
    finally:
        os.close(held.fd)
    _remove_empty(held.created)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _same_file(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _read(fd: int) -> bytes:
    return os.pread(fd, 4096, 0)


def _write(fd: int, holder: dict) -> None:
    data = (json.dumps(holder) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _parse(data: bytes) -> dict | None:
    try:
        holder = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents; the folders created, deepest first."""
    missing = []
    path = folder.absolute()
    while not path.exists():
        missing.append(path)
        path = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for path in folders:  # deepest first
        try:
            path.rmdir()
        except OSError:  # not empty (the run wrote files): keep it and its parents
            return
