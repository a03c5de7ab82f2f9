"""A run folder: the files a run leaves there, and which folders a new run may use.

A run goes into an empty (or new) folder, resumes the run in it (``resume``), or replaces it
(``overwrite``: the earlier run's files are removed before the first step, so old and new
files never mix). Anything else is refused before any work (``check_run_folder``). While a
process trains there, the folder is locked (``locks``): a second one is refused.
"""
from __future__ import annotations

import contextlib
from contextlib import contextmanager
from pathlib import Path

from ..files import DiskFull, check_writable_folder, free_space, is_disk_full
from ..formatting import data_size
from ..locks import hold_folder
from ..nn.serialization import BEST_NAME, CHECKPOINT_NAME, LAST_NAME

HISTORY_NAME = "history.json"
PREDICTIONS_NAME = "predictions.npz"
#: ``experiments``' record of a diverged run (the trainer leaves no last.npz then).
DIVERGED_NAME = "diverged.json"
#: The files a run leaves in its folder: any of them means the folder holds a run.
RUN_FILES = (HISTORY_NAME, CHECKPOINT_NAME, BEST_NAME, LAST_NAME, PREDICTIONS_NAME, DIVERGED_NAME)


def run_disk_bytes(model) -> int:
    """Bytes a run of ``model`` writes into its folder at its peak: checkpoint.npz (weights
    and momentum) with the temp copy that replaces it, best.npz and last.npz (weights), and
    1 MB for the history and predictions."""
    weights = sum(int(p.nbytes) for p in model.parameters().values())
    return 6 * weights + 1_000_000


def earlier_run_files(out_dir) -> list[str]:
    """The RUN_FILES present in ``out_dir`` (none when it does not exist)."""
    folder = Path(out_dir)
    return [name for name in RUN_FILES if (folder / name).exists()]


def check_run_folder(out_dir, resume: bool = False, overwrite: bool = False) -> list[str]:
    """Refuse a run folder this run may not use; return the earlier run's files in it.

    Allowed: a new or empty folder; a folder holding a run, with ``resume`` (its checkpoint
    continues) or ``overwrite`` (its files go). Refused with FileExistsError saying what to
    do: an earlier run's files without either option, ``resume`` of a run that has no
    checkpoint, and a fresh run beside files that are not a run's (a run never writes beside
    a user's files; hidden files such as the lock are ignored)."""
    folder = Path(out_dir)
    if not folder.exists():
        return []
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file, not a run folder; choose another out_dir")
    found = earlier_run_files(folder)
    listed = ", ".join(found)
    if resume and CHECKPOINT_NAME in found:
        return found
    if resume and found:
        raise FileExistsError(
            f"{folder} holds a run with no checkpoint to resume from ({listed}): it stopped before "
            "its first checkpoint; start it afresh (--overwrite, overwrite=True) or use another out_dir")
    if found and not overwrite:
        raise FileExistsError(
            f"{folder} already holds a run ({listed}); resume it (--resume, resume=True), start "
            "afresh (--overwrite, overwrite=True) or choose another out_dir")
    foreign = sorted(p.name for p in folder.iterdir()
                     if not p.name.startswith(".") and p.name not in RUN_FILES)
    if foreign:
        more = ", ..." if len(foreign) > 3 else ""
        raise FileExistsError(
            f"{folder} holds files that are not a run's ({', '.join(foreign[:3])}{more}); a run "
            "goes into a new or empty folder: choose another out_dir")
    return found


def remove_earlier_run(out_dir, names: list[str]) -> None:
    """Remove an earlier run's files (before the first step of the run replacing it, so no
    file of the earlier run is left beside the new run's, even if it diverges or is killed
    at once)."""
    for name in names:
        (Path(out_dir) / name).unlink(missing_ok=True)
    print(f"overwrite: removed the earlier run's {', '.join(names)} from {out_dir}")


def hold_run_folder(out_dir):
    """The run folder's lock for the whole run (nothing when there is no out_dir); the
    folder is checked for writability first, so a read-only one fails before any step."""
    if out_dir is None:
        return contextlib.nullcontext()
    check_writable_folder(out_dir, "run folder")
    return hold_folder(out_dir, "run folder")


@contextmanager
def disk_full_told(state):
    """A full disk met in the block of a run (``state``, its ``RunState``: a checkpoint, the
    history, a model file) becomes DiskFull: one line naming the run folder, the checkpoint
    that is kept (the atomic writer never replaced it) and the space to free."""
    try:
        yield
    except OSError as exc:
        if not is_disk_full(exc) or isinstance(exc, DiskFull) or state.out_dir is None:
            raise
        ckpt = state.path(CHECKPOINT_NAME)
        if state.checkpoint_step is not None:
            kept = (f"its checkpoint of step {state.checkpoint_step}, {ckpt}, is kept: free "
                    "some space and continue with --resume")
        else:
            kept = ("no checkpoint had been written yet: free some space and run the "
                    "command again")
        raise DiskFull(
            f"the disk of the run folder {state.out_dir} filled up at step {state.step} "
            f"({data_size(free_space(state.out_dir))} free; the run needs about "
            f"{data_size(run_disk_bytes(state.model))} for its checkpoint, best.npz and "
            f"last.npz); {kept}") from None
