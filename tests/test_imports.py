"""Imports follow the commands: the framework needs NumPy alone, and the commands that do not
build the report run on a machine without the Jupyter stack (papermill, nbformat, nbconvert).

Each case runs in a fresh interpreter where the blocked packages cannot be imported
(``sys.modules[name] = None`` makes ``import name`` raise ImportError)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JUPYTER = ("nbformat", "papermill", "nbconvert", "nbclient", "ipykernel", "jupyter_client")


def run_blocked(blocked, code: str, cwd=ROOT) -> subprocess.CompletedProcess:
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_the_framework_imports_with_nothing_but_numpy():
    blocked = JUPYTER + ("PIL", "matplotlib", "tqdm", "scipy", "dask", "distributed")
    proc = run_blocked(blocked, "import mura_core.nn, mura_core as mc\n"
                                "m = mc.build_model('baseline', input_size=67)\n"
                                "print(sorted(k for k in sys.modules if k.startswith('mura_core')))")
    assert proc.returncode == 0, proc.stderr
    loaded = eval(proc.stdout.strip())  # our own printed list
    assert all(name == "mura_core" or name.startswith("mura_core.nn") for name in loaded), loaded


@pytest.mark.parametrize("argv", [["data", "synth", "--help"], ["train", "--help"],
                                  ["predict", "--help"], ["explain", "--help"], ["--help"]])
def test_help_of_commands_needs_no_jupyter(argv):
    proc = run_blocked(JUPYTER, f"from mura_core.__main__ import main\nmain({argv!r})")
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout


def test_a_tiny_training_run_needs_no_jupyter(tmp_path):
    from mura_core.data import generate_synthetic

    generate_synthetic(tmp_path / "data", n_train=24, n_valid=8, seed=0, progress=False)
    args = ["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
            "--size", "32", "--steps", "2", "--batch-size", "4", "--backend", "numpy",
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--workers", "1"]
    proc = run_blocked(JUPYTER, "from mura_core.__main__ import main\n"
                                f"sys.exit(main({args!r}))\n")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "last.npz").is_file()


def test_the_command_table_names_a_module_for_every_command():
    from mura_core.__main__ import COMMANDS, build_parser

    for name, (module, _) in COMMANDS.items():
        parser = build_parser([name])
        assert name in parser._subparsers._group_actions[0].choices, module


def test_a_report_without_its_jupyter_stack_stops_before_any_work(tmp_path):
    args = ["report", "--profile", "smoke", "--out", str(tmp_path / "out"),
            "--figures", str(tmp_path / "fig"), "--work", str(tmp_path / "work")]
    proc = run_blocked(("nbconvert",), "from mura_core.__main__ import main\n"
                                       f"sys.exit(main({args!r}))\n")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and "pip install -e '.[report]'" in proc.stderr
    assert not (tmp_path / "work").exists(), "no data generated, nothing trained"
