"""Saving and loading models as ``.npz`` files (no pickle), written atomically.

A model file holds ``__model__`` (JSON text: format tag, architecture spec, metadata) and one
array per parameter (``param/conv1.W`` ...). ``load_model`` rebuilds the network from the
spec and checks every stored array against it, so a truncated file, a file of another kind
or weights of another architecture give a ``ModelFileError`` that names the file.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import zipfile
from pathlib import Path

import numpy as np

from .backend import to_numpy
from .models import Model, build_model

MODEL_FORMAT = "mura_core.model/1"


class ModelFileError(ValueError):
    """A file that is not a loadable model (or not the expected one); the message says which."""


#: How the atomic writer names its temp files: ``.NAME.<random>.tmp`` beside ``NAME``.
TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"


def atomic_write(path, write) -> None:
    """Write ``path`` through ``write(binary_file)`` into a temp file beside it, then
    ``os.replace``: a reader sees the old file or the whole new one, never half of it.
    The one atomic writer of the project (model files, checkpoints, histories, results).

    The file gets the mode the umask gives a new file (0644 under the usual 022), as with
    ``open``; a process killed mid-write leaves ``.NAME.<random>.tmp``, which the next run in
    that folder removes (``files.remove_stale_temp_files``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_temp_file(path)
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


def _new_temp_file(path: Path) -> tuple[int, str]:
    """Create ``.NAME.<random>.tmp`` beside ``path``; (fd, its path). Not tempfile.mkstemp:
    that forces mode 0600, and a result file should get the umask's mode like any other."""
    while True:
        tmp = str(path.parent / f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


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


#: The first bytes of every .npz file (a zip archive).
ZIP_MAGIC = b"PK\x03\x04"
#: The model files a run folder holds (``training.runfolder``), the one to use first.
BEST_NAME, LAST_NAME, CHECKPOINT_NAME = "best.npz", "last.npz", "checkpoint.npz"
MODEL_NAMES = (BEST_NAME, LAST_NAME, CHECKPOINT_NAME)
#: The keys of a model header's spec that ``build_model`` needs.
SPEC_KEYS = ("arch", "input_size", "seed", "width", "dropout", "dtype")


def read_npz(path) -> dict:
    """All arrays of an .npz file, loaded without pickle; a ModelFileError names a bad file.

    A file that does not start like a zip archive is said to be no model file at all: np.load
    would otherwise try it as a pickle and talk about "pickled (object) data"."""
    path = Path(path)
    if path.is_dir():
        inside = [path / name for name in MODEL_NAMES if (path / name).is_file()]
        example = inside[0] if inside else path / MODEL_NAMES[0]
        raise ModelFileError(f"{path} is a folder, not a model file: give a model file "
                             f"{'in it' if inside else 'saved by train'}, e.g. {example}")
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file; give a model file saved by train, e.g. "
                             "runs/NAME/best.npz")
    with open(path, "rb") as f:
        start = f.read(len(ZIP_MAGIC))
    if start != ZIP_MAGIC:
        raise ModelFileError(f"{path}: not a model file (a model file is an .npz archive, as "
                             "saved by train: best.npz, last.npz or checkpoint.npz)")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {name: f[name] for name in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ModelFileError(f"{path}: not a readable .npz model file "
                             f"({exc.__class__.__name__}: {exc}); was it truncated?") from None


def read_model_header(path) -> dict:
    """The header of a model file (format, spec, metadata), read without its weights."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            return json.loads(str(f["__model__"]))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, AttributeError) as exc:
        raise ModelFileError(f"{path}: no readable model header ({exc.__class__.__name__}: "
                             f"{exc})") from None


def model_from_arrays(arrays: dict, path, backend: str = "numpy", expect_arch: str | None = None) -> Model:
    """Rebuild a model from ``model_arrays`` output read from ``path`` (for messages)."""
    if "__model__" not in arrays:
        raise ModelFileError(f"{path}: not a mura_core model file (no '__model__' entry)")
    try:
        header = json.loads(str(arrays["__model__"]))
        spec = header["spec"]
        missing = [key for key in SPEC_KEYS if key not in spec]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{path}: unreadable model header ({exc})") from None
    if header.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path}: unknown model format {header.get('format')!r}")
    if missing:
        raise ModelFileError(f"{path}: the model header lacks {', '.join(map(repr, missing))}; "
                             "the file is damaged or was not written by mura_core")
    if expect_arch is not None and spec["arch"] != expect_arch:
        raise ModelFileError(f"{path} holds a '{spec['arch']}' model, not '{expect_arch}': "
                             "pick the file trained for that architecture")
    try:
        model = build_model(spec["arch"], input_size=spec["input_size"], seed=spec["seed"],
                            backend=backend, width=spec["width"], dropout=spec["dropout"],
                            dtype=spec["dtype"])
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: the model header describes no buildable network "
                             f"({exc}); the file is damaged or was not written by mura_core: "
                             "use a model saved by train") from None
    metadata = header.get("metadata") or {}
    check_metadata(metadata, spec, path)
    load_weights(model, {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")},
                 path)
    model.metadata = dict(metadata)
    return model


def check_metadata(metadata, spec: dict, path) -> None:
    """ModelFileError naming ``path`` unless ``metadata`` is a JSON object whose
    "preprocessing" (when there) says how training prepared its images: a size equal to the
    network's input, a finite mean and a finite std above 0 (the images are divided by it)."""
    damaged = "the file is damaged or was not written by train: use a model saved by train"
    if not isinstance(metadata, dict):
        raise ModelFileError(f"{path}: its metadata is a {type(metadata).__name__} "
                             f"({str(metadata)[:40]!r}), not a table of settings; {damaged}")
    pre = metadata.get("preprocessing")
    if pre is None:
        return
    if not isinstance(pre, dict) or not all(k in pre for k in ("size", "mode", "mean", "std")):
        raise ModelFileError(f"{path}: its preprocessing entry lacks the size, mode, mean and "
                             f"std of training; {damaged}")

    def number(value):
        return isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value)

    if pre["size"] != spec["input_size"]:
        problem = f"size {pre['size']!r} is not the network's input size {spec['input_size']}"
    elif not number(pre["mean"]):
        problem = f"mean {pre['mean']!r} is not a finite number"
    elif not (number(pre["std"]) and pre["std"] > 0):
        problem = f"std {pre['std']!r} is not a number above 0 (images are divided by it)"
    else:
        return
    raise ModelFileError(f"{path}: its preprocessing {problem}; {damaged}")


def load_weights(model: Model, weights: dict, path="weights") -> None:
    """Copy ``weights`` (name -> array) into ``model``; names and shapes must match exactly,
    and every value must be finite: a network with a NaN weight predicts NaN for every image
    (the trainer never saves one; such a file was damaged or written by other code)."""
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
        if not np.isfinite(weights[name]).all():
            raise ModelFileError(f"{path}: weight '{name}' holds NaN or infinite values, so the "
                                 "network cannot predict; use a model saved before training "
                                 "diverged (its checkpoint.npz or best.npz)")
        value[...] = model.xp.asarray(weights[name], dtype=value.dtype)


def load_model(path, backend: str = "numpy", expect_arch: str | None = None) -> Model:
    """Load a model saved by ``save_model`` onto ``backend`` ("numpy", "cupy", "auto").

    ``expect_arch``: raise a ModelFileError naming the file unless it holds that architecture.
    """
    return model_from_arrays(read_npz(path), path, backend=backend, expect_arch=expect_arch)
