"""Array backend: NumPy or CuPy, chosen once, followed through the arrays afterwards.

Layers never consult a global: they call ``get_array_module(x)`` on their input, so the same
code runs on the CPU (NumPy) and on a GPU (CuPy). The model's parameters live on one backend,
chosen when it is built or loaded; batches arrive as NumPy and are moved once per step, by
the trainer's feed (``training.feed.device_mover``, on a stream of its own on a GPU) or by
``Model.predict_proba``. Results leave through ``to_numpy``.
"""
from __future__ import annotations

import ctypes
import functools
import random

import numpy as np

BACKENDS = ("numpy", "cupy", "auto")

#: True: the layers take their fast paths (Winograd and pointwise convolutions, pairwise
#: pools, the fused CUDA kernels of ``gpu_kernels``). False: every layer, the loss and the
#: optimizer run the plain functions of ``plain.py`` instead, on NumPy and CuPy alike; the
#: course's student edition is generated with False, so that what a student writes is what
#: runs. Set it before a model is built or trained.
FAST_PATHS = True


@functools.lru_cache(maxsize=1)
def _cupy_status() -> tuple[object | None, str]:
    """(cupy module or None, reason it is unusable)."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install
        return None, f"CuPy is not importable ({exc.__class__.__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return None, f"CuPy sees no CUDA device ({exc.__class__.__name__}: {exc})"
    if count < 1:
        return None, "CuPy sees no CUDA device"
    return cupy, ""


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    return _cupy_status()[0] is not None


class BackendUnavailable(RuntimeError):
    """The backend asked for cannot run here (CuPy missing, or no GPU); the message says why
    and what to do."""


def resolve_backend(name: str = "numpy", verbose: bool = True) -> str:
    """Turn ``"numpy" | "cupy" | "auto"`` into the concrete backend name.

    ``auto`` picks CuPy when it imports and sees a device, else NumPy, and says which.
    Asking for ``cupy`` where it cannot run raises BackendUnavailable (a RuntimeError) that
    says why and what to do.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    cupy, reason = _cupy_status()
    if name == "auto":
        chosen = "cupy" if cupy is not None else "numpy"
        if verbose:
            why = "" if cupy is not None else f" ({reason})"
            print(f"backend auto: using {chosen}{why}")
        return chosen
    if name == "cupy" and cupy is None:
        raise BackendUnavailable(
            f"backend 'cupy' was asked for, but {reason}. Install the GPU extra "
            "(pip install -e '.[gpu]') on a machine with an NVIDIA GPU, or use backend='numpy' "
            "(--backend numpy)."
        )
    return name


#: glibc's mallopt parameters (malloc.h): below which size a block comes from the heap rather
#: than its own mapping, and how much free heap may stay before it is handed back.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Let this process reuse the memory its arrays free instead of giving it back to the
    system (glibc's malloc; elsewhere nothing changes). Returns whether the allocator took it.

    Why: by default every array above a few MB gets pages of its own, returned when it is
    freed, and the next one faults its pages in again, one 4 KB page at a time. A NumPy
    training step allocates and frees its Winograd and column buffers every time: 6,000
    (baseline, 64x64) to 15,000 (deeper, 96x96) page faults a step, 10 to 30 % of the step on
    a virtual machine. Kept, the memory is simply reused: the process then holds its peak
    until it exits (the peak itself is unchanged). Called once when a NumPy model is built.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    limit = 2**31 - 1
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))


def device_memory_free(backend: str) -> int | None:
    """Bytes free on the GPU that a CuPy model would use (with what CuPy's memory pool holds
    unused); None for NumPy, whose memory is the machine's."""
    if backend != "cupy" or not cupy_available():
        return None
    cupy = _cupy_status()[0]
    free, _ = cupy.cuda.Device().mem_info
    return int(free) + int(cupy.get_default_memory_pool().free_bytes())


def xp_for(name: str):
    """The array module (numpy or cupy) of a concrete backend name."""
    if resolve_backend(name, verbose=False) == "cupy":
        return _cupy_status()[0]
    return np


def get_array_module(*arrays):
    """numpy or cupy, whichever the arrays belong to (CuPy's own recommended idiom)."""
    cupy = _cupy_status()[0] if _cupy_imported() else None
    if cupy is not None:
        return cupy.get_array_module(*arrays)
    return np


def _cupy_imported() -> bool:
    # Avoid importing CuPy (slow, prints CUDA warnings) unless it is already in use.
    import sys

    return "cupy" in sys.modules


#: Bytes between the starts of the arrays that ``pack`` places in one buffer: each starts on
#: a 256-byte boundary, as an array allocated on its own would.
PACK_ALIGNMENT = 256


def _address(a) -> int:
    """Where the first element of a NumPy or CuPy array lies in memory."""
    return a.__array_interface__["data"][0] if isinstance(a, np.ndarray) else a.data.ptr


def pack(arrays, xp):
    """Copies of ``arrays`` (one dtype) placed in one zeroed 1-D buffer, in order, each at a
    ``PACK_ALIGNMENT`` boundary; returns (buffer, views shaped as the arrays). The gaps
    between them stay zero."""
    itemsize = np.dtype(arrays[0].dtype).itemsize
    step = max(1, PACK_ALIGNMENT // itemsize)
    offsets, end = [], 0
    for a in arrays:
        offsets.append(end)
        end += -(-int(a.size) // step) * step
    buffer = xp.zeros(max(end, 1), dtype=arrays[0].dtype)
    views = []
    for a, offset in zip(arrays, offsets):
        view = buffer[offset:offset + a.size].reshape(a.shape)
        view[...] = a
        views.append(view)
    return buffer, views


def shared_buffer(arrays):
    """(buffer, offsets in elements) when every array is a view of one 1-D contiguous buffer
    (as ``pack`` places them), in increasing order of offset; else None. An optimizer then
    updates the whole buffer in one pass, gaps included (they are zero and stay zero)."""
    base = getattr(arrays[0], "base", None) if arrays else None
    if base is None or base.ndim != 1 or not base.flags.c_contiguous:
        return None
    start, itemsize = _address(base), base.itemsize
    offsets, previous = [], -1
    for a in arrays:
        if a.base is not base or not a.flags.c_contiguous or a.dtype != base.dtype:
            return None
        offset = (_address(a) - start) // itemsize
        if offset <= previous:
            return None
        offsets.append(offset)
        previous = offset
    return base, offsets


def gpu_kernels(xp):
    """The fused CUDA kernels (``cuda_kernels``) when ``xp`` is CuPy, else None.

    The one place where a layer leaves the shared array code: on NumPy it runs its slice
    loops, on CuPy one fused kernel instead (a slice there costs a kernel launch)::

        kernels = gpu_kernels(xp)
        if kernels is not None:
            return kernels.im2col(...)
    """
    if xp is np or not FAST_PATHS:
        return None
    from . import cuda_kernels  # imports CuPy

    return cuda_kernels


def to_numpy(x) -> np.ndarray:
    """A NumPy copy (or the array itself) of a NumPy or CuPy array."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "get"):
        return x.get()
    return np.asarray(x)


def memory_order(x) -> tuple:
    """The axes of ``x`` from the largest stride to the smallest: (0, 1, 2, 3) for a C-ordered
    NCHW array, (1, 0, 2, 3) for one stored channel-major."""
    return tuple(sorted(range(x.ndim), key=lambda axis: -abs(x.strides[axis])))


def viewed_in_order(buffer, order):
    """A buffer whose axes are the axes ``order`` of some array, as a view with that array's
    axes (the inverse of ``transpose(order)``)."""
    return buffer.transpose(tuple(int(i) for i in np.argsort(order)))


def empty_in_order(xp, shape, dtype, order):
    """An uninitialized array of ``shape`` whose memory runs over the axes in ``order``
    (see ``memory_order``): gradients take the memory order of the activations they match."""
    return viewed_in_order(xp.empty(tuple(shape[axis] for axis in order), dtype=dtype), order)


def copy_in_order(xp, a, order):
    """A copy of ``a`` whose memory runs over the axes in ``order``."""
    out = empty_in_order(xp, a.shape, a.dtype, order)
    out[...] = a
    return out


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and (when in use) CuPy's global generators.

    The framework itself draws from explicit generators (weights, dropout, data order), so
    this only matters for user code that relies on the global ones.
    """
    random.seed(seed)
    np.random.seed(seed)
    if _cupy_imported() and cupy_available():
        _cupy_status()[0].random.seed(seed)


def device_name(backend: str) -> str:
    """A human description of where a backend computes, for logs and the report."""
    if backend == "cupy" and cupy_available():
        cupy = _cupy_status()[0]
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    import platform

    return f"CPU ({platform.processor() or platform.machine()})"
