"""The hand-written framework: the part of the project the course is about.

Every layer has its forward pass and its hand-written backward pass side by side
(``layers.py``), over NumPy or CuPy with one code path (``backend.py``). Read in this order:

    backend.py        NumPy or CuPy, followed through the arrays; the one CuPy kernel dispatch
    rng.py            counter-based random numbers (dropout masks equal on CPU and GPU)
    conv.py           im2col / col2im: a convolution as one matrix product
    winograd.py       Winograd F(2x2, 3x3): the 3x3 convolutions (and conv2) with fewer products
    cuda_kernels.py   CuPy kernels: what NumPy does in slice loops or several passes, in one launch
    layers.py         Conv2D, MaxPool2D, ReLU, Sigmoid, Dropout, Linear, Flatten, Sequential,
                      Residual: forward, backward, params, grads
    losses.py         binary cross entropy from the logit
    optim.py          SGD with momentum
    models.py         architectures as data, Model (body -> logit, head -> P(normal)),
                      build_model, loss_and_grads
    gradcheck.py      central finite differences against the analytic gradients
    serialization.py  model files (.npz, no pickle), written atomically

Imports nothing but NumPy (and CuPy, only when CuPy arrays are used).
"""
from .backend import BACKENDS, get_array_module, resolve_backend, seed_all, to_numpy
from .layers import Conv2D, Dropout, Flatten, Linear, MaxPool2D, ReLU, Residual, Sequential, Sigmoid
from .losses import bce_from_probabilities, bce_with_logits
from .models import ARCHITECTURES, Model, build_model, loss_and_grads
from .optim import SGD
from .serialization import ModelFileError, load_model, save_model

__all__ = [
    "ARCHITECTURES", "BACKENDS", "Conv2D", "Dropout", "Flatten", "Linear", "MaxPool2D", "Model",
    "ModelFileError", "ReLU", "Residual", "SGD", "Sequential", "Sigmoid",
    "bce_from_probabilities", "bce_with_logits", "build_model", "get_array_module",
    "load_model", "loss_and_grads", "resolve_backend", "save_model", "seed_all", "to_numpy",
]
