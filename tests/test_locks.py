"""Folder locks between real processes: one writer per folder, a second one refused naming the
first, a killed holder's lock reported and taken, a holder on another machine refused."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from processes import REPO

from mura_core.locks import FolderLocked, hold_folder, lock_holder

HOLDER = """
import sys, time
from mura_core.locks import hold_folder
with hold_folder(sys.argv[1], "run folder"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def start_holder(folder, seconds: float = 60) -> subprocess.Popen:
    """Another process that holds ``folder``'s lock for ``seconds``; returns once it does."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(seconds)], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_with_one_line_naming_the_first(tmp_path):
    folder = tmp_path / "run"
    holder = start_holder(folder)
    try:
        with pytest.raises(FolderLocked) as info, hold_folder(folder, "run folder"):
            pass
    finally:
        holder.kill()
        holder.wait()
    message = str(info.value)
    assert "\n" not in message
    assert f"{folder} (run folder) is in use by process {holder.pid} on host " in message
    assert ", started 20" in message and "use another folder" in message


def test_a_killed_holder_leaves_its_file_which_is_reported_and_the_lock_taken(tmp_path):
    folder = tmp_path / "run"
    holder = start_holder(folder)
    holder.kill()  # SIGKILL: no clean-up ran
    holder.wait()
    assert lock_holder(folder)["pid"] == holder.pid
    messages = []
    with hold_folder(folder, "run folder", log=messages.append):
        assert lock_holder(folder)["pid"] == os.getpid()
    assert len(messages) == 1
    assert f"was left by process {holder.pid}" in messages[0]
    assert "ended without releasing it (killed?); taking it over" in messages[0]
    assert not (folder / ".lock").exists()


def test_a_lock_naming_a_process_on_another_machine_is_refused_not_taken(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    stale = {"pid": 4242, "host": "another-machine.example", "started": "2026-11-26 10:00:00"}
    (folder / ".lock").write_text(json.dumps(stale))
    refused = pytest.raises(FolderLocked, match="another machine, which cannot be checked from "
                                                "here; if that run has ended, delete .*/.lock")
    with refused, hold_folder(folder, "run folder"):
        pass
    assert json.loads((folder / ".lock").read_text()) == stale


def test_a_process_may_hold_its_own_lock_again_and_every_exit_releases_it(tmp_path):
    folder = tmp_path / "new" / "run"
    with pytest.raises(RuntimeError, match="boom"), hold_folder(folder, "run folder"):
        with hold_folder(folder, "run folder"):
            assert lock_holder(folder)["pid"] == os.getpid()
        assert (folder / ".lock").exists(), "the outer hold still holds it"
        raise RuntimeError("boom")
    assert not (folder / ".lock").exists()
    # the lock made the folders; empty, they are removed with it: a refusal leaves no junk
    assert not (tmp_path / "new").exists()
    with hold_folder(folder, "run folder"):
        (folder / "history.json").write_text("{}")
    assert sorted(p.name for p in folder.iterdir()) == ["history.json"]


def test_waiting_for_the_holder_instead_of_refusing(tmp_path):
    folder = tmp_path / "cache"
    holder = start_holder(folder, seconds=1.0)
    messages = []
    start = time.monotonic()
    with hold_folder(folder, "cache folder", wait=True, log=messages.append):
        waited = time.monotonic() - start
        assert lock_holder(folder)["pid"] == os.getpid()
    holder.wait()
    assert messages[0].startswith(f"waiting for process {holder.pid} ")
    assert waited > 0.3 and len(messages) == 1  # a clean release leaves nothing to report
