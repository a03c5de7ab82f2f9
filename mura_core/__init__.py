"""mura_core: a small, gradient-checked CNN framework over NumPy/CuPy for MURA radiographs."""
from .backend import get_array_module, resolve_backend, seed_all, to_numpy

__version__ = "0.1.0"

__all__ = ["get_array_module", "resolve_backend", "seed_all", "to_numpy", "__version__"]
