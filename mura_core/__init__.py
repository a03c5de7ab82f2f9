"""mura_core: a small, gradient-checked CNN framework over NumPy/CuPy for MURA radiographs.

    import mura_core as mc
    model = mc.build_model("baseline", input_size=227, seed=0, backend="numpy")
    print(model.summary())
    loss, grads = mc.loss_and_grads(model, x, t, training=True)
    mc.SGD(model.parameters(), lr=0.01, momentum=0.9).step(grads)
    mc.save_model(model, "models/baseline.npz"); model = mc.load_model("models/baseline.npz")
    result = mc.train(model, mc.data.build_cache("path/to/MURA-v1.1"), steps=100, lr=0.002)

The package's shape is its architecture (each room imports only the rooms above it here):

    nn/           the hand-written framework (layers and their backward passes, the optimizer,
                  models, gradient check, model files); imports nothing but NumPy
    files.py, formatting.py, locks.py, signals.py
                  atomic writes, numbers as text, folder locks, SIGINT/SIGTERM
    data/         MURA on disk, the synthetic generator, preprocessing, cache, batches
    evaluation/   metrics, statistics, predictions of splits and files, saliency
    training/     one run: config, schedule, feed, evaluation points, checkpoints, trainer
    experiments/  many runs: profiles, runs stored by settings, executors (local, Dask),
                  comparisons of variants over seeds
    plots.py      every figure
    report/       the notebook pipeline and the report document (the Jupyter stack lives here)
    cli/          the command line (``python -m mura_core``)

The framework's names are imported here; the trainer's (``train``, ``TrainConfig``,
``evaluate`` ...) on first use, so ``import mura_core`` stays as light as ``mura_core.nn``.
"""
from __future__ import annotations

import importlib

from .nn import (
    ARCHITECTURES,
    BACKENDS,
    SGD,
    Conv2D,
    Dropout,
    Flatten,
    Linear,
    MaxPool2D,
    Model,
    ModelFileError,
    ReLU,
    Residual,
    Sequential,
    Sigmoid,
    bce_from_probabilities,
    bce_with_logits,
    build_model,
    get_array_module,
    load_model,
    loss_and_grads,
    resolve_backend,
    save_model,
    seed_all,
    to_numpy,
)

__version__ = "0.1.0"

#: name -> module of the names loaded on first use (they import Pillow, tqdm ...).
_LAZY = {
    "TrainConfig": "training", "TrainingDiverged": "training", "load_history": "training",
    "train": "training", "evaluate": "evaluation.predictions",
}

#: attribute -> module reachable as ``mc.<attribute>`` (``mc.data.build_cache``,
#: ``mc.metrics.accuracy``), imported on first use.
_SUBMODULES = {
    "data": "data", "evaluation": "evaluation", "experiments": "experiments", "files": "files",
    "formatting": "formatting", "plots": "plots", "report": "report", "training": "training",
    "metrics": "evaluation.metrics", "stats": "evaluation.stats",
    "saliency": "evaluation.saliency", "profiles": "experiments.profiles",
}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{_SUBMODULES[name]}", __name__)
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ARCHITECTURES", "BACKENDS", "Conv2D", "Dropout", "Flatten", "Linear", "MaxPool2D", "Model",
    "ModelFileError", "ReLU", "Residual", "SGD", "Sequential", "Sigmoid", "TrainConfig",
    "TrainingDiverged",
    "bce_from_probabilities", "bce_with_logits", "build_model", "evaluate", "get_array_module",
    "load_history", "load_model", "loss_and_grads", "resolve_backend", "save_model", "seed_all",
    "to_numpy", "train",
    "__version__",
]
