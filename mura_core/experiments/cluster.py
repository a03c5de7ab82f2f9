"""Training runs on a Dask cluster: ``--scheduler ADDRESS`` or ``--scheduler local:N``.

``connect(scheduler)`` opens a ``distributed.Client`` on the scheduler at ADDRESS
(``tcp://host:8786``), or starts a ``LocalCluster`` of N worker processes with one thread each
on this machine. An address is first asked who it is (``probe_scheduler``, in a thread of its
own): whatever answers there must say it is a Dask scheduler within ``CONNECT_TIMEOUT_S``, so
a port where nothing, or something else (a web server), listens is one line within that
time, and no half-made client is left to complain at exit. ``local:N`` is bounded by the
cores and by the open-file limit (``local_worker_limit``). With CuPy, each local worker sees
one GPU (``CUDA_VISIBLE_DEVICES``; more workers than GPUs share them round robin). It prints
the scheduler's and the dashboard's addresses.

``DaskExecutor`` is an ``executors.Executor``: ``run`` hands each run that is not stored yet
to the cluster as one task, shows one progress bar (runs done / total), and returns the runs
in spec order with the worker that trained each and its wall time. A task gets the run's
settings and two folder paths, never arrays (``store.train_in_worker``): the worker opens the
data cache from its folder (memory-mapped, once per worker process) and writes the run into
the runs folder. So the cache and the runs folder must be at
the same path on every worker (a shared file system): every worker is checked before the
first task (``check_workers``) and every task checks again, with a one-line error that names
the worker, the folder and the fix.

Faults: a task whose worker dies is handed to another worker by the scheduler (up to
``distributed.scheduler.allowed-failures`` times, 3 by default), and a task that raises is
retried ``RETRIES`` times. Either way the run resumes from the last checkpoint in its folder
(``store.train_or_load``), so nothing is trained twice from the start, and its numbers
are those of an uninterrupted run.

The only module that imports Dask, and only inside the functions that need it, when a
scheduler is given.
"""
from __future__ import annotations

import asyncio
import copy
import importlib.util
import json
import logging
import os
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from .. import progress
from ..data.cache import INDEX_NAME
from ..files import check_writable_folder
from ..resources import WORKERS_PER_CORE, open_file_limit, usable_cores
from .store import run_folder, stored_run, train_in_worker

EXTRA = "pip install -e '.[cluster]'"
#: Seconds a scheduler has to answer before ``connect`` gives up.
CONNECT_TIMEOUT_S = 10
#: Seconds to wait for the first worker of a scheduler (or all of a LocalCluster's).
WORKER_WAIT_S = 120
#: Retries of a task that raised (a task whose worker died is rescheduled by Dask itself).
RETRIES = 2
#: The Dask event topic on which ``DaskExecutor.run`` reports runs done / total.
PROGRESS_TOPIC = "mura_core.runs"
#: ``local:N``: a LocalCluster of N worker processes on this machine.
LOCAL_CLUSTER = re.compile(r"local:(\d+)")
#: A scheduler's address: ``[PROTOCOL://]HOST:PORT`` (an IPv6 host in brackets).
ADDRESS = re.compile(r"(?:(?:tcp|tls|ws|wss|ucx)://)?(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):"
                     r"(\d{1,5})/?")
#: Files (sockets, pipes) this process holds open for each worker of a LocalCluster it runs:
#: about 12 measured with distributed 2026.8, and a margin.
FILES_PER_LOCAL_WORKER = 16
SHARED_FIX = ("put WORK (its cache/ and runs/ folders) on a file system that every worker "
              "mounts at the same path (e.g. --work /shared/mura), or use --scheduler local:N")


class ClusterError(RuntimeError):
    """The cluster cannot train the runs: no Dask, no scheduler, no workers, or a folder a
    worker cannot see. The message says what to do."""


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ClusterError("--scheduler needs Dask's distributed scheduler, which is not "
                           f"installed: {EXTRA}") from None
    return distributed


# --------------------------------------------------------------------------- connecting


def local_workers(scheduler: str) -> int | None:
    """N for a ``local:N`` setting (1 <= N <= ``local_worker_limit``), None for anything else
    (an address); ValueError for ``local:`` followed by anything but such a count."""
    if not scheduler.startswith("local:"):
        return None
    match = LOCAL_CLUSTER.fullmatch(scheduler)
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"scheduler {scheduler!r}: write local:N with N >= 1 worker "
                         "processes (e.g. local:2), or an address such as tcp://host:8786")
    n_workers = int(match.group(1))
    limit, why = local_worker_limit()
    if n_workers > limit:
        raise ValueError(f"scheduler {scheduler!r}: at most {limit} local worker processes on "
                         f"this machine ({why}); use local:{min(limit, usable_cores())}, one "
                         "per core")
    return n_workers


def local_worker_limit() -> tuple[int, str]:
    """(the most workers ``local:N`` may start here, why): ``WORKERS_PER_CORE`` per usable
    core (each trains on its own core at best), and no more than the open-file limit lets
    this process, which runs their scheduler, talk to."""
    cores, files = usable_cores(), open_file_limit()
    by_cores, by_files = WORKERS_PER_CORE * cores, max(1, files // FILES_PER_LOCAL_WORKER - 1)
    if by_files < by_cores:
        return by_files, (f"the open-file limit is {files:,} (ulimit -n) and each worker holds "
                          f"about {FILES_PER_LOCAL_WORKER} files open in this process")
    return by_cores, (f"{WORKERS_PER_CORE} per core on its {cores} core(s); more only slow "
                      "each other down")


def check_address(scheduler: str) -> None:
    """ValueError unless ``scheduler`` is written as a scheduler's address
    (``[tcp://]HOST:PORT``), before Dask is asked anything."""
    match = ADDRESS.fullmatch(scheduler)
    if match is None or not 1 <= int(match.group(1)) <= 65535:
        raise ValueError(f"scheduler {scheduler!r} is not a scheduler address: write "
                         "tcp://HOST:PORT (e.g. tcp://10.0.0.5:8786), local:N to start N "
                         "workers here, or processes:N")


@dataclass
class Cluster:
    """A client on a Dask scheduler; ``local`` is the LocalCluster we started (closed with
    us), None for a scheduler someone else runs. ``given``: the ``--scheduler`` setting."""

    client: object
    given: str
    local: object = None

    @property
    def address(self) -> str:
        return self.client.scheduler.address

    @property
    def workers(self) -> int:
        return len(self.client.nthreads())

    @property
    def dashboard(self) -> str | None:
        return self.client.dashboard_link

    def describe(self) -> dict:
        """What the provenance keeps: executor, scheduler setting, address, workers."""
        return {"executor": "dask", "scheduler": self.given, "address": self.address,
                "workers": self.workers, "dashboard": self.dashboard}

    def close(self) -> None:
        self.client.close()
        if self.local is not None:
            self.local.close()


def connect(scheduler: str, *, backend: str = "numpy", timeout: float = CONNECT_TIMEOUT_S,
            log=print) -> Cluster:
    """A ``Cluster`` for ``scheduler``: ``local:N`` starts a LocalCluster of N worker
    processes here (pinned one per GPU with ``backend="cupy"``); anything else is the address
    of a running scheduler, which must answer within ``timeout`` seconds and have a worker
    within ``WORKER_WAIT_S``. ClusterError otherwise, before anything is written."""
    distributed = _distributed()
    n_workers = local_workers(scheduler)
    if n_workers is not None:
        devices = _gpu_devices() if backend == "cupy" else None
        return start_local_cluster(n_workers, devices=devices, log=log)
    check_address(scheduler)
    probe_scheduler(scheduler, timeout)
    try:
        client = distributed.Client(scheduler, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise _no_scheduler(scheduler, timeout, exc) from None
    cluster = Cluster(client, scheduler)
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except (TimeoutError, OSError):
        cluster.close()
        raise ClusterError(f"the scheduler at {scheduler} has no worker (waited "
                           f"{WORKER_WAIT_S} s): start some with dask worker {scheduler}") from None
    log(f"dask: {cluster.workers} worker(s) at {cluster.address}; dashboard {cluster.dashboard}")
    return cluster


def _no_scheduler(scheduler: str, timeout: float, exc: BaseException) -> ClusterError:
    return ClusterError(
        f"no Dask scheduler answers at {scheduler} (waited {timeout:g} s: "
        f"{exc.__class__.__name__}): check the address, start a scheduler there "
        f"(dask scheduler) with workers (dask worker {scheduler}), or use --scheduler "
        "local:N")


async def _identity(address: str, timeout: float):
    from distributed.comm import connect as open_comm

    comm = await open_comm(address, timeout=timeout)
    try:
        await comm.write({"op": "identity", "reply": True})
        return await comm.read()
    finally:
        comm.abort()


def probe_scheduler(scheduler: str, timeout: float = CONNECT_TIMEOUT_S) -> dict:
    """The identity of the Dask scheduler at ``scheduler`` (its "identity" answer), asked
    over one connection that is closed again; ClusterError within about ``timeout`` seconds
    when nothing answers, or when what answers is no Dask scheduler (a web server: no
    answer or a reply Dask cannot read, an absurd frame length: a MemoryError). Runs in a
    thread with its own event loop, so it works from a notebook's kernel too, and the wait
    is bounded even if a read never returns."""
    outcome: dict = {}

    def ask():
        try:
            # Dask's own connect gives up after ``timeout``; the second more bounds the rest.
            outcome["reply"] = asyncio.run(asyncio.wait_for(_identity(scheduler, timeout),
                                                            timeout + 1))
        except BaseException as exc:  # reported in the caller's thread
            outcome["error"] = exc

    asker = threading.Thread(target=ask, name="mura-scheduler-probe", daemon=True)
    asker.start()
    asker.join(timeout + 5)
    error, reply = outcome.get("error"), outcome.get("reply")
    if asker.is_alive() or isinstance(error, (OSError, TimeoutError, asyncio.TimeoutError)):
        raise _no_scheduler(scheduler, timeout, error or TimeoutError())
    if error is not None or not (isinstance(reply, dict) and reply.get("type") == "Scheduler"):
        what = "an answer that is not a scheduler's" if error is None else type(error).__name__
        raise ClusterError(
            f"what answers at {scheduler} is not a Dask scheduler ({what}): check the address "
            "and port (a Dask scheduler listens on 8786 by default; 8787 is its dashboard), "
            "or use --scheduler local:N")
    return reply


def _gpu_devices() -> list[str]:
    """The GPUs local workers are pinned to: ``CUDA_VISIBLE_DEVICES`` when set, else every
    device CuPy sees; ClusterError when there is none."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d.strip() for d in visible.split(",") if d.strip()]
    else:
        import cupy

        devices = [str(i) for i in range(cupy.cuda.runtime.getDeviceCount())]
    if not devices:
        raise ClusterError("--scheduler local:N with CuPy: no GPU is visible "
                           "(CUDA_VISIBLE_DEVICES); use --backend numpy")
    return devices


def start_local_cluster(n_workers: int, *, devices: list[str] | None = None,
                        log=print) -> Cluster:
    """A LocalCluster of ``n_workers`` processes on this machine, one thread each; with
    ``devices`` (GPU numbers), worker i sees only GPU ``devices[i % len(devices)]``."""
    distributed = _distributed()
    local = distributed.LocalCluster(n_workers=0, threads_per_worker=1, processes=True,
                                     silence_logs=logging.ERROR)
    # One spec per worker, so each gets its own environment (what dask-cuda does per GPU).
    for i in range(n_workers):
        spec = copy.deepcopy(local.new_spec)
        if devices:
            spec["options"]["env"] = {"CUDA_VISIBLE_DEVICES": devices[i % len(devices)]}
        local.worker_spec[i] = spec
    local.scale(n_workers)
    client = distributed.Client(local, set_as_default=False)
    cluster = Cluster(client, f"local:{n_workers}", local)
    try:
        client.wait_for_workers(n_workers, timeout=WORKER_WAIT_S)
    except (TimeoutError, OSError):
        cluster.close()
        raise ClusterError(f"the LocalCluster's {n_workers} workers did not start within "
                           f"{WORKER_WAIT_S} s; try fewer (local:1)") from None
    pinned = "" if not devices else (
        f", each pinned to one of {len(devices)} GPU(s): "
        + ", ".join(f"worker {i} -> GPU {devices[i % len(devices)]}" for i in range(n_workers)))
    dashboard = cluster.dashboard
    if importlib.util.find_spec("bokeh") is None:
        dashboard += " (its plots need bokeh: pip install bokeh)"
    log(f"dask: started a LocalCluster of {n_workers} worker process(es), 1 thread each"
        f"{pinned}, at {cluster.address}; dashboard {dashboard}")
    cores = usable_cores()
    if not devices and n_workers > cores:
        log(f"dask: warning: {n_workers} workers share {cores} cores, so each run trains "
            f"slower than on a core of its own; local:{cores} trains as fast")
    return cluster


# --------------------------------------------------------------------------- on the workers

def _shared_problem(cache_dir: str, cache_key: str, runs_dir: str) -> str | None:
    """What keeps this process from using the cache and the runs folder, or None."""
    index = Path(cache_dir) / INDEX_NAME
    if not index.is_file():
        return f"cannot see the data cache {cache_dir} (no {INDEX_NAME} there)"
    if json.loads(index.read_text()).get("key") != cache_key:
        return f"sees another data cache at {cache_dir} (its key differs)"
    if not Path(runs_dir).is_dir():
        return f"cannot see the runs folder {runs_dir}"
    try:
        check_writable_folder(runs_dir, "runs folder")
    except OSError as exc:
        return str(exc)
    return None


def _worker_problem(cache_dir: str, cache_key: str, runs_dir: str, probe: str) -> str | None:
    """``_shared_problem``, and whether this worker sees the file the client just wrote into
    the runs folder (a folder of the same name on another disk does not hold it)."""
    problem = _shared_problem(cache_dir, cache_key, runs_dir)
    if problem is None and not (Path(runs_dir) / probe).is_file():
        problem = f"sees a runs folder {runs_dir} other than this machine's"
    return problem


def _train_task(spec, cache_dir: str, cache_key: str, runs_dir: str, backend: str):
    """One run on a worker: (the ``store.Run``, its log lines)."""
    from distributed import get_worker

    worker = get_worker().address
    problem = _shared_problem(cache_dir, cache_key, runs_dir)
    if problem is not None:
        raise ClusterError(f"worker {worker} {problem}; {SHARED_FIX}")
    run, lines = train_in_worker(spec, cache_dir, cache_key, runs_dir, backend)
    if not run.reused:  # a retry after the run had finished finds it stored
        run.worker = worker
    return run, lines


# --------------------------------------------------------------------------- the executor


def check_workers(client, cache, runs_dir: Path) -> None:
    """ClusterError naming the first worker that cannot use ``cache`` or ``runs_dir``."""
    probe = Path(runs_dir) / f".probe-{uuid.uuid4().hex}"
    probe.write_text("written by the client: a worker that sees the runs folder sees this\n")
    try:
        problems = client.run(_worker_problem, str(Path(cache.cache_dir).resolve()), cache.key,
                              str(runs_dir), probe.name)
    except ImportError as exc:
        raise ClusterError(f"a worker cannot import mura_core ({exc}): install this project "
                           f"on every worker ({EXTRA})") from None
    finally:
        probe.unlink(missing_ok=True)
    bad = sorted((w, p) for w, p in problems.items() if p)
    if bad:
        worker, problem = bad[0]
        more = f" (and {len(bad) - 1} other worker(s))" if len(bad) > 1 else ""
        raise ClusterError(f"worker {worker}{more} {problem}; {SHARED_FIX}")


class DaskExecutor:
    """Trains each run not yet stored as one task on ``cluster`` (see the module doc)."""

    kind = "dask"

    def __init__(self, cluster: Cluster, *, retries: int = RETRIES, progress: bool = True):
        self.cluster, self.retries, self.progress = cluster, retries, progress

    @property
    def workers(self) -> int:
        return self.cluster.workers

    def describe(self) -> dict:
        return self.cluster.describe()

    def close(self) -> None:
        self.cluster.close()

    def run(self, specs, cache, runs_dir, *, backend: str = "numpy", log=print) -> list:
        from distributed import as_completed

        runs_dir = Path(runs_dir).resolve()
        runs = [stored_run(spec, cache, runs_dir, backend=backend, log=log) for spec in specs]
        todo = [i for i, run in enumerate(runs) if run is None]
        if not todo:
            return runs
        client = self.cluster.client
        cache_dir = str(Path(cache.cache_dir).resolve())
        runs_dir.mkdir(parents=True, exist_ok=True)
        check_workers(client, cache, runs_dir)
        futures = {}
        for i in todo:
            run_id = run_folder(specs[i], cache, runs_dir, backend).name
            key = f"train-{run_id}-{uuid.uuid4().hex[:8]}"  # the dashboard shows it
            futures[client.submit(_train_task, specs[i], cache_dir, cache.key,
                                  str(runs_dir), backend, key=key, pure=False,
                                  retries=self.retries)] = i
        batch, total, done = uuid.uuid4().hex, len(specs), len(specs) - len(todo)
        client.log_event(PROGRESS_TOPIC, {"batch": batch, "done": done, "total": total})
        bar = progress.bar(total=total, initial=done, desc="runs", unit="run",
                           disable=not self.progress)
        try:
            for future in as_completed(futures, loop=client.loop):
                spec = specs[futures[future]]
                try:
                    run, lines = future.result()
                except Exception as exc:  # any error of the task, named
                    raise ClusterError(f"{spec.label or spec.arch} (seed {spec.seed}) failed on "
                                       f"the cluster: {exc.__class__.__name__}: {exc}") from exc
                for line in lines:
                    log(line)
                if not run.reused:
                    log(f"{spec.label or spec.arch} (seed {spec.seed}): done on {run.worker} "
                        f"in {run.wall_s:.1f} s")
                runs[futures[future]] = run
                done += 1
                bar.update(1)
                client.log_event(PROGRESS_TOPIC, {"batch": batch, "done": done, "total": total})
        except BaseException:
            client.cancel([f for f in futures if not f.done()])
            raise
        finally:
            bar.close()
        return runs


def follow_progress(client, show) -> None:
    """Call ``show(batch, done, total)`` for every progress event of ``DaskExecutor.run``, in
    any process connected to the same scheduler (``batch`` names one call of ``run``): how the
    report pipeline shows the runs of the notebooks it executes."""
    def handler(event):
        msg = event[1]
        show(msg["batch"], msg["done"], msg["total"])

    client.subscribe_topic(PROGRESS_TOPIC, handler)


class RunsBar:
    """A ``follow_progress`` display: one tqdm bar (runs done / total) per batch of runs, on
    stderr."""

    def __init__(self):
        self.batch, self.bar = None, None

    def __call__(self, batch: str, done: int, total: int) -> None:
        if batch != self.batch:
            self.close()
            self.batch = batch
            self.bar = progress.bar(total=total, initial=done, desc="runs on the cluster", unit="run")
        elif self.bar is not None:
            self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
