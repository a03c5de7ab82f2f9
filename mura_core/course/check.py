"""The checks of one piece of the assignment, run in a process of their own by the grader:

    python check.py PIECE PACKAGE_ROOT [--no-torch]

imports ``mura_core`` from PACKAGE_ROOT (a student's edition, or the reference), runs every
check of PIECE on random shapes in float64 and prints one JSON line: a list of rows
``{"check", "error", "passed", "where"}``, ``error`` the largest relative error over the
cases (None where the code raised), ``where`` for a failure the first case and entry that
is wrong, or the exception.

Each check compares the student's function with a slow reference (``references.py``, loaded
from this file's folder, never from the package graded), with central finite differences
where it has a gradient, and with PyTorch where it is installed. This file imports nothing
from the package it grades until it has put PACKAGE_ROOT first on the path.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import sys
import traceback
from pathlib import Path

import numpy as np

#: Largest relative error against a reference computed the same way in float64, and against
#: central differences (step 1e-6: their own error is about 1e-9 here).
EXACT, NUMERIC = 1e-8, 1e-5


def _references():
    path = Path(__file__).with_name("references.py")
    spec = importlib.util.spec_from_file_location("_grader_references", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = _references()


class Failed(Exception):
    """A case that does not match: its message names the case and the entry."""


class Check:
    """One row: cases compared one after the other; the first failure stops the row."""

    def __init__(self, name: str):
        self.name, self.error = name, 0.0

    def compare(self, what: str, got, expected, case: str, tol: float = EXACT) -> None:
        got = np.asarray(got, dtype=np.float64) if got is not None else None
        expected = np.asarray(expected, dtype=np.float64)
        if got is None or got.shape != expected.shape:
            shape = "nothing" if got is None else f"shape {got.shape}"
            self.error = float("inf")
            raise Failed(f"{case}: {what} has {shape}, expected {expected.shape}")
        if not np.all(np.isfinite(got)):
            self.error = float("inf")
            index = tuple(int(i) for i in np.argwhere(~np.isfinite(got))[0])
            raise Failed(f"{case}: {what}{list(index)} is {got[index]}")
        error = float(ref.rel_error(got, expected)) if got.size else 0.0
        self.error = max(self.error, error)
        if error > tol:
            scale = max(np.abs(got).max(), np.abs(expected).max(), 1e-12)
            index = tuple(int(i) for i in np.argwhere(np.abs(got - expected) > tol * scale)[0])
            raise Failed(f"{case}: {what}{list(index)} is {got[index]:.6g}, expected "
                         f"{expected[index]:.6g}")


def run(name: str, body) -> dict:
    check = Check(name)
    try:
        body(check)
    except Failed as exc:
        return {"check": name, "error": check.error, "passed": False, "where": str(exc)}
    except Exception as exc:  # the student's code raised: its last line, and where
        frames = traceback.extract_tb(exc.__traceback__)
        line = f"{frames[-1].name} ({Path(frames[-1].filename).name}:{frames[-1].lineno})" \
            if frames else "?"
        message = str(exc).splitlines()[0] if str(exc) else ""
        where = f"not written yet: {line} raises NotImplementedError" \
            if isinstance(exc, NotImplementedError) else f"{type(exc).__name__} in {line}: {message}"
        return {"check": name, "error": None, "passed": False, "where": where}
    return {"check": name, "error": check.error, "passed": True, "where": ""}


def _rng(seed: int = 0):
    return np.random.default_rng(seed)


def _projected(forward, dy):
    """The scalar sum(forward()[0] * dy), as a function of the arrays ``forward`` reads: its
    gradient with respect to them is what the backward returns for dy."""
    return lambda: float((forward()[0] * dy).sum())


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


# ------------------------------------------------------------------------------ the pieces

#: (N, C, H, W, D, k, stride): the assignment's kernels and strides, at small sizes.
CONV_CASES = [(2, 3, 7, 7, 4, 3, 1), (2, 2, 9, 8, 3, 5, 2), (1, 3, 13, 12, 2, 11, 4),
              (2, 4, 5, 6, 3, 1, 1), (1, 2, 6, 6, 2, 3, 2)]


def _conv_inputs(case, seed):
    n, c, h, w, d, k, s = case
    rng = _rng(seed)
    return (rng.standard_normal((n, c, h, w)), rng.standard_normal((d, c, k, k)),
            rng.standard_normal(d), s, k // 2)


def _conv_name(case) -> str:
    n, c, h, w, d, k, s = case
    return f"x {(n, c, h, w)}, w {(d, c, k, k)}, stride {s}, pad {k // 2}"


def conv_checks(plain):
    def forward(check):
        for i, case in enumerate(CONV_CASES):
            x, w, b, s, pad = _conv_inputs(case, i)
            y, _ = plain.conv_forward(x, w, b, s, pad)
            check.compare("y", y, ref.conv2d_reference(x, w, b, s), _conv_name(case))

    def backward(check):
        for i, case in enumerate(CONV_CASES):
            x, w, b, s, pad = _conv_inputs(case, i)
            y, cache = plain.conv_forward(x, w, b, s, pad)
            dy = _rng(100 + i).standard_normal(np.shape(y))
            dx, dw, db = plain.conv_backward(dy, cache)
            ex, ew, eb = ref.conv2d_backward_reference(x, w, dy, s)
            for what, got, expected in (("dx", dx, ex), ("dw", dw, ew), ("db", db, eb)):
                check.compare(what, got, expected, _conv_name(case))

    def numeric(check):
        for i, case in enumerate([(1, 2, 5, 5, 2, 3, 1), (1, 2, 6, 7, 2, 5, 2)]):
            x, w, b, s, pad = _conv_inputs(case, 10 + i)
            dy = _rng(20 + i).standard_normal(ref.conv2d_reference(x, w, b, s).shape)
            _, cache = plain.conv_forward(x, w, b, s, pad)
            got = plain.conv_backward(dy, cache)
            loss = _projected(functools.partial(plain.conv_forward, x, w, b, s, pad), dy)
            for what, value, g in (("dx", x, got[0]), ("dw", w, got[1]), ("db", b, got[2])):
                check.compare(what, g, ref.numeric_grad(loss, value), _conv_name(case), NUMERIC)

    def torch_check(check):
        torch = _torch()
        for i, case in enumerate(CONV_CASES):
            x, w, b, s, pad = _conv_inputs(case, i)
            tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
            ty = torch.nn.functional.conv2d(tx, tw, tb, stride=s, padding=pad)
            dy = _rng(100 + i).standard_normal(tuple(ty.shape))
            ty.backward(torch.tensor(dy))
            y, cache = plain.conv_forward(x, w, b, s, pad)
            check.compare("y", y, ty.detach().numpy(), _conv_name(case))
            for what, got, t in zip(("dx", "dw", "db"), plain.conv_backward(dy, cache), (tx, tw, tb)):
                check.compare(what, got, t.grad.numpy(), _conv_name(case))

    return [("forward against the direct convolution", forward),
            ("backward against the direct convolution's", backward),
            ("backward against finite differences", numeric),
            ("forward and backward against PyTorch", torch_check)]


#: (N, C, H, W, size, stride): the networks' 2x2 and 3x3 pools, odd sizes, overlapping windows.
POOL_CASES = [(2, 3, 6, 6, 2, 2), (1, 2, 7, 9, 3, 2), (2, 2, 5, 4, 2, 1), (1, 3, 13, 13, 3, 2)]


def _pool_name(case) -> str:
    n, c, h, w, size, stride = case
    return f"x {(n, c, h, w)}, {size}x{size} stride {stride}"


def pool_checks(plain):
    def inputs(case, seed, ties=False):
        n, c, h, w, size, stride = case
        rng = _rng(seed)
        x = rng.integers(0, 3, (n, c, h, w)).astype(np.float64) if ties else \
            rng.permutation(n * c * h * w).reshape(n, c, h, w) / 7.0  # no two equal
        return x, size, stride

    def forward(check):
        for i, case in enumerate(POOL_CASES):
            x, size, stride = inputs(case, i)
            check.compare("y", plain.maxpool_forward(x, size, stride)[0],
                          ref.maxpool_reference(x, size, stride), _pool_name(case))

    def backward(check, ties):
        for i, case in enumerate(POOL_CASES):
            x, size, stride = inputs(case, i, ties)
            y, cache = plain.maxpool_forward(x, size, stride)
            dy = _rng(50 + i).standard_normal(ref.maxpool_reference(x, size, stride).shape)
            name = _pool_name(case) + (", ties (values 0 to 2)" if ties else "")
            check.compare("dx", plain.maxpool_backward(dy, cache),
                          ref.maxpool_backward_reference(x, dy, size, stride), name)

    def numeric(check):
        for i, case in enumerate(POOL_CASES[:2]):
            x, size, stride = inputs(case, 30 + i)
            dy = _rng(40 + i).standard_normal(ref.maxpool_reference(x, size, stride).shape)
            _, cache = plain.maxpool_forward(x, size, stride)
            got = plain.maxpool_backward(dy, cache)
            loss = _projected(functools.partial(plain.maxpool_forward, x, size, stride), dy)
            check.compare("dx", got, ref.numeric_grad(loss, x, 1e-4), _pool_name(case), NUMERIC)

    def torch_check(check):
        torch = _torch()
        for i, case in enumerate(POOL_CASES):
            x, size, stride = inputs(case, i)
            tx = torch.tensor(x, requires_grad=True)
            ty = torch.nn.functional.max_pool2d(tx, size, stride)
            dy = _rng(50 + i).standard_normal(tuple(ty.shape))
            ty.backward(torch.tensor(dy))
            y, cache = plain.maxpool_forward(x, size, stride)
            check.compare("y", y, ty.detach().numpy(), _pool_name(case))
            check.compare("dx", plain.maxpool_backward(dy, cache), tx.grad.numpy(), _pool_name(case))

    return [("forward against the window maxima", forward),
            ("backward against the reference, no ties", lambda c: backward(c, False)),
            ("backward on ties: the first maximum only", lambda c: backward(c, True)),
            ("backward against finite differences", numeric),
            ("forward and backward against PyTorch, no ties", torch_check)]


def relu_checks(plain):
    def inputs(seed):
        x = _rng(seed).standard_normal((3, 4, 5))
        return np.where(np.abs(x) < 1e-3, 0.5, x)  # no entry near the kink

    def forward(check):
        x = inputs(0)
        check.compare("y", plain.relu_forward(x)[0], np.maximum(x, 0), "x (3, 4, 5)")

    def backward(check):
        x = inputs(1)
        dy = _rng(2).standard_normal(x.shape)
        check.compare("dx", plain.relu_backward(dy, plain.relu_forward(x)[1]), dy * (x > 0),
                      "x (3, 4, 5)")

    def numeric(check):
        x, dy = inputs(3), _rng(4).standard_normal((3, 4, 5))
        got = plain.relu_backward(dy, plain.relu_forward(x)[1])
        check.compare("dx", got, ref.numeric_grad(
            lambda: float((plain.relu_forward(x)[0] * dy).sum()), x), "x (3, 4, 5)", NUMERIC)

    return [("forward against max(x, 0)", forward), ("backward against the mask", backward),
            ("backward against finite differences", numeric)]


def dropout_checks(plain):
    shape, p = (4, 6, 5), 0.4

    def inputs(seed):
        rng = _rng(seed)
        return rng.standard_normal(shape), rng.random(shape)

    def mask(u):
        return (u >= p) / (1 - p)

    def forward(check):
        x, u = inputs(0)
        check.compare("y", plain.dropout_forward(x, p, u)[0], x * mask(u), f"x {shape}, p {p}")

    def backward(check):
        x, u = inputs(1)
        dy = _rng(2).standard_normal(shape)
        check.compare("dx", plain.dropout_backward(dy, plain.dropout_forward(x, p, u)[1]),
                      dy * mask(u), f"x {shape}, p {p}")

    def numeric(check):
        x, u = inputs(3)
        dy = _rng(4).standard_normal(shape)
        got = plain.dropout_backward(dy, plain.dropout_forward(x, p, u)[1])
        check.compare("dx", got, ref.numeric_grad(
            lambda: float((plain.dropout_forward(x, p, u)[0] * dy).sum()), x),
            f"x {shape}, p {p}, the same u", NUMERIC)

    return [("forward: kept where u >= p, scaled by 1/(1-p)", forward),
            ("backward through the same mask", backward),
            ("backward against finite differences", numeric)]


def linear_checks(plain):
    cases = [(5, 7, 3), (1, 4, 1), (8, 3, 6)]

    def inputs(case, seed):
        n, d_in, d_out = case
        rng = _rng(seed)
        return rng.standard_normal((n, d_in)), rng.standard_normal((d_in, d_out)), \
            rng.standard_normal(d_out)

    def name(case):
        return f"x {case[:2]}, w {case[1:]}"

    def forward(check):
        for i, case in enumerate(cases):
            x, w, b = inputs(case, i)
            expected = np.array([[sum(x[r, q] * w[q, o] for q in range(case[1])) + b[o]
                                  for o in range(case[2])] for r in range(case[0])])
            check.compare("y", plain.linear_forward(x, w, b)[0], expected, name(case))

    def backward(check):
        for i, case in enumerate(cases):
            x, w, b = inputs(case, i)
            dy = _rng(10 + i).standard_normal((case[0], case[2]))
            got = plain.linear_backward(dy, plain.linear_forward(x, w, b)[1])
            for what, g, e in zip(("dx", "dw", "db"), got, (dy @ w.T, x.T @ dy, dy.sum(axis=0))):
                check.compare(what, g, e, name(case))

    def numeric(check):
        case = cases[0]
        x, w, b = inputs(case, 20)
        dy = _rng(21).standard_normal((case[0], case[2]))
        got = plain.linear_backward(dy, plain.linear_forward(x, w, b)[1])

        def loss():
            return float((plain.linear_forward(x, w, b)[0] * dy).sum())
        for what, value, g in zip(("dx", "dw", "db"), (x, w, b), got):
            check.compare(what, g, ref.numeric_grad(loss, value), name(case), NUMERIC)

    def torch_check(check):
        torch = _torch()
        for i, case in enumerate(cases):
            x, w, b = inputs(case, i)
            tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
            ty = tx @ tw + tb
            dy = _rng(10 + i).standard_normal(tuple(ty.shape))
            ty.backward(torch.tensor(dy))
            y, cache = plain.linear_forward(x, w, b)
            check.compare("y", y, ty.detach().numpy(), name(case))
            for what, g, t in zip(("dx", "dw", "db"), plain.linear_backward(dy, cache), (tx, tw, tb)):
                check.compare(what, g, t.grad.numpy(), name(case))

    return [("forward against x w + b, entry by entry", forward),
            ("backward against dy w^T, x^T dy, sum of dy", backward),
            ("backward against finite differences", numeric),
            ("forward and backward against PyTorch", torch_check)]


def bce_checks(plain):
    def inputs(seed, n=9):
        rng = _rng(seed)
        return rng.standard_normal(n) * 3, rng.integers(0, 2, n).astype(np.float64), \
            rng.uniform(0.5, 2.0, n)

    def value(check):
        for z, t, w in (inputs(0), inputs(1, 1)):
            loss, dz = plain.bce_with_logits(z, t, w)
            expected, grad = ref.bce_reference(z, t, w)
            check.compare("loss", loss, expected, f"B = {len(z)}")
            check.compare("dz", dz, grad, f"B = {len(z)}")

    def extreme(check):
        z, t, w = np.array([-800.0, -40.0, 40.0, 800.0]), np.array([1.0, 0.0, 1.0, 0.0]), np.ones(4)
        loss, dz = plain.bce_with_logits(z, t, w)
        expected, grad = ref.bce_reference(z, t, w)
        check.compare("loss", loss, expected, "logits -800, -40, 40, 800")
        check.compare("dz", dz, grad, "logits -800, -40, 40, 800")

    def numeric(check):
        z, t, w = inputs(2)
        dz = plain.bce_with_logits(z, t, w)[1]
        check.compare("dz", dz, ref.numeric_grad(lambda: float(plain.bce_with_logits(z, t, w)[0]), z),
                      f"B = {len(z)}", NUMERIC)

    def torch_check(check):
        torch = _torch()
        z, t, w = inputs(3)
        tz = torch.tensor(z, requires_grad=True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            tz, torch.tensor(t), weight=torch.tensor(w))
        loss.backward()
        got, dz = plain.bce_with_logits(z, t, w)
        check.compare("loss", got, loss.item(), f"B = {len(z)}")
        check.compare("dz", dz, tz.grad.numpy(), f"B = {len(z)}")

    return [("loss and dz against the reference", value),
            ("finite at logits of +-800", extreme),
            ("dz against finite differences", numeric),
            ("loss and dz against PyTorch", torch_check)]


def sgd_checks(plain):
    def steps(check, momentum, weight_decay):
        rng = _rng(int(momentum * 10) + int(weight_decay * 1000))
        theta, v = rng.standard_normal((4, 3)), np.zeros((4, 3))
        expected_theta, expected_v = theta.copy(), v.copy()
        for step in range(4):
            g = rng.standard_normal((4, 3))
            plain.sgd_momentum_step(theta, v, g, 0.1, momentum, weight_decay)
            expected_theta, expected_v = ref.sgd_momentum_reference(
                expected_theta, expected_v, g, 0.1, momentum, weight_decay)
            case = f"step {step + 1}, lr 0.1, momentum {momentum}, weight decay {weight_decay}"
            check.compare("theta", theta, expected_theta, case)
            check.compare("v", v, expected_v, case)

    def torch_check(check):
        torch = _torch()
        rng = _rng(5)
        theta, v = rng.standard_normal((4, 3)), np.zeros((4, 3))
        reference = torch.tensor(theta.copy(), requires_grad=True)
        sgd = torch.optim.SGD([reference], lr=0.1, momentum=0.9, weight_decay=0.01)
        for step in range(4):
            g = rng.standard_normal((4, 3))
            plain.sgd_momentum_step(theta, v, g, 0.1, 0.9, 0.01)
            reference.grad = torch.tensor(g)
            sgd.step()
            check.compare("theta", theta, reference.detach().numpy(),
                          f"step {step + 1}, lr 0.1, momentum 0.9, weight decay 0.01")

    return [("plain SGD (momentum 0)", lambda c: steps(c, 0.0, 0.0)),
            ("four steps with momentum 0.9", lambda c: steps(c, 0.9, 0.0)),
            ("with momentum and weight decay", lambda c: steps(c, 0.9, 0.01)),
            ("four steps against torch.optim.SGD", torch_check)]


class _Scale:
    """A layer of the grader's own: y = a x, elementwise (a fixed array)."""

    def __init__(self, a):
        self.a, self.params, self.grads = a, {}, {}

    def forward(self, x, training=False):
        return self.a * x

    def backward(self, dy):
        return self.a * dy


class _ReLU:
    """The grader's own ReLU, so that the residual block is checked alone."""

    def forward(self, x, training=False):
        self.mask = x > 0
        return x * self.mask

    def backward(self, dy):
        return dy * self.mask


def residual_checks(layers):
    shape = (2, 3, 4, 4)

    def block(projection: bool, seed: int):
        rng = _rng(seed)
        a, c = rng.standard_normal(shape), rng.standard_normal(shape)
        r = layers.Residual(_Scale(a), _Scale(c) if projection else None)
        r.relu = _ReLU()
        return r, a, c if projection else np.ones(shape)

    def name(projection):
        return f"x {shape}, " + ("a projection" if projection else "the identity")

    def forward(check):
        for projection in (False, True):
            r, a, c = block(projection, 1)
            x = _rng(2).standard_normal(shape)
            check.compare("y", r.forward(x, True), np.maximum(a * x + c * x, 0), name(projection))

    def backward(check):
        for projection in (False, True):
            r, a, c = block(projection, 3)
            x, dy = _rng(4).standard_normal(shape), _rng(5).standard_normal(shape)
            r.forward(x, True)
            check.compare("dx", r.backward(dy), (a + c) * dy * (a * x + c * x > 0), name(projection))

    def numeric(check):
        r, _, _ = block(True, 6)
        x, dy = _rng(7).standard_normal(shape), _rng(8).standard_normal(shape)
        r.forward(x, True)
        got = r.backward(dy)
        check.compare("dx", got, ref.numeric_grad(lambda: float((r.forward(x, True) * dy).sum()), x),
                      name(True), NUMERIC)

    return [("forward: relu(block(x) + skip(x))", forward),
            ("backward through both paths", backward),
            ("backward against finite differences", numeric)]


def training_checks(layers, losses, optim):
    """A small network of the package's layers learns which half of an 8x8 image is bright."""
    def learns(check):
        rng = _rng(0)
        n = 64
        t = (np.arange(n) % 2).astype(np.float32)
        x = rng.normal(0, 0.3, (n, 1, 8, 8)).astype(np.float32)
        x[t == 1, :, :4] += 1.0
        x[t == 0, :, 4:] += 1.0
        net = layers.Sequential([
            ("conv", layers.Conv2D(1, 4, 3, rng=rng)), ("relu", layers.ReLU()),
            ("pool", layers.MaxPool2D(2)), ("flat", layers.Flatten()),
            ("drop", layers.Dropout(0.2)),
            ("fc", layers.Linear(64, 1, rng=rng, init="output"))])
        params = dict(net.named_parameters())
        sgd = optim.SGD(params, lr=0.05, momentum=0.9)
        first = None
        for step in range(80):
            batch = rng.choice(n, 16, replace=False)
            z = net.forward(x[batch], training=True)
            loss, dz = losses.bce_with_logits(z, t[batch])
            first = loss if first is None else first
            net.backward(dz)
            sgd.step(dict(net.named_gradients()))
            if not np.isfinite(loss):
                raise Failed(f"step {step + 1}: the loss is {loss}")
        accuracy = float(((net.forward(x).reshape(-1) > 0) == (t == 1)).mean())
        check.error = 1.0 - accuracy
        if accuracy < 0.9:
            raise Failed(f"after 80 steps: train accuracy {accuracy:.2f} (at least 0.90 needed), "
                         f"loss {first:.3f} -> {loss:.3f}")

    return [("80 SGD steps reach 90 % train accuracy", learns)]


def checks(piece: str, use_torch: bool = True):
    from mura_core.nn import backend, layers, losses, optim, plain

    backend.FAST_PATHS = False  # what a student wrote is what runs
    if piece == "residual":
        return residual_checks(layers)
    if piece == "training":
        return training_checks(layers, losses, optim)
    found = {"conv": conv_checks, "pool": pool_checks, "relu": relu_checks,
             "dropout": dropout_checks, "linear": linear_checks, "bce": bce_checks,
             "sgd": sgd_checks}[piece](plain)
    if not use_torch or _torch() is None:
        found = [(name, body) for name, body in found if "torch" not in name.lower()]
    return found


def main(argv: list[str]) -> int:
    piece, root = argv[0], str(Path(argv[1]).resolve())
    sys.path.insert(0, root)
    import mura_core

    if not Path(mura_core.__file__).resolve().is_relative_to(root):
        raise SystemExit(f"mura_core was imported from {mura_core.__file__}, not from {root}")
    rows = [run(name, body) for name, body in checks(piece, "--no-torch" not in argv[2:])]
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
