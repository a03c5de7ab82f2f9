"""The Dask executor: runs fanned out over worker processes give the numbers of the local
executor, in spec order; a worker killed mid-run costs only the steps since the run's last
checkpoint; a scheduler that does not answer, or a folder a worker cannot see, is a clear
error. Real processes throughout: a LocalCluster, and ``dask scheduler`` / ``dask worker``
started (and stopped) by the tests on 127.0.0.1."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_smoke_report

from mura_core.data import build_cache, generate_synthetic
from mura_core.experiments import comparisons, store
from mura_core.experiments.executors import Executor, LocalExecutor, make_executor, parse_scheduler

distributed = pytest.importorskip("distributed", reason="the cluster extra is not installed")
from mura_core.experiments import cluster  # noqa: E402

# Another cluster on this machine may hold the default dashboard port; Dask then takes another.
pytestmark = pytest.mark.filterwarnings("ignore:Port 8787 is already in use:UserWarning")

SPEC = store.RunSpec(arch="baseline", seed=0, steps=4, batch_size=4, lr=0.01,
                     momentum=0.9, eval_every=2, train_eval_size=8)
#: History entries that hold numbers (``timing`` is a clock; ``config``/``data`` name folders).
NUMBERS = ("loss", "lr", "evals", "step", "epoch", "status", "best", "total_steps",
           "steps_per_epoch", "model")
#: Worker processes see this checkout, as the tests' own process does.
WORKER_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(
    [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))


def numbers(history: dict) -> dict:
    return {k: history.get(k) for k in NUMBERS}


def quiet(*args, **kwargs):
    pass


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, n_train=40, n_valid=16, seed=3)
    with pytest.warns(Warning):  # the generator truncates one file on purpose
        return build_cache(root, size=32, mode="pad", cache_dir=root / "cache", progress=False)


@pytest.fixture(scope="module")
def local_cluster():
    """A LocalCluster of 2 worker processes, one thread each (``--scheduler local:2``)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", WORKER_ENV["PYTHONPATH"])  # the spawned workers inherit it
        started = cluster.connect("local:2", log=quiet)
    yield started
    started.close()


# --------------------------------------------------------------------------- settings


def test_the_local_and_the_dask_executor_share_one_interface(local_cluster):
    dask = cluster.DaskExecutor(local_cluster, progress=False)
    for executor in (LocalExecutor(), dask):
        assert isinstance(executor, Executor)
        assert set(executor.describe()) >= {"executor", "workers", "address"}
    assert (LocalExecutor().kind, dask.kind) == ("local", "dask")
    assert dask.workers == 2 and LocalExecutor().workers == 1


def test_parse_scheduler_tells_local_a_local_cluster_and_an_address_apart():
    assert parse_scheduler(None) is None and parse_scheduler("local") is None
    assert parse_scheduler("") is None
    assert parse_scheduler("local:2") == "local:2"
    assert parse_scheduler(" tcp://10.0.0.5:8786 ") == "tcp://10.0.0.5:8786"
    for bad in ("local:0", "local:two", "local:"):
        with pytest.raises(ValueError, match="local:N with N >= 1"):
            parse_scheduler(bad)
    assert isinstance(make_executor("local"), LocalExecutor)


def test_without_dask_the_scheduler_option_names_the_extra_and_local_runs_need_no_dask():
    code = ("import sys\nsys.modules['distributed'] = None\nsys.modules['dask'] = None\n"
            "from mura_core.experiments.executors import make_executor\n"
            "make_executor(None)\n"
            "from mura_core.experiments.cluster import ClusterError\n"
            "try:\n    make_executor('local:2')\n"
            "except ClusterError as exc:\n    print(exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ("--scheduler needs Dask's distributed scheduler, which is "
                                   "not installed: pip install -e '.[cluster]'")


# --------------------------------------------------------------------------- same numbers


def test_runs_on_two_workers_equal_local_runs_and_come_back_in_spec_order(cache, tmp_path,
                                                                          local_cluster):
    specs = [SPEC.replace(seed=1, label="b"), SPEC.replace(label="a"),
             SPEC.replace(arch="wider", label="c"), SPEC.replace(lr=0.001, label="d")]
    local = comparisons.run_all(specs, cache, tmp_path / "local", log=quiet)
    events, logs = [], []
    cluster.follow_progress(local_cluster.client, lambda *event: events.append(event))
    executor = cluster.DaskExecutor(local_cluster, progress=False)
    runs = comparisons.run_all(specs, cache, tmp_path / "dask", executor=executor,
                               log=logs.append)

    assert [r.name for r in runs] == ["b", "a", "c", "d"]
    workers = set(local_cluster.client.nthreads())
    for mine, theirs in zip(runs, local):
        assert mine.folder.name == theirs.folder.name and mine.folder.parent.name == "dask"
        assert numbers(mine.history) == numbers(theirs.history), mine.name
        np.testing.assert_array_equal(mine.valid_probs, theirs.valid_probs)
        assert mine.worker in workers and mine.wall_s > 0 and not mine.reused
        assert mine.resumed_from is None
        assert json.loads((mine.folder / "history.json").read_text())["status"] == "completed"
    assert len({r.worker for r in runs}) == 2, "both workers trained"
    record = store.run_record(runs[0])
    assert record["worker"] == runs[0].worker and record["wall_s"] > 0
    assert sum("done on tcp://" in line for line in logs) == 4
    deadline = time.monotonic() + 10
    while (not events or events[-1][1] != 4) and time.monotonic() < deadline:
        time.sleep(0.05)  # events travel through the scheduler
    assert [(done, total) for _, done, total in events] == [(0, 4), (1, 4), (2, 4), (3, 4),
                                                            (4, 4)]

    again = comparisons.run_all(specs, cache, tmp_path / "dask", executor=executor, log=quiet)
    assert all(r.reused and r.worker is None for r in again), "stored runs are not submitted"
    assert len(events) == 5, "nothing was submitted the second time"
    assert executor.describe() == {"executor": "dask", "scheduler": "local:2",
                                   "address": local_cluster.address, "workers": 2,
                                   "dashboard": local_cluster.dashboard}


def test_local_workers_are_pinned_one_device_each_round_robin(monkeypatch):
    # No GPU here: what is checked is each worker's CUDA_VISIBLE_DEVICES, which decides the
    # one device CuPy sees in that process.
    monkeypatch.setenv("PYTHONPATH", WORKER_ENV["PYTHONPATH"])
    pinned = cluster.start_local_cluster(3, devices=["0", "1"], log=quiet)
    try:
        seen = pinned.client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        names = {a: w["name"] for a, w in pinned.client.scheduler_info()["workers"].items()}
        assert {names[a]: d for a, d in seen.items()} == {0: "0", 1: "1", 2: "0"}
        assert set(pinned.client.nthreads().values()) == {1}
    finally:
        pinned.close()


def test_a_local_cluster_with_more_workers_than_cores_says_so(monkeypatch):
    """Each worker trains on one BLAS thread (store.RUN_THREADS); more workers than cores is
    warned about, with the count that fits; a fitting cluster is not."""
    monkeypatch.setenv("PYTHONPATH", WORKER_ENV["PYTHONPATH"])
    for cores, warned in ((1, True), (2, False)):
        monkeypatch.setattr(cluster, "usable_cores", lambda cores=cores: cores)
        said = []
        started = cluster.start_local_cluster(2, log=said.append)
        started.close()
        warnings_said = [line for line in said if "warning" in line]
        assert bool(warnings_said) == warned, said
        if warned:
            assert "local:1 trains as fast" in warnings_said[0]


# --------------------------------------------------------------------------- shared folders


def test_a_worker_that_cannot_see_the_cache_or_the_runs_folder_is_named(cache, tmp_path):
    class OneWorker:  # stands in for a client whose worker has another file system
        def __init__(self, worker_sees):
            self.worker_sees = worker_sees

        def run(self, function, cache_dir, key, runs_dir, probe):
            return {"tcp://10.0.0.7:4001": function(*self.worker_sees(cache_dir, key, runs_dir,
                                                                      probe))}

    runs = tmp_path / "runs"
    runs.mkdir()
    with pytest.raises(cluster.ClusterError) as info:
        cluster.check_workers(OneWorker(lambda c, k, r, p: (str(tmp_path / "elsewhere"), k, r, p)),
                              cache, runs)
    assert str(info.value) == (
        f"worker tcp://10.0.0.7:4001 cannot see the data cache {tmp_path / 'elsewhere'} (no "
        f"index.json there); {cluster.SHARED_FIX}")
    with pytest.raises(cluster.ClusterError, match=f"sees a runs folder {runs} other than this"):
        cluster.check_workers(OneWorker(lambda c, k, r, p: (c, k, r, "not-the-probe")), cache,
                              runs)
    cluster.check_workers(OneWorker(lambda *args: args), cache, runs)
    assert list(runs.iterdir()) == [], "the probe file is removed"


# --------------------------------------------------------------------------- faults


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def scheduler_and_two_workers(tmp_path):
    """``dask scheduler`` and two ``dask worker`` processes (no nanny: a killed worker stays
    dead) on 127.0.0.1; (address, {worker address: its process})."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    dask = [sys.executable, "-m", "dask"]
    log = open(tmp_path / "dask.log", "w")
    procs = [subprocess.Popen(dask + ["scheduler", "--host", "127.0.0.1", "--port",
                                      address.rsplit(":", 1)[1], "--no-dashboard"],
                              env=WORKER_ENV, stdout=log, stderr=log)]
    try:
        client = distributed.Client(address, timeout=60, set_as_default=False)
        procs += [subprocess.Popen(dask + ["worker", address, "--nthreads", "1", "--no-nanny",
                                           "--no-dashboard", "--name", name],
                                   env=WORKER_ENV, stdout=log, stderr=log)
                  for name in ("w1", "w2")]
        client.wait_for_workers(2, timeout=120)
        pids = client.run(os.getpid)
        client.close()
        workers = {address: next(p for p in procs if p.pid == pid) for address, pid in pids.items()}
        yield address, workers
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


@pytest.mark.slow
def test_a_run_whose_worker_is_killed_resumes_from_its_checkpoint_elsewhere(
        cache, tmp_path, scheduler_and_two_workers):
    address, workers = scheduler_and_two_workers
    # Long enough to be killed mid-run: a checkpoint every 3 steps (its evaluation points).
    specs = [SPEC.replace(steps=30, eval_every=3, seed=s) for s in (0, 1)]
    executor = make_executor(address, log=quiet)
    logs, result = [], {}
    worker = threading.Thread(target=lambda: result.update(
        runs=executor.run(specs, cache, tmp_path / "runs", log=logs.append)))
    worker.start()
    victim = store.run_folder(specs[0], cache, (tmp_path / "runs").resolve())
    deadline = time.monotonic() + 120
    while not (victim / "checkpoint.npz").exists():
        assert time.monotonic() < deadline and worker.is_alive(), "no checkpoint was written"
        time.sleep(0.01)
    processing = executor.cluster.client.processing()
    [killed] = [w for w, keys in processing.items() if any(victim.name in k for k in keys)]
    workers[killed].send_signal(signal.SIGKILL)
    worker.join(timeout=300)
    assert not worker.is_alive()
    runs = result["runs"]
    executor.close()

    local = LocalExecutor().run(specs, cache, tmp_path / "local", log=quiet)
    for mine, theirs in zip(runs, local):
        assert mine.history["status"] == "completed"
        assert numbers(mine.history) == numbers(theirs.history)
        np.testing.assert_array_equal(mine.valid_probs, theirs.valid_probs)
    resumed = runs[0].resumed_from
    assert resumed is not None and 3 <= resumed < 30, "the killed run resumed from a checkpoint"
    assert runs[0].worker != killed and runs[0].worker in workers
    assert f"baseline (seed 0): resuming {victim.name} from its checkpoint at step {resumed} " \
           "of 30" in logs
    assert store.run_record(runs[0])["resumed_from_step"] == resumed
    assert runs[1].resumed_from is None or runs[1].worker != killed


# --------------------------------------------------------------------------- the report


def test_a_scheduler_that_does_not_answer_fails_fast_and_writes_nothing(tmp_path):
    address = f"tcp://127.0.0.1:{_free_port()}"  # nothing listens there
    cmd = [sys.executable, "-m", "mura_core", "report", "--profile", "smoke", "--no-progress",
           "--out", str(tmp_path / "report"), "--figures", str(tmp_path / "figures"),
           "--work", str(tmp_path / "work"), "--scheduler", address]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert time.monotonic() - start < cluster.CONNECT_TIMEOUT_S + 30
    assert proc.stderr.strip().splitlines() == [
        f"error: no Dask scheduler answers at {address} (waited {cluster.CONNECT_TIMEOUT_S} s: "
        f"OSError): check the address, start a scheduler there (dask scheduler) with workers "
        f"(dask worker {address}), or use --scheduler local:N"]
    assert list(tmp_path.iterdir()) == [], "nothing written"


def _stored_histories(runs_dir: Path) -> dict:
    """Each stored run's history and predictions, keyed by its settings (the run folder's
    name depends on the data folder's path, which differs between two reports)."""
    out = {}
    for path in sorted(runs_dir.glob("*/history.json")):
        history = json.loads(path.read_text())
        settings = {k: v for k, v in history["config"].items() if k != "out_dir"}
        with np.load(path.parent / "predictions.npz") as f:
            out[json.dumps([history["model"]["arch"], settings], sort_keys=True)] = (
                numbers(history), f["valid"].tolist())
    return out


@pytest.mark.slow
def test_the_smoke_report_on_two_local_workers_has_the_local_reports_numbers(
        smoke_report, tmp_path):
    local_tmp, _ = smoke_report
    proc = run_smoke_report(tmp_path, "--scheduler", "local:2", "--no-pdf")
    assert "dask: started a LocalCluster of 2 worker process(es)" in proc.stdout
    assert "dashboard http://" in proc.stdout

    local = _stored_histories(local_tmp / "work" / "runs")
    dask = _stored_histories(tmp_path / "work" / "runs")
    assert len(local) >= 8 and local.keys() == dask.keys()
    for key in local:
        assert dask[key] == local[key], key

    results = tmp_path / "report" / "results"
    arch = json.loads((results / "04_architectures.json").read_text())
    trained = [r for r in arch["runs"] if not r["reused"]]
    assert trained and all(r["worker"].startswith("tcp://127.0.0.1:") and r["wall_s"] > 0
                           for r in trained)
    executor = json.loads((results / "provenance.json").read_text())["executor"]
    assert (executor["executor"], executor["scheduler"], executor["workers"]) == (
        "dask", "local:2", 2)
    assert "Dask, 2 worker(s)" in (tmp_path / "report" / "report.html").read_text()


# --------------------------------------------------------------------------- addresses


class _NotDask:
    """A TCP server on 127.0.0.1 that is no Dask scheduler: an HTTP server (it waits for a
    request line, then answers HTTP), one that says nothing, or one that sends ``reply``
    (bytes Dask reads as frame lengths). ``address``; a context manager."""

    def __init__(self, kind: str, reply: bytes = b""):
        import http.server
        import socketserver

        class Talks(socketserver.BaseRequestHandler):
            def handle(self):
                if reply:
                    self.request.sendall(reply)
                time.sleep(40)

        handler = http.server.SimpleHTTPRequestHandler if kind == "http" else Talks
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.address = f"tcp://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("kind, reply, says", [
    ("http", b"", "no Dask scheduler answers at {address} (waited 10 s: "),
    ("silent", b"", "no Dask scheduler answers at {address} (waited 10 s: "),
    ("bytes", b"\xff" * 64, "what answers at {address} is not a Dask scheduler (ValueError)"),
    # eight bytes that Dask reads as 3 EiB of frames to come
    ("huge", (3 << 60).to_bytes(8, "little") + b"\x00" * 64,
     "what answers at {address} is not a Dask scheduler ("),
])
def test_an_address_where_no_dask_scheduler_answers_fails_within_the_connect_timeout(
        kind, reply, says):
    with _NotDask(kind, reply) as server:
        start = time.monotonic()
        with pytest.raises(cluster.ClusterError) as info:
            cluster.connect(server.address, log=quiet)
        assert time.monotonic() - start < cluster.CONNECT_TIMEOUT_S + 20
    assert str(info.value).startswith(says.format(address=server.address))


def test_report_on_a_web_server_is_one_line_within_the_timeout_and_exits_quietly(tmp_path):
    with _NotDask("http") as server:
        cmd = [sys.executable, "-m", "mura_core", "report", "--profile", "smoke", "--no-progress",
               "--out", str(tmp_path / "report"), "--figures", str(tmp_path / "figures"),
               "--work", str(tmp_path / "work"), "--scheduler", server.address]
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        took = time.monotonic() - start
    assert proc.returncode == 2 and took < cluster.CONNECT_TIMEOUT_S + 30
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: no Dask scheduler answers at {server.address} (waited 10 s: ")
    assert line.endswith(f"check the address, start a scheduler there (dask scheduler) with "
                         f"workers (dask worker {server.address}), or use --scheduler local:N")
    assert list(tmp_path.iterdir()) == [], "nothing written"


@pytest.mark.parametrize("setting", ["foo bar", "tcp://", "tcp://host", "host:99999",
                                     "http//x:1"])
def test_a_setting_that_is_no_address_is_refused_before_dask_is_asked(setting, tmp_path):
    with pytest.raises(ValueError, match=r"is not a scheduler address: write tcp://HOST:PORT"):
        parse_scheduler(setting)
    code = ("import sys\nsys.modules['distributed'] = None\n"
            "from mura_core.__main__ import main\nsys.exit(main(sys.argv[1:]))\n")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code, "report", "--profile", "smoke",
                           "--out", str(tmp_path / "r"), "--figures", str(tmp_path / "f"),
                           "--work", str(tmp_path / "w"), "--scheduler", setting],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and time.monotonic() - start < 60
    assert proc.stderr.strip().splitlines() == [
        f"error: scheduler {setting!r} is not a scheduler address: write tcp://HOST:PORT (e.g. "
        "tcp://10.0.0.5:8786), local:N to start N workers here, or processes:N"]


def test_a_local_cluster_is_bounded_by_the_cores_and_the_open_file_limit(monkeypatch):
    from mura_core import resources

    cores = resources.usable_cores()
    assert parse_scheduler(f"local:{4 * cores}") == f"local:{4 * cores}"
    with pytest.raises(ValueError) as info:
        parse_scheduler("local:10000")
    assert str(info.value) == (
        f"scheduler 'local:10000': at most {4 * cores} local worker processes on this machine "
        f"(4 per core on its {cores} core(s); more only slow each other down); use "
        f"local:{cores}, one per core")
    monkeypatch.setattr(cluster, "open_file_limit", lambda: 64)
    with pytest.raises(ValueError, match=r"at most 3 local worker processes on this machine "
                                         r"\(the open-file limit is 64 \(ulimit -n\)"):
        parse_scheduler("local:4")
