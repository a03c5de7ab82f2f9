"""The learning-rate schedule alone: warm-up, step, cosine and plateau, checked against the
formulas written out by hand, and its state carried through a checkpoint."""
import math

import pytest

from mura_core.training.config import TrainConfig
from mura_core.training.schedule import LearningRateSchedule


def schedule(total=100, per_epoch=10, **settings):
    return LearningRateSchedule(TrainConfig(**settings), total, per_epoch)


def test_no_schedule_keeps_the_rate_and_the_warm_up_ramps_it_linearly():
    s = schedule(lr=0.1, warmup_steps=4)
    assert [s.rate(k) for k in range(6)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    assert schedule(lr=0.1).rate(0) == pytest.approx(0.1)


def test_step_schedule_drops_by_gamma_every_step_size_never_below_min_lr():
    s = schedule(lr=1.0, schedule="step", lr_gamma=0.5, lr_step_size=3, min_lr=0.2)
    assert [s.rate(k) for k in range(10)] == pytest.approx(
        [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2])
    per_epoch = schedule(lr=1.0, schedule="step", lr_gamma=0.1)  # default: one epoch
    assert per_epoch.rate(9) == pytest.approx(1.0) and per_epoch.rate(10) == pytest.approx(0.1)


def test_cosine_runs_from_lr_after_the_warm_up_down_to_min_lr_at_the_end():
    s = schedule(total=50, lr=0.2, schedule="cosine", min_lr=0.02, warmup_steps=10)
    for k in range(50):
        done = max(0, k - 10) / 40
        expected = 0.02 + 0.18 * 0.5 * (1 + math.cos(math.pi * done))
        if k < 10:
            expected *= (k + 1) / 10
        assert s.rate(k) == pytest.approx(expected), k
    assert s.rate(50) == pytest.approx(0.02) and s.rate(80) == pytest.approx(0.02)


def test_plateau_lowers_the_rate_after_patience_evaluations_without_improvement():
    s = schedule(lr=1.0, schedule="plateau", lr_gamma=0.1, plateau_patience=1, min_lr=0.005)
    rates = []
    for accuracy in (0.5, 0.6, 0.6, 0.55, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7):
        s.evaluated(accuracy)
        rates.append(s.rate(50))
    assert rates == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.005, 0.005])


def test_evaluations_leave_the_other_schedules_alone():
    s = schedule(lr=0.3, schedule="cosine")
    before = [s.rate(k) for k in range(100)]
    for _ in range(10):
        s.evaluated(0.1)
    assert [s.rate(k) for k in range(100)] == before


def test_the_state_a_checkpoint_keeps_restores_the_plateau():
    a = schedule(lr=1.0, schedule="plateau", lr_gamma=0.5, plateau_patience=0)
    for accuracy in (0.5, 0.4, 0.3):
        a.evaluated(accuracy)
    b = schedule(lr=1.0, schedule="plateau", lr_gamma=0.5, plateau_patience=0)
    b.load_state(a.state())
    assert b.state() == a.state() == {"lr": 0.25, "plateau_best": 0.5, "plateau_bad": 0}
    a.evaluated(0.2), b.evaluated(0.2)
    assert a.rate(0) == b.rate(0) == pytest.approx(0.125)
