"""The house has no import circle: every module of ``mura_core`` imports only modules listed
before it in ``ORDER``, the dependency order written down once, here.

Two checks. Statically, every import statement of a module (at its top or inside a
function, where a lazy import would hide a circle until it runs) names only modules listed
before it. At run time, a fresh interpreter imports the modules in that order, and importing
one loads nothing of a room listed after its own (a package's ``__init__`` runs with its
first module, so at run time the unit is the room)."""
from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mura_core"

#: The rooms, lowest first, each with its modules in dependency order. A module may import
#: only modules listed before it; a package (its ``__init__``) comes after its modules.
ORDER = {
    "nn": ["nn.cuda_kernels", "nn.backend", "nn.rng", "nn.conv", "nn.plain", "nn.winograd", "nn.pool",
           "nn.layers",
           "nn.losses", "nn.models", "nn.optim", "nn.serialization", "nn.gradcheck", "nn", ""],
    "support": ["formatting", "locks", "signals", "resources", "files", "progress"],
    "data": ["data.mura", "data.preprocess", "data.batches", "data.prefetch", "data.samples",
             "data.processes", "data.synthetic", "data.cache", "data"],
    "evaluation": ["evaluation.metrics", "evaluation.stats", "evaluation.predictions",
                   "evaluation.analysis", "evaluation.saliency", "evaluation"],
    "training": ["training.config", "training.class_weights", "training.schedule",
                 "training.divergence", "training.runfolder", "training.checkpoint",
                 "training.history", "training.feed", "training.evaluation_points",
                 "training.run_state", "training.trainer", "training"],
    "experiments": ["experiments.profiles", "experiments.store", "experiments.cluster",
                    "experiments.executors", "experiments.comparisons", "experiments"],
    "plots": ["plots"],
    "report": ["report.prose", "report.tables", "report.workspace", "report.document",
               "report.provenance", "report.live", "report.explorer", "report.context", "report",
               "report.pipeline"],
    "course": ["course.references", "course.assignment", "course.student", "course.check",
               "course.grader", "course"],
    "cli": ["cli", "cli.data", "cli.train", "cli.evaluate", "cli.explain", "cli.report", "cli.course",
            "__main__"],
}


def _name(short: str) -> str:
    return "mura_core" + (f".{short}" if short else "")


MODULES = [_name(m) for room in ORDER.values() for m in room]
ROOM = {_name(m): room for room, modules in ORDER.items() for m in modules}


def _source(module: str) -> tuple[Path, bool]:
    """(file, is a package) of a module of mura_core."""
    relative = Path(*module.split(".")[1:])
    package = PACKAGE / relative / "__init__.py"
    return (package, True) if package.exists() else (PACKAGE / relative.with_suffix(".py"), False)


def _imported(module: str, text: str | None = None) -> set[str]:
    """Every module of mura_core that ``module``'s import statements (in its file, or in
    ``text``) name, anywhere in it. ``from . import a`` depends on the submodule ``a`` when
    there is one, else on the package."""
    path, is_package = _source(module)
    here = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text() if text is None else text)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "mura_core"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "mura_core":
                base = node.module
            else:
                continue
            subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in ROOM}
            found |= subs if len(subs) == len(node.names) else subs | {base}
    found.discard(module)
    return found


def test_the_order_lists_every_module_once():
    on_disk = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        on_disk.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    assert len(MODULES) == len(set(MODULES))
    assert set(MODULES) == on_disk, ("modules on disk but not in ORDER: "
                                     f"{sorted(on_disk - set(MODULES))}; in ORDER but not on disk: "
                                     f"{sorted(set(MODULES) - on_disk)}")


def test_no_module_imports_one_listed_after_it():
    position = {m: i for i, m in enumerate(MODULES)}
    upward = [f"{m} imports {dep} ({ROOM[dep]})" for m in MODULES for dep in sorted(_imported(m))
              if dep not in position or position[dep] >= position[m]]
    assert not upward, "imports that point up (or outside ORDER):\n" + "\n".join(upward)


def test_the_static_check_resolves_lazy_relative_and_absolute_imports():
    """Imports inside functions count, relative ones resolve from the module's package."""
    text = ("from . import config\n"
            "def f():\n    from ..report import tables\n    from ..evaluation.stats import Design\n"
            "def g():\n    import mura_core.plots\n    from .. import __version__\n")
    assert _imported("mura_core.training.schedule", text) == {
        "mura_core.training.config", "mura_core.report.tables", "mura_core.evaluation.stats",
        "mura_core.plots", "mura_core"}
    assert _imported("mura_core.training", "from .trainer import train\n") == {
        "mura_core.training.trainer"}


def test_importing_in_dependency_order_loads_no_room_above():
    """One fresh interpreter imports the modules in ORDER; after each, every module of
    mura_core that is loaded belongs to its room or one below (CuPy's kernels only where
    CuPy imports)."""
    rooms = list(ORDER)
    wanted = [m for m in MODULES
              if m != "mura_core.nn.cuda_kernels" or importlib.util.find_spec("cupy")]
    code = (
        "import importlib, json, sys\n"
        f"out = []\n"
        f"for name in {wanted!r}:\n"
        "    importlib.import_module(name)\n"
        "    out.append([name, sorted(m for m in sys.modules if m.split('.')[0] == 'mura_core')])\n"
        "print(json.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, loaded in json.loads(proc.stdout):
        above = [m for m in loaded if m in ROOM and rooms.index(ROOM[m]) > rooms.index(ROOM[name])]
        assert not above, f"importing {name} ({ROOM[name]}) loads {above}"
