"""Saving and loading models as ``.npz`` files (no pickle), written atomically.

A model file holds ``__model__`` (JSON text: format tag, architecture spec, metadata) and one
array per parameter (``param/conv1.W`` ...). ``load_model`` rebuilds the network from the
spec and checks every stored array against it, so a truncated file, a file of another kind
or weights of another architecture give a ``ModelFileError`` that names the file.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .backend import to_numpy
from .models import Model, build_model

MODEL_FORMAT = "mura_core.model/1"


class ModelFileError(ValueError):
    """A file that is not a loadable model (or not the expected one); the message says which."""


def atomic_write(path, write) -> None:
    """Write ``path`` through ``write(binary_file)`` into a temp file beside it, then
    ``os.replace``: a reader sees the old file or the whole new one, never half of it.
    The one atomic writer of the project (model files, checkpoints, histories, results)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_save_npz(path, arrays: dict) -> None:
    """np.savez ``arrays`` (name -> array, NumPy or CuPy) to ``path`` atomically."""
    host = {name: to_numpy(a) for name, a in arrays.items()}
    atomic_write(path, lambda f: np.savez(f, **host))


def json_array(obj) -> np.ndarray:
    """A JSON document as a 0-d unicode array, storable in an npz without pickle."""
    return np.array(json.dumps(obj))


def model_arrays(model: Model) -> dict:
    """The arrays that describe ``model`` in a file: ``__model__`` and ``param/<name>``."""
    header = {"format": MODEL_FORMAT, "spec": model.spec, "metadata": model.metadata}
    arrays = {"__model__": json_array(header)}
    arrays.update({f"param/{name}": to_numpy(value) for name, value in model.parameters().items()})
    return arrays


def save_model(model: Model, path) -> None:
    """Write ``model`` (spec, metadata, weights) to ``path`` (.npz), atomically."""
    atomic_save_npz(path, model_arrays(model))


def read_npz(path) -> dict:
    """All arrays of an .npz file, loaded without pickle; a ModelFileError names a bad file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {name: f[name] for name in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ModelFileError(f"{path}: not a readable .npz model file "
                             f"({exc.__class__.__name__}: {exc}); was it truncated?") from None


def model_from_arrays(arrays: dict, path, backend: str = "numpy", expect_arch: str | None = None) -> Model:
    """Rebuild a model from ``model_arrays`` output read from ``path`` (for messages)."""
    if "__model__" not in arrays:
        raise ModelFileError(f"{path}: not a mura_core model file (no '__model__' entry)")
    try:
        header = json.loads(str(arrays["__model__"]))
        spec = header["spec"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{path}: unreadable model header ({exc})") from None
    if header.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path}: unknown model format {header.get('format')!r}")
    if expect_arch is not None and spec["arch"] != expect_arch:
        raise ModelFileError(f"{path} holds a '{spec['arch']}' model, not '{expect_arch}': "
                             "pick the file trained for that architecture")
    model = build_model(spec["arch"], input_size=spec["input_size"], seed=spec["seed"],
                        backend=backend, width=spec["width"], dropout=spec["dropout"],
                        dtype=spec["dtype"])
    load_weights(model, {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")},
                 path)
    model.metadata = dict(header.get("metadata") or {})
    return model


def load_weights(model: Model, weights: dict, path="weights") -> None:
    """Copy ``weights`` (name -> array) into ``model``; names and shapes must match exactly."""
    params = model.parameters()
    missing = sorted(set(params) - set(weights))
    extra = sorted(set(weights) - set(params))
    if missing or extra:
        raise ModelFileError(
            f"{path}: its weights do not fit a '{model.spec['arch']}' network "
            f"(missing: {missing[:4]}{'...' if len(missing) > 4 else ''}, "
            f"unexpected: {extra[:4]}{'...' if len(extra) > 4 else ''}); "
            "it was saved for another architecture or input size")
    for name, value in params.items():
        if weights[name].shape != value.shape:
            raise ModelFileError(
                f"{path}: '{name}' has shape {weights[name].shape}, the '{model.spec['arch']}' "
                f"network expects {value.shape}; it was saved for another architecture, "
                "width or input size")
        value[...] = model.xp.asarray(weights[name], dtype=value.dtype)


def load_model(path, backend: str = "numpy", expect_arch: str | None = None) -> Model:
    """Load a model saved by ``save_model`` onto ``backend`` ("numpy", "cupy", "auto").

    ``expect_arch``: raise a ModelFileError naming the file unless it holds that architecture.
    """
    return model_from_arrays(read_npz(path), path, backend=backend, expect_arch=expect_arch)
