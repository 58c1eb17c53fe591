"""The bracketed search that tunes every baseline of `adacsc evaluate` (adacsc.evaluation.methods)."""

import math

import pytest

from adacsc.evaluation.methods import FINEST_STEP, bracket_search


def _peak(optimum: float):
    calls = []

    def score(value: float) -> float:
        calls.append(value)
        return -math.log(value / optimum) ** 2

    return score, calls


@pytest.mark.parametrize("optimum", [0.0031, 0.05, 0.3, 0.45, 5.0])
def test_the_optimum_is_bracketed_within_the_finest_step(optimum):
    score, calls = _peak(optimum)
    best, tried, edge = bracket_search(score, [0.02, 0.04, 0.08, 0.16, 0.32, 0.64])
    assert not edge
    values = sorted(float(v) for v in tried)
    i = values.index(float(f"{best:.4g}"))
    assert 0 < i < len(values) - 1  # tried on both sides
    assert values[i + 1] / values[i] <= FINEST_STEP * 1.001 and values[i] / values[i - 1] <= FINEST_STEP * 1.001
    assert abs(math.log(best / optimum)) <= math.log(FINEST_STEP) / 2 + 1e-3
    assert len(calls) == len(set(calls)) <= 16  # no value scored twice


def test_a_best_value_at_the_end_widens_the_grid_and_a_far_one_is_flagged():
    score, _ = _peak(2.0)
    best, tried, edge = bracket_search(score, [0.1, 0.2, 0.4])
    assert not edge and abs(math.log(best / 2.0)) < 0.1 and max(float(v) for v in tried) > 2.0
    score, _ = _peak(1e4)
    best, tried, edge = bracket_search(score, [0.1, 0.2, 0.4], max_widen=3)
    assert edge and best == pytest.approx(3.2, rel=1e-3)


def test_the_plain_grid_search_tries_the_grid_only():
    score, calls = _peak(0.3)
    best, tried, edge = bracket_search(score, [0.1, 1.0], finest=None, max_widen=0)
    assert best == 0.1 and sorted(calls) == [0.1, 1.0] and edge


def test_bad_grids_are_refused():
    with pytest.raises(ValueError, match="positive"):
        bracket_search(lambda v: v, [0.0, 1.0])
    with pytest.raises(ValueError, match="positive"):
        bracket_search(lambda v: v, [])
