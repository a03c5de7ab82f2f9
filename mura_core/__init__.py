"""mura_core: a small, gradient-checked CNN framework over NumPy/CuPy for MURA radiographs.

    import mura_core as mc
    model = mc.build_model("baseline", input_size=227, seed=0, backend="numpy")
    print(model.summary())
    loss, grads = mc.loss_and_grads(model, x, t, training=True)
    mc.SGD(model.parameters(), lr=0.01, momentum=0.9).step(grads)
    mc.save_model(model, "models/baseline.npz"); model = mc.load_model("models/baseline.npz")
    result = mc.train(model, mc.data.build_cache("path/to/MURA-v1.1"), steps=100, lr=0.002)
"""
from .backend import get_array_module, resolve_backend, seed_all, to_numpy
from .checkpoint import ModelFileError, load_model, save_model
from .layers import (Conv2D, Dropout, Flatten, Linear, MaxPool2D, ReLU, Residual, Sequential,
                     Sigmoid)
from .losses import bce_from_probabilities, bce_with_logits
from .models import ARCHITECTURES, Model, build_model, loss_and_grads
from .optim import SGD
from .train import TrainConfig, TrainingDiverged, evaluate, load_history, train

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES", "Conv2D", "Dropout", "Flatten", "Linear", "MaxPool2D", "Model",
    "ModelFileError", "ReLU", "Residual", "SGD", "Sequential", "Sigmoid", "TrainConfig",
    "TrainingDiverged",
    "bce_from_probabilities", "bce_with_logits", "build_model", "evaluate", "get_array_module",
    "load_history", "load_model", "loss_and_grads", "resolve_backend", "save_model", "seed_all",
    "to_numpy", "train",
    "__version__",
]
