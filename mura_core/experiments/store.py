"""The idea of a run: what to train (``RunSpec``), what came of it (``Run``), and where it
lives; ``train_or_load`` trains a run or loads the stored one with its identity.

A run is a ``RunSpec`` (architecture, seed, and every training setting that decides its
numbers) on one data cache, input size and backend; it lives in ``RUNS/<arch>-<hash>/``
(``history.json``, ``last.npz`` and ``predictions.npz`` as written by ``training.train``).
``train_or_load`` trains a run only when no completed run with the same identity exists, and
resumes an interrupted one; a stored run whose files do not load (a truncated history.json,
an unreadable last.npz, predictions.npz or checkpoint) is named with its error on the log and
trained again, never a reason for the report to fail. It holds the run folder's lock
throughout (``locks``). So the baseline trained in 02 is the baseline of 04 and the centre
point of 05's sweeps when the profile gives them the same settings: same seed, same settings,
same numbers.

Who calls ``train_or_load`` (this process, worker processes, or a Dask worker) is an
executor's business (``executors``): they depend on this module, never the other way round;
``train_in_worker`` is what a worker process calls. On NumPy every run multiplies matrices on
``RUN_THREADS`` BLAS threads, whoever trains it: how many threads a float32 product is split
over decides its last bits, and a few hundred SGD steps grow them into other numbers, so a
run's numbers do not depend on the machine's cores or on the executor, and N runs train side
by side on N cores. Wherever a run
trains, it checkpoints at its evaluation points, so a run whose process died resumes from
its last evaluation instead of starting over.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from ..data.cache import load_cache
from ..files import atomic_write_text
from ..locks import hold_folder
from ..nn.models import build_model
from ..nn.serialization import ModelFileError, read_npz
from ..training import TrainingDiverged, earlier_run_files, load_history, train
from ..training.checkpoint import checkpoint_step
from ..training.runfolder import (
    BEST_NAME,
    CHECKPOINT_NAME,
    DIVERGED_NAME,
    HISTORY_NAME,
    LAST_NAME,
    PREDICTIONS_NAME,
)

#: Training settings that enter a run's identity (besides arch, seed, input size, backend,
#: and the cache key), all fields of ``RunSpec``.
RUN_SETTINGS = ("steps", "batch_size", "lr", "momentum", "weight_decay", "eval_every",
                "train_eval_size", "augment", "dropout", "warmup_steps", "schedule", "min_lr")
#: BLAS threads of every NumPy run (see the module docstring).
RUN_THREADS = 1


def run_threads(backend: str) -> int | None:
    """The BLAS threads a run on ``backend`` trains with (None on a GPU)."""
    return RUN_THREADS if backend == "numpy" else None


def blas_threads() -> int | None:
    """How many threads this process's BLAS (OpenBLAS, MKL) splits a product over; None when
    there is no BLAS that threadpoolctl knows."""
    counts = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]
    return max(counts) if counts else None


@dataclass(frozen=True)
class RunSpec:
    """One training run to do: the network, the seed (weights, data order, dropout) and every
    setting that decides its numbers; ``label`` only names it in logs and tables."""

    arch: str
    seed: int
    steps: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float = 0.0
    eval_every: int | None = None
    train_eval_size: int | None = None
    augment: bool = False
    dropout: float = 0.5
    warmup_steps: int = 0
    schedule: str = "none"
    min_lr: float = 0.0
    label: str = ""

    def settings(self) -> dict:
        return {k: getattr(self, k) for k in RUN_SETTINGS}

    def replace(self, **changes) -> "RunSpec":
        return dataclasses.replace(self, **changes)

    def run_id(self, *, input_size: int, backend: str, cache_key: str) -> str:
        """``<arch>-<12 hex digits>``: a hash of everything that decides the run's numbers."""
        identity = {"arch": self.arch, "input_size": int(input_size), "seed": int(self.seed),
                    "backend": backend, "cache_key": cache_key, **self.settings(),
                    "blas_threads": run_threads(backend)}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return f"{self.arch}-{digest[:12]}"


@dataclass
class Run:
    """One finished (or diverged) training run: its spec, history and folder, the final
    model's valid predictions, where and how long it ran (``worker``, set by the executor,
    and ``wall_s``; None and 0 for a run reused from its folder) and the step it resumed
    from, if it did."""

    spec: RunSpec
    history: dict
    folder: Path
    reused: bool = False
    valid_probs: np.ndarray | None = None
    worker: str | None = None  # who trained it now; None for a run reused from its folder
    wall_s: float = 0.0
    resumed_from: int | None = None  # the checkpoint's step when training resumed from one

    @property
    def name(self) -> str:
        return self.spec.label or self.spec.arch

    @property
    def settings(self) -> dict:
        return self.spec.settings()

    @property
    def model_path(self) -> Path:
        return self.folder / LAST_NAME

    @property
    def diverged(self) -> bool:
        return self.history.get("status") == "diverged"

    @property
    def last_eval(self) -> dict | None:
        evals = self.history.get("evals") or []
        return evals[-1] if evals else None

    @property
    def seconds_per_step(self) -> float | None:
        return (self.history.get("timing") or {}).get("time_per_step_s")


def _completed(folder: Path, steps: int, damaged) -> tuple[dict, np.ndarray] | None:
    """(history, valid predictions) of the completed run of ``steps`` steps stored in
    ``folder``, or None. A run whose history.json, last.npz or predictions.npz does not load
    is reported through ``damaged(path, error)`` and counts as absent."""
    path, model, predictions = folder / HISTORY_NAME, folder / LAST_NAME, folder / PREDICTIONS_NAME
    if not path.exists() or not model.exists():
        return None
    try:
        history = load_history(path)
    except (OSError, ValueError) as exc:
        damaged(path, exc)
        return None
    if history.get("status") != "completed" or history.get("step") != steps:
        return None
    for file, entry in ((model, "__model__"), (predictions, "valid")):
        try:
            arrays = read_npz(file)
            if entry not in arrays:
                raise ValueError(f"no {entry!r} entry")
        except (OSError, ValueError) as exc:
            damaged(file, exc)
            return None
    return history, arrays["valid"]


def _stored_divergence(folder: Path, damaged) -> dict | None:
    """The record of a diverged run in ``folder`` (``diverged.json``), or None."""
    path = folder / DIVERGED_NAME
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        damaged(path, exc)
        return None


def _error_text(path: Path, exc: BaseException) -> str:
    text = str(exc)
    # ModelFileError names the file already; a JSON error does not.
    return text if str(path) in text else f"{path}: {exc.__class__.__name__}: {text}"


def run_folder(spec: RunSpec, cache, runs_dir, backend: str = "numpy") -> Path:
    """``RUNS/<run_id>``: where the run of ``spec`` on ``cache`` lives."""
    return Path(runs_dir) / spec.run_id(input_size=cache.size, backend=backend,
                                        cache_key=cache.key)


def _label(spec: RunSpec) -> str:
    return f"{spec.label or spec.arch} (seed {spec.seed})"


def _damage_log(spec: RunSpec, log):
    def damaged(path: Path, exc: BaseException) -> None:
        log(f"{_label(spec)}: the stored run does not load ({_error_text(path, exc)}); "
            "training it again")
    return damaged


def stored_run(spec: RunSpec, cache, runs_dir, *, backend: str = "numpy",
               log=print) -> Run | None:
    """The completed (or diverged) run of ``spec`` stored in its folder, or None when it
    still has to be trained (or finished). A stored run whose files do not load is named on
    the log and counts as absent."""
    folder = run_folder(spec, cache, runs_dir, backend)
    damaged = _damage_log(spec, log)
    done = _completed(folder, spec.steps, damaged)
    if done is not None:
        log(f"{_label(spec)}: reusing the completed run {folder.name}")
        return Run(spec, done[0], folder, reused=True, valid_probs=done[1], worker=None)
    history = _stored_divergence(folder, damaged)
    if history is not None:
        log(f"{_label(spec)}: reusing the diverged run {folder.name}")
        return Run(spec, history, folder, reused=True, worker=None)
    return None


def train_or_load(spec: RunSpec, cache, runs_dir, *, backend: str = "numpy",
                  progress: bool = False, checkpoint_every: int | None = None,
                  log=print) -> Run:
    """Train ``spec`` on ``cache``, or load the completed run that has exactly its identity.

    An interrupted run (its process stopped or killed) resumes from the checkpoint in its
    folder; the run then says so (``resumed_from``, and a log line). Checkpoints are written
    every ``checkpoint_every`` steps, by default at the run's evaluation points
    (``spec.eval_every``), besides the trainer's own (epoch ends, the end): where to write
    them does not change a number, so it is not part of the run's identity. The run folder is
    locked throughout (``locks``).

    A NaN/inf loss does not raise: the run comes back with ``diverged`` set and the history up
    to its last evaluation (so a sweep can show a learning rate that is too large)."""
    folder = run_folder(spec, cache, runs_dir, backend)
    start = time.perf_counter()
    with hold_folder(folder, "run folder"):
        run = stored_run(spec, cache, runs_dir, backend=backend, log=log)
        if run is None:
            with threadpool_limits(limits=run_threads(backend), user_api="blas"):
                run = _train(spec, cache, folder, backend=backend, progress=progress,
                             checkpoint_every=checkpoint_every or spec.eval_every, log=log)
            run.wall_s = time.perf_counter() - start
    return run


_caches: dict = {}  # cache folder -> MuraCache, per worker process


def open_cache(cache_dir: str, cache_key: str):
    """The data cache in ``cache_dir`` (memory-mapped), opened once per process."""
    cache = _caches.get(cache_dir)
    if cache is None or cache.key != cache_key:
        cache = _caches[cache_dir] = load_cache(cache_dir)
    return cache


def train_in_worker(spec: RunSpec, cache_dir: str, cache_key: str, runs_dir: str,
                    backend: str) -> tuple[Run, list[str]]:
    """``train_or_load`` in a worker process, which gets folders, never arrays: the data
    cache is opened from its folder. (The run, its log lines.)"""
    lines: list[str] = []
    run = train_or_load(spec, open_cache(cache_dir, cache_key), runs_dir, backend=backend,
                        log=lines.append)
    if not run.reused:
        run.worker = f"process {os.getpid()} ({platform.node()})"
    return run, lines


def _train(spec: RunSpec, cache, folder: Path, *, backend: str, progress: bool,
           checkpoint_every: int | None, log) -> Run:
    """Train (or resume, or train again) the run of ``spec`` in the locked ``folder``."""
    label, damaged = _label(spec), _damage_log(spec, log)
    settings = {k: v for k, v in spec.settings().items() if k != "dropout"}

    def run(resume: bool):
        model = build_model(spec.arch, input_size=cache.size, seed=spec.seed, backend=backend,
                            dropout=spec.dropout)
        return train(model, cache, **settings, seed=spec.seed, out_dir=str(folder),
                     resume=resume, overwrite=not resume, progress=progress,
                     checkpoint_every=checkpoint_every)

    # An unfinished run resumes from its checkpoint; any other files left in the folder
    # (damaged, or a run killed before its first checkpoint) are replaced.
    checkpoint = folder / CHECKPOINT_NAME
    resumed_from = None
    if checkpoint.exists():
        try:
            resumed_from = checkpoint_step(checkpoint)
        except ValueError as exc:
            damaged(checkpoint, exc)
    if resumed_from is not None:
        log(f"{label}: resuming {folder.name} from its checkpoint at step {resumed_from} of "
            f"{spec.steps}")
    else:
        if earlier_run_files(folder) and not checkpoint.exists():
            log(f"{label}: {folder} holds an unfinished run with no checkpoint; training it "
                "from step 0")
        log(f"{label}: training {spec.steps} steps (batch {spec.batch_size}, lr {spec.lr:g}, "
            f"momentum {spec.momentum:g}) -> {folder}")
    try:
        try:
            result = run(resume=resumed_from is not None)
        except ModelFileError as exc:  # the checkpoint to resume from does not load
            damaged(checkpoint, exc)
            resumed_from = None
            result = run(resume=False)
    except TrainingDiverged as exc:
        history = load_history(folder) if (folder / HISTORY_NAME).exists() else {
            "loss": [], "evals": []}
        history["status"] = "diverged"
        history["error"] = str(exc)
        history["diverged_at_step"] = exc.step
        atomic_write_text(folder / DIVERGED_NAME, json.dumps(history))
        log(f"{label}: diverged at step {exc.step} (lr {spec.lr:g})")
        return Run(spec, history, folder, resumed_from=resumed_from)
    # The resume checkpoint (model + momentum) is only needed while the run is unfinished;
    # last.npz, predictions.npz and history.json are what is read, and best.npz (the best
    # evaluation by valid study kappa) where it is not the last one.
    (folder / CHECKPOINT_NAME).unlink(missing_ok=True)
    best = result.history.get("best")
    if best is None or best["step"] == result.history.get("step"):
        (folder / BEST_NAME).unlink(missing_ok=True)
    done = _completed(folder, spec.steps, damaged)
    return Run(spec, result.history, folder, valid_probs=None if done is None else done[1],
               resumed_from=resumed_from)


def compact_history(history: dict) -> dict:
    """The loss per step and the headline metrics at each evaluation point of a history."""
    keys = ("image_accuracy", "patient_accuracy", "study_accuracy", "loss")
    return {"loss": history.get("loss", []), "status": history.get("status"),
            "evals": [{"step": e["step"], "epoch": e.get("epoch"),
                       **{split: {k: e[split].get(k) for k in keys}
                          for split in ("train", "valid") if split in e}}
                      for e in history.get("evals", [])]}


def run_record(run: Run) -> dict:
    """What the results JSON keeps of a run: its identity, where and how long it ran."""
    return {"name": run.name, "arch": run.spec.arch, "seed": run.spec.seed,
            "folder": run.folder.name, "reused": run.reused, "worker": run.worker,
            "wall_s": round(run.wall_s, 2), "resumed_from_step": run.resumed_from,
            "status": run.history.get("status")}
