"""Learning-rate schedules: warmup, then constant for never-ending training, or the original cosine."""

from __future__ import annotations

import itertools

import pytest

from aifactory.train.schedule import Schedule


def test_constant_schedule_warms_up_then_holds_the_peak_forever() -> None:
    schedule = Schedule("constant", peak_lr=1e-3, warmup_steps=10, total_steps=100, min_lr_ratio=0.1)
    assert schedule.lr(0) == pytest.approx(1e-4)
    assert schedule.lr(4) == pytest.approx(5e-4)
    assert schedule.lr(9) == schedule.lr(10) == schedule.lr(10**7) == pytest.approx(1e-3)


def test_cosine_schedule_decays_to_the_floor_and_stays_there() -> None:
    schedule = Schedule("cosine", peak_lr=1e-3, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert schedule.lr(10) == pytest.approx(1e-3)
    assert schedule.lr(60) == pytest.approx(0.55e-3)  # half-way: the mean of peak and floor
    assert schedule.lr(110) == schedule.lr(10**6) == pytest.approx(1e-4)
    rates = [schedule.lr(step) for step in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(rates))


def test_the_scale_lowers_the_whole_schedule() -> None:
    schedule = Schedule("constant", peak_lr=1e-3, warmup_steps=0, total_steps=1, min_lr_ratio=0.0)
    assert schedule.lr(5, scale=0.25) == pytest.approx(2.5e-4)


def test_settings_choose_the_schedule(make_settings) -> None:
    schedule = Schedule.from_settings(make_settings(train_lr_schedule="cosine", train_total_steps=500))
    assert (schedule.name, schedule.total_steps, schedule.peak_lr) == ("cosine", 500, 3e-4)
    assert Schedule.from_settings(make_settings()).name == "constant"
