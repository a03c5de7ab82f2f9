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

Comparisons train every variant for the same number of steps (04) or the same number of
examples seen (05) from the same seeds, so the curves and the statistics are comparable.
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
    "06_explanations",
)

ARCHITECTURES = ("baseline", "deeper", "wider", "residual")


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
    steps: int,
    eval_every: int,
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
    samples_per_class: int = 4,
    mistakes: int = 4,
) -> dict:
    """The knobs of the notebooks, built from a few numbers so profiles stay consistent.

    02 trains the baseline for ``steps``; 04 trains every architecture with the same settings
    from ``arch_seeds`` seeds (the first one is the run seed, so 04's first baseline run is
    02's run, reused); 05's runs see as many examples as 04's (``steps * batch_size``) from
    ``sweep_seeds`` seeds, and the centre value of each sweep is 04's baseline, reused
    (``experiments.train_or_load`` finds runs by their settings).
    """
    train = dict(input_size=input_size, batch_size=batch_size, lr=lr, momentum=momentum,
                 weight_decay=0.0, warmup_steps=warmup_steps, schedule=schedule, steps=steps,
                 eval_every=eval_every, eval_images=eval_images)
    return {
        "01_model": dict(input_size=input_size, network_size=ASSIGNMENT_INPUT_SIZE,
                         gradcheck_size=gradcheck_size, gradcheck_width=gradcheck_width,
                         gradcheck_checks=4, samples_per_class=4),
        "02_training": dict(train, arch="baseline", predict_images=6),
        "03_evaluation": dict(input_size=input_size, arch="baseline", eval_max_images=None),
        "04_architectures": dict(train, architectures=list(ARCHITECTURES), seeds=arch_seeds),
        "05_hyperparameters": dict(train, seeds=sweep_seeds, batch_sizes=batch_sizes,
                                   learning_rates=learning_rates, momenta=momenta),
        "06_explanations": dict(input_size=input_size, samples_per_class=samples_per_class,
                                mistakes=mistakes),
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
                     arch_seeds=2, sweep_seeds=1, batch_sizes=[2, 4],
                     learning_rates=[0.01, 0.001], momenta=[0.9, 0.0], gradcheck_size=32,
                     gradcheck_width=0.25, samples_per_class=2, mistakes=2),
        why="numbers that mean nothing beyond 'every cell runs and every file is written'",
    ),
    # Measured on 2 cores (README, "What quick trains and why"): with momentum 0.9, a 30-step
    # warm-up and a cosine decay to 0, the baseline at 96x96 and lr 0.01 reached 84.4 % / 80.6 %
    # valid per image after 300 steps on the seed-0 / seed-1 synthetic sets (majority class
    # 60.2 % / 57.8 %; study kappa 0.82 / 0.79; 68 % / 59 % of the abnormal images found): as
    # well as at 128x128 or 227x227 for this many steps, at about a fifth of 227's cost.
    "quick": Profile(
        name="quick",
        description="synthetic set at 96x96 on a 2-core CPU: the whole report in <= 20 min",
        input_size=96,
        synthetic_train=2000,
        synthetic_valid=500,
        knobs=_knobs(input_size=96, steps=300, eval_every=None, batch_size=32, lr=0.01,
                     momentum=0.9, warmup_steps=30, schedule="cosine", eval_images=300,
                     arch_seeds=1, sweep_seeds=1, batch_sizes=[16, 32, 64],
                     learning_rates=[0.03, 0.01, 0.003], momenta=[0.9, 0.5, 0.0],
                     gradcheck_size=32, gradcheck_width=1.0),
        why=("a 2-core CPU trains the 227x227 network at about 1 s per step; at 96x96 the same "
             "layers learn the synthetic signal as well within 300 steps at about a fifth of the "
             "cost, which buys the 10 training runs of sections 2 to 5 within the 20 minutes"),
    ),
    # One GPU: real MURA (36,808 train images), or without it a MURA-sized synthetic set.
    # 600 steps of 32 images is about half an epoch of MURA per run; three seeds for each of
    # the 4 architectures and the 9 sweep values make 30 runs (README: measured times).
    "full": Profile(
        name="full",
        description="MURA (or a MURA-sized synthetic set) at 227x227 on one GPU",
        input_size=227,
        synthetic_train=36808,
        synthetic_valid=3197,
        real_data=True,
        knobs=_knobs(input_size=227, steps=600, eval_every=300, batch_size=32, lr=0.005,
                     momentum=0.9, warmup_steps=60, schedule="cosine", eval_images=2000,
                     arch_seeds=3, sweep_seeds=3, batch_sizes=[16, 32, 64],
                     learning_rates=[0.015, 0.005, 0.0015], momenta=[0.9, 0.5, 0.0],
                     gradcheck_size=32, gradcheck_width=1.0),
        why="the assignment's 227x227 network, three seeds per variant, sized for one GPU",
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
    return settings
