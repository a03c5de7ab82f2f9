"""Run profiles: how much data and compute each notebook of the report gets.

A profile is data, not code: the input size, the size of the synthetic set, and for every
notebook the knobs it takes as papermill parameters (steps, batch size, learning rate, ...).
The pipeline passes a notebook's knobs through as parameters; a notebook run by hand fills
the knobs it was not given from the profile named in its ``parameters`` cell.

- ``smoke``: seconds per notebook on a tiny input and a tiny synthetic set; the tests use it.
  Its numbers mean nothing beyond "every cell runs and every file is written".
- ``quick``: the default of ``make report``: synthetic data at 227x227, sized so the whole
  report (data, cache, five notebooks, PDF) takes at most 15 minutes on a 2-core CPU, with
  curves that show learning.
- ``full``: real MURA at 227x227, sized for one GPU (``--backend cupy``).

Comparisons train every variant for the same number of steps (04) or the same number of
examples seen (05) from the same seed, so the curves are comparable.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

NOTEBOOKS = (
    "01_model",
    "02_training",
    "03_evaluation",
    "04_architectures",
    "05_hyperparameters",
)

ARCHITECTURES = ("baseline", "deeper", "wider", "residual")


@dataclass(frozen=True)
class Profile:
    """One run profile.

    ``synthetic_train`` / ``synthetic_valid`` are the number of images of each split of the
    generated set (ignored with real data). ``knobs`` maps a notebook name to the parameters
    it receives. ``real_data`` says the profile is meant for the real MURA set.
    """

    name: str
    description: str
    input_size: int
    synthetic_train: int
    synthetic_valid: int
    real_data: bool = False
    knobs: dict = field(default_factory=dict)

    def notebook_knobs(self, notebook: str) -> dict:
        """A copy of the knobs of one notebook (``"02_training"`` or ``"02_training.ipynb"``)."""
        key = notebook.removesuffix(".ipynb")
        if key not in self.knobs:
            raise KeyError(f"profile {self.name!r} has no settings for notebook {key!r}")
        return copy.deepcopy(self.knobs[key])


def _knobs(
    *,
    input_size: int,
    steps: int,
    eval_every: int,
    batch_size: int,
    lr: float,
    momentum: float,
    eval_images: int,
    arch_steps: int,
    arch_eval_every: int,
    batch_sizes: list[int],
    learning_rates: list[float],
    momenta: list[float],
    gradcheck_size: int,
    gradcheck_width: float,
) -> dict:
    """The knobs of the five notebooks, built from a few numbers so profiles stay consistent.

    02 trains the baseline for ``steps``; 04 trains every architecture for ``arch_steps``;
    each run of 05 sees as many examples as 04's runs (``arch_steps * batch_size``) and is
    evaluated as often, so 05's centre point (batch size, learning rate, momentum of 02/04)
    is 04's baseline run, reused rather than trained again (``experiments.train_or_load``),
    and 04 reuses 02's run when ``arch_steps == steps``.
    """
    base = dict(input_size=input_size, batch_size=batch_size, lr=lr, momentum=momentum,
                weight_decay=0.0, eval_images=eval_images)
    return {
        "01_model": dict(input_size=input_size, gradcheck_size=gradcheck_size,
                         gradcheck_width=gradcheck_width, gradcheck_checks=4,
                         samples_per_class=4),
        "02_training": dict(base, arch="baseline", steps=steps, eval_every=eval_every,
                            predict_images=6),
        "03_evaluation": dict(input_size=input_size, arch="baseline", eval_max_images=None),
        "04_architectures": dict(base, architectures=list(ARCHITECTURES), steps=arch_steps,
                                 eval_every=arch_eval_every),
        "05_hyperparameters": dict(base, examples=arch_steps * batch_size,
                                   eval_every_examples=arch_eval_every * batch_size,
                                   batch_sizes=batch_sizes, learning_rates=learning_rates,
                                   momenta=momenta),
    }


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="tiny synthetic set, 32x32 input: every cell runs in seconds (tests)",
        input_size=32,
        synthetic_train=40,
        synthetic_valid=16,
        knobs=_knobs(input_size=32, steps=4, eval_every=2, batch_size=4, lr=0.01,
                     momentum=0.9, eval_images=16, arch_steps=4, arch_eval_every=2,
                     batch_sizes=[2, 4], learning_rates=[0.01, 0.001], momenta=[0.9, 0.0],
                     gradcheck_size=32, gradcheck_width=0.25),
    ),
    # Learning rate 0.002 with momentum 0.9: at 0.01 the baseline (He init, no normalization)
    # stays at the majority class for its first hundred steps and the residual network
    # diverges; at 0.002 the baseline's valid AUC passed 0.75 within 100 steps on the
    # synthetic set (measured with the default set of 2,000 train images).
    # Sized from the measured cost on 2 cores (baseline step at batch 32 ~1.2-2 s; deeper
    # 1.3x, wider 3x, residual 1.1x): 02 trains 5 epochs of the 640 train images; 04 and 05
    # train one epoch per run (3 new architectures, 6 new sweep runs).
    "quick": Profile(
        name="quick",
        description="synthetic set at 227x227 on a 2-core CPU: the whole report in <= 15 min",
        input_size=227,
        # 641: the generator truncates one train file on purpose (the cache skips it), which
        # leaves 640 images, 20 steps of 32 per epoch, so evaluations fall on epoch ends.
        synthetic_train=641,
        synthetic_valid=200,
        knobs=_knobs(input_size=227, steps=100, eval_every=20, batch_size=32, lr=0.002,
                     momentum=0.9, eval_images=160, arch_steps=20, arch_eval_every=10,
                     batch_sizes=[16, 32, 64], learning_rates=[0.01, 0.002, 0.0005],
                     momenta=[0.9, 0.5, 0.0], gradcheck_size=32, gradcheck_width=1.0),
    ),
    # Real MURA (36,808 train images): 02 about 5 epochs, 04 and 05 about 2.6 epochs per run.
    "full": Profile(
        name="full",
        description="real MURA at 227x227 on one GPU",
        input_size=227,
        synthetic_train=2000,
        synthetic_valid=300,
        real_data=True,
        knobs=_knobs(input_size=227, steps=6000, eval_every=500, batch_size=32, lr=0.002,
                     momentum=0.9, eval_images=2000, arch_steps=3000, arch_eval_every=500,
                     batch_sizes=[16, 32, 64], learning_rates=[0.01, 0.002, 0.0005],
                     momenta=[0.9, 0.5, 0.0], gradcheck_size=32, gradcheck_width=1.0),
    ),
}

DEFAULT_PROFILE = "quick"


def get_profile(name: str) -> Profile:
    """The profile called ``name``; a clear error lists the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}"
        ) from None


def notebook_settings(notebook: str, profile: str, **given) -> dict:
    """The knobs of ``notebook`` under ``profile``, with every non-None value in ``given``
    taking precedence (a notebook passes its parameters; ``None`` means "the profile's")."""
    settings = get_profile(profile).notebook_knobs(notebook)
    unknown = sorted(k for k, v in given.items() if v is not None and k not in settings)
    if unknown:
        raise TypeError(f"notebook {notebook!r} has no knob(s) {', '.join(unknown)}")
    settings.update({k: v for k, v in given.items() if v is not None})
    return settings
