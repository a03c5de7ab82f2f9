"""A notebook's training cell in a live kernel, driven as JupyterLab drives it (the kernel's
messages and its interrupt, through jupyter_client): the run is shown as it trains, and an
interrupt leaves a checkpoint from which the very same cell resumes."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from mura_core.progress import BATCH_ENV
from mura_core.training.checkpoint import checkpoint_step

pytestmark = pytest.mark.slow
jupyter_client = pytest.importorskip("jupyter_client")

STEPS = 4000  # far more than the test lets it train


def _outputs(client, msg_id: str, timeout: float = 120.0) -> list[dict]:
    """The iopub messages of one execution, up to its kernel going idle."""
    messages, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id and msg["msg_type"] != "comm_open":
            continue
        messages.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return messages
    raise AssertionError(f"the cell did not finish in {timeout:.0f} s")


def _text(messages) -> str:
    return "".join(m["content"].get("text", "") for m in messages if m["msg_type"] == "stream")


def _errors(messages) -> list[str]:
    return [m["content"]["ename"] for m in messages if m["msg_type"] == "error"]


def _wait_for_step(folder: Path, past: int, timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            step = json.loads((folder / "history.json").read_text())["step"]
            if step > past:
                return step
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{folder} did not pass step {past} in {timeout:.0f} s")


def _interrupt_while_training(manager, client, folder: Path, past: int) -> list[dict]:
    msg_id = client.execute("[run] = ctx.train([spec])")
    _wait_for_step(folder, past)
    manager.interrupt_kernel()
    return _outputs(client, msg_id)


def test_an_interrupted_training_cell_keeps_its_run_and_the_same_cell_resumes_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != BATCH_ENV}
    env["MPLBACKEND"] = "agg"
    log = (tmp_path / "kernel.log").open("w")  # where the workers' own lines go
    manager, client = jupyter_client.manager.start_new_kernel(
        kernel_name="python3", cwd=str(tmp_path), env=env, startup_timeout=60, stdout=log,
        stderr=log)
    try:
        outputs: list[dict] = []
        setup = client.execute_interactive(
            "from mura_core.experiments.store import run_folder\n"
            "from mura_core.report import open_notebook\n"
            f"ctx = open_notebook('02_training', profile='smoke', work_dir={str(tmp_path)!r}, "
            f"out_dir={str(tmp_path / 'report')!r}, figures_dir={str(tmp_path / 'figures')!r}, "
            f"steps={STEPS}, lr=0.001)\n"
            "spec = ctx.run_spec()\n"
            "print(run_folder(spec, ctx.cache, ctx.paths.runs, ctx.backend))",
            timeout=120, output_hook=lambda msg: outputs.append(msg))
        assert setup["content"]["status"] == "ok"
        folder = Path(_text(outputs).strip().splitlines()[-1])

        first = _interrupt_while_training(manager, client, folder, past=0)
        assert _errors(first) == ["KeyboardInterrupt"]
        assert any(m["msg_type"] == "comm_open" for m in first), "no progress widget was shown"
        history = json.loads((folder / "history.json").read_text())
        assert history["status"] == "interrupted"
        stopped = checkpoint_step(folder / "checkpoint.npz")
        assert stopped == history["step"], "the interrupt stopped after a step and kept it"
        assert 0 < stopped < STEPS
        assert "stopped at once" not in (tmp_path / "kernel.log").read_text()

        second = _interrupt_while_training(manager, client, folder, past=stopped)
        assert f"resumes from its checkpoint at step {stopped} of {STEPS}" in _text(second)
        assert _errors(second) == ["KeyboardInterrupt"]
        assert json.loads((folder / "history.json").read_text())["step"] > stopped
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
        log.close()

