"""Run profiles: how much data and compute each notebook of the report gets.

A profile is data, not code: the input size, the size of the synthetic set, and for every
notebook the knobs it takes as papermill parameters (steps, batch size, learning rate, ...).
The pipeline passes a notebook's knobs through as parameters; a notebook run by hand fills
the knobs it was not given from the profile named in its ``parameters`` cell.

- ``smoke``: seconds per notebook on a tiny input and a tiny synthetic set; the tests use it.
  Its numbers mean nothing beyond "every cell runs and every file is written".
- ``quick``: the default of ``make report``: synthetic data at 96x96, sized so the whole
  report (data, cache, notebooks, PDF) takes at most 20 minutes on a 2-core CPU, with a
  baseline that has clearly learned and comparisons long enough to decide something.
- ``full``: MURA at 227x227 (or, without it, a MURA-sized synthetic set), sized for one GPU
  (``--backend cupy``); chosen when the backend resolves to CuPy and no profile is given.

Comparisons train every variant for the same number of steps or epochs (04), or the same
number of examples seen (05), from the same seeds, so the curves and the statistics are
comparable.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

from ..nn.models import ARCHITECTURES

NOTEBOOKS = (
    "01_model",
    "02_training",
    "03_evaluation",
    "04_architectures",
    "05_hyperparameters",
    "06_explanations",
)
#: The explorer (a live kernel's widgets): in JupyterLab beside the report's notebooks, not in
#: the report, whose runs it reuses (its settings are 04's, so its models are 04's seed-0 runs).
EXPLORER = "07_explorer"



@dataclass(frozen=True)
class Profile:
    """One run profile.

    ``synthetic_train`` / ``synthetic_valid`` are the number of images of each split of the
    generated set (ignored with real data). ``knobs`` maps a notebook name to the parameters
    it receives. ``real_data`` says the profile is meant for the real MURA set. ``why`` says
    in a sentence why it trains what it trains (the report's first page quotes it).
    """

    name: str
    description: str
    input_size: int
    synthetic_train: int
    synthetic_valid: int
    real_data: bool = False
    knobs: dict = field(default_factory=dict)
    why: str = ""

    def notebook_knobs(self, notebook: str) -> dict:
        """A copy of the knobs of one notebook (``"02_training"`` or ``"02_training.ipynb"``)."""
        key = notebook.removesuffix(".ipynb")
        if key not in self.knobs:
            raise KeyError(f"profile {self.name!r} has no settings for notebook {key!r}")
        return copy.deepcopy(self.knobs[key])


#: The assignment's input size: notebook 01's network table is always at this size.
ASSIGNMENT_INPUT_SIZE = 227


def _knobs(
    *,
    input_size: int,
    batch_size: int,
    lr: float,
    momentum: float,
    warmup_steps: int,
    schedule: str,
    eval_images: int,
    arch_seeds: int,
    sweep_seeds: int,
    batch_sizes: list[int],
    learning_rates: list[float],
    momenta: list[float],
    gradcheck_size: int,
    gradcheck_width: float,
    steps: int | None = None,
    epochs: int | None = None,
    baseline_epochs: int | None = None,
    eval_every: int | None = None,
    evals_per_epoch: int | None = None,
    augment: bool = False,
    samples_per_class: int = 4,
    mistakes: int = 4,
) -> dict:
    """The knobs of the notebooks, built from a few numbers so profiles stay consistent.

    Every run trains ``steps`` steps, or ``epochs`` whole passes over train, evaluated at
    every epoch end and the last step, and every ``eval_every`` steps (or
    ``evals_per_epoch`` times an epoch) when given. 02 trains the baseline (for
    ``baseline_epochs`` when given, else as long as the others); 04 trains every architecture
    with the same settings from ``arch_seeds`` seeds (the first one is the run seed, so 04's
    first baseline run is 02's run, reused, when 02 trains as long); 05's runs see as many
    examples as 04's from ``sweep_seeds`` seeds, and the centre value of each sweep is 04's
    baseline, reused (``store.train_or_load`` finds runs by their settings).
    """
    if (steps is None) == (epochs is None):
        raise ValueError("a profile trains either steps or epochs")
    train = dict(input_size=input_size, batch_size=batch_size, lr=lr, momentum=momentum,
                 weight_decay=0.0, warmup_steps=warmup_steps, schedule=schedule, steps=steps,
                 epochs=epochs, eval_every=eval_every, evals_per_epoch=evals_per_epoch,
                 eval_images=eval_images, augment=augment)
    baseline = dict(train, epochs=baseline_epochs) if baseline_epochs else train
    return {
        "01_model": dict(input_size=input_size, network_size=ASSIGNMENT_INPUT_SIZE,
                         gradcheck_size=gradcheck_size, gradcheck_width=gradcheck_width,
                         gradcheck_checks=4, samples_per_class=4),
        "02_training": dict(baseline, arch="baseline", predict_images=6),
        "03_evaluation": dict(input_size=input_size, arch="baseline", eval_max_images=None),
        "04_architectures": dict(train, architectures=list(ARCHITECTURES), seeds=arch_seeds),
        "05_hyperparameters": dict(train, seeds=sweep_seeds, batch_sizes=batch_sizes,
                                   learning_rates=learning_rates, momenta=momenta),
        "06_explanations": dict(input_size=input_size, samples_per_class=samples_per_class,
                                mistakes=mistakes),
        EXPLORER: dict(train, models=["baseline", "residual"]),
    }


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="tiny synthetic set, 32x32 input: every cell runs in seconds (tests)",
        input_size=32,
        synthetic_train=40,
        synthetic_valid=16,
        knobs=_knobs(input_size=32, steps=4, eval_every=2, batch_size=4, lr=0.01,
                     momentum=0.9, warmup_steps=1, schedule="cosine", eval_images=16,
                     arch_seeds=2, sweep_seeds=2, batch_sizes=[2, 4],
                     learning_rates=[0.01, 0.001], momenta=[0.9, 0.0], gradcheck_size=32,
                     gradcheck_width=0.25, samples_per_class=2, mistakes=2),
        why="numbers that mean nothing beyond 'every cell runs and every file is written'",
    ),
    # docs/profiles.md: what quick trains and why, from measurements.
    "quick": Profile(
        name="quick",
        description="synthetic set at 64x64 on a 2-core CPU: the whole report in <= 20 min",
        input_size=64,
        synthetic_train=4000,
        synthetic_valid=1500,
        knobs=_knobs(input_size=64, epochs=2, evals_per_epoch=2, batch_size=32, lr=0.01,
                     momentum=0.9,
                     warmup_steps=25, schedule="cosine", eval_images=300,
                     arch_seeds=3, sweep_seeds=2, batch_sizes=[16, 32, 64],
                     learning_rates=[0.03, 0.01, 0.003], momenta=[0.9, 0.5, 0.0],
                     gradcheck_size=32, gradcheck_width=1.0),
        why=("a 2-core CPU trains the 227x227 network at about 1 s per step; at 64x64 the same "
             "layers learn the synthetic signal within two epochs at a twelfth of the cost, which "
             "buys three seeds of every architecture and two of every sweep value, evaluated on "
             "1,500 valid images, within the 20 minutes"),
    ),
    # One GPU: real MURA (36,808 train images), or without it a MURA-sized synthetic set;
    # whole epochs with augmentation, three seeds everywhere (docs/profiles.md: the times).
    "full": Profile(
        name="full",
        description="MURA (or a MURA-sized synthetic set) at 227x227 on one GPU",
        input_size=227,
        synthetic_train=36808,
        synthetic_valid=3197,
        real_data=True,
        knobs=_knobs(input_size=227, epochs=3, baseline_epochs=8, batch_size=32, lr=0.005,
                     momentum=0.9, warmup_steps=100, schedule="cosine", eval_images=2000,
                     augment=True, arch_seeds=3, sweep_seeds=3, batch_sizes=[16, 32, 64],
                     learning_rates=[0.015, 0.005, 0.0015], momenta=[0.9, 0.5, 0.0],
                     gradcheck_size=32, gradcheck_width=1.0),
        why="the assignment's 227x227 network, whole epochs, three seeds per variant, one GPU",
    ),
}

DEFAULT_PROFILE = "quick"
GPU_PROFILE = "full"


def get_profile(name: str) -> Profile:
    """The profile called ``name``; a clear error lists the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}"
        ) from None


def notebook_settings(notebook: str, profile: "Profile | str", **given) -> dict:
    """The knobs of ``notebook`` under ``profile``, with every non-None value in ``given``
    taking precedence (a notebook passes its parameters; ``None`` means "the profile's")."""
    if not isinstance(profile, Profile):
        profile = get_profile(profile)
    settings = profile.notebook_knobs(notebook)
    unknown = sorted(k for k, v in given.items() if v is not None and k not in settings)
    if unknown:
        raise TypeError(f"notebook {notebook!r} has no knob(s) {', '.join(unknown)}")
    settings.update({k: v for k, v in given.items() if v is not None})
    # A run's length is steps or epochs: the one given replaces the profile's other one.
    for chosen, other in (("steps", "epochs"), ("epochs", "steps")):
        if given.get(chosen) is not None and given.get(other) is None and other in settings:
            settings[other] = None
    return settings
