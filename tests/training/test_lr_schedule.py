"""Tests of the shared learning-rate schedule (linear warm-up, cosine decay)."""

from __future__ import annotations

import math

import pytest

from fourview.training.lr_schedule import warmup_cosine

PEAK, WARMUP, TOTAL, MIN_RATIO = 1e-3, 10, 110, 0.1


def _lr(step: int, **kw) -> float:
    args = dict(warmup_steps=WARMUP, total_steps=TOTAL, min_lr_ratio=MIN_RATIO, peak=PEAK) | kw
    return warmup_cosine(step, **args)


def test_warmup_is_linear_from_near_zero_to_the_peak():
    rates = [_lr(s) for s in range(WARMUP)]
    assert rates[0] == pytest.approx(PEAK / WARMUP) and 0 < rates[0] < PEAK
    assert all(b - a == pytest.approx(PEAK / WARMUP) for a, b in zip(rates, rates[1:]))  # equal increments
    assert rates[-1] == pytest.approx(PEAK)  # the last warm-up step reaches the peak
    assert _lr(WARMUP) == pytest.approx(PEAK)  # and the cosine starts there


def test_cosine_decays_to_min_ratio_at_the_last_step_and_stays():
    decay = [_lr(s) for s in range(WARMUP, TOTAL + 1)]
    assert all(a > b for a, b in zip(decay, decay[1:]))  # strictly decreasing
    assert _lr((WARMUP + TOTAL) // 2) == pytest.approx(PEAK * (MIN_RATIO + (1 - MIN_RATIO) * 0.5))  # halfway
    assert _lr(TOTAL) == pytest.approx(PEAK * MIN_RATIO)
    assert _lr(TOTAL + 1) == _lr(5 * TOTAL) == _lr(TOTAL)  # beyond the end: held at the minimum


def test_multiplier_form_and_edge_cases():
    # peak=1.0 (the default) is the multiplier of a base rate, e.g. for LambdaLR
    for s in (0, 4, WARMUP, 37, TOTAL, TOTAL + 3):
        factor = warmup_cosine(s, warmup_steps=WARMUP, total_steps=TOTAL, min_lr_ratio=MIN_RATIO)
        assert PEAK * factor == pytest.approx(_lr(s), rel=1e-12) and 0 < factor <= 1
    assert _lr(0, warmup_steps=0) == PEAK  # no warm-up: start at the peak
    assert all(_lr(s, min_lr_ratio=1.0) == PEAK for s in range(WARMUP, TOTAL + 5))  # min_lr_ratio 1: constant
    # a run no longer than its warm-up: no division by zero, peak then minimum
    assert _lr(5, warmup_steps=5, total_steps=5) == PEAK
    assert _lr(6, warmup_steps=5, total_steps=5) == pytest.approx(PEAK * MIN_RATIO)


def test_rounding_matches_the_running_trainings():
    """Checkpointed runs resume with this code: the float order ``peak * (step + 1) / warmup`` is kept."""
    assert _lr(2) == PEAK * 3 / WARMUP == 0.00030000000000000003  # not PEAK * (3 / WARMUP) == 0.0003
    half = 0.5 * (1 + math.cos(math.pi * 0.5))
    assert _lr(60) == PEAK * (MIN_RATIO + (1 - MIN_RATIO) * half)
