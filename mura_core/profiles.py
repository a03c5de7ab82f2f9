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
    batch_size: int,
    lr: float,
    momentum: float,
    eval_every: int,
    eval_images: int,
    arch_steps: int,
    sweep_examples: int,
    sweep_eval_every: int,
    batch_sizes: list[int],
    learning_rates: list[float],
    momenta: list[float],
    gradcheck_size: int,
    gradcheck_width: float,
    eval_max_images: int | None,
) -> dict:
    """The knobs of the five notebooks, built from a few numbers so profiles stay consistent.

    The baseline run of 02 uses exactly the settings of 04's baseline and of 05's centre point
    (batch size, learning rate, momentum, steps), so those notebooks reuse it instead of
    training it again (see ``experiments.train_or_load``).
    """
    base = dict(input_size=input_size, batch_size=batch_size, lr=lr, momentum=momentum,
                weight_decay=0.0, eval_images=eval_images)
    return {
        "01_model": dict(input_size=input_size, gradcheck_size=gradcheck_size,
                         gradcheck_width=gradcheck_width, gradcheck_checks=4,
                         samples_per_class=4),
        "02_training": dict(base, arch="baseline", steps=steps, eval_every=eval_every,
                            predict_images=6),
        "03_evaluation": dict(input_size=input_size, arch="baseline",
                              eval_max_images=eval_max_images),
        "04_architectures": dict(base, architectures=list(ARCHITECTURES), steps=arch_steps,
                                 eval_every=eval_every),
        "05_hyperparameters": dict(base, examples=sweep_examples,
                                   eval_every_examples=sweep_eval_every,
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
        knobs=_knobs(input_size=32, steps=4, batch_size=4, lr=0.01, momentum=0.9,
                     eval_every=2, eval_images=16, arch_steps=4, sweep_examples=16,
                     sweep_eval_every=8, batch_sizes=[2, 4], learning_rates=[0.01, 0.001],
                     momenta=[0.9, 0.0], gradcheck_size=32, gradcheck_width=0.25,
                     eval_max_images=None),
    ),
    "quick": Profile(
        name="quick",
        description="synthetic set at 227x227 on a 2-core CPU: the whole report in <= 15 min",
        input_size=227,
        synthetic_train=400,
        synthetic_valid=100,
        knobs=_knobs(input_size=227, steps=60, batch_size=32, lr=0.01, momentum=0.9,
                     eval_every=10, eval_images=128, arch_steps=60, sweep_examples=1920,
                     sweep_eval_every=320, batch_sizes=[16, 32, 64],
                     learning_rates=[0.1, 0.01, 0.001], momenta=[0.9, 0.5, 0.0],
                     gradcheck_size=32, gradcheck_width=1.0, eval_max_images=None),
    ),
    "full": Profile(
        name="full",
        description="real MURA at 227x227 on one GPU",
        input_size=227,
        synthetic_train=2000,
        synthetic_valid=300,
        real_data=True,
        knobs=_knobs(input_size=227, steps=6000, batch_size=32, lr=0.01, momentum=0.9,
                     eval_every=500, eval_images=1024, arch_steps=3000, sweep_examples=48000,
                     sweep_eval_every=6400, batch_sizes=[16, 32, 64],
                     learning_rates=[0.1, 0.01, 0.001], momenta=[0.9, 0.5, 0.0],
                     gradcheck_size=32, gradcheck_width=1.0, eval_max_images=None),
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
