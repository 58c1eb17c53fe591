"""The code figures of the trust index (adacsc.core.trust): filter-usage entropy, the
atypicality distance (conditioned on the snr and grid, tolerant of smooth objects) and what
`measure` returns."""

import math

import numpy as np
import pytest
import torch

from adacsc.core.fourier import SampledFourier
from adacsc.core.trust import Typical, code_figures, measure, usage_entropy


def test_usage_entropy_is_ln_k_for_even_use_and_0_for_one_filter() -> None:
    assert usage_entropy(torch.tensor([5, 5, 5, 5])) == pytest.approx(math.log(4))
    assert usage_entropy(torch.tensor([0, 7, 0])) == 0.0
    assert math.isnan(usage_entropy(torch.zeros(3, dtype=torch.long)))
    # a permutation of the filters leaves it as it is
    assert usage_entropy(torch.tensor([1, 2, 3, 10])) == pytest.approx(usage_entropy(torch.tensor([10, 3, 1, 2])))


def _typical(smoothing: tuple = ((0.0, 0.0), (0.0, 0.0))) -> Typical:
    """Expected ln rho = 1 + 0.5 s + g and H = 2; std 1 for ln rho and 0.5 for H; s in [0, 10]."""
    return Typical(coefficients=((1.0, 2.0), (0.5, 0.0), (0.0, 0.0), (1.0, 0.0)), smoothing=smoothing,
                   precision=((1.0, 0.0), (0.0, 4.0)), snr_range=(0.0, 10.0), grid_range=(-1.0, 1.0))


def test_atypicality_is_the_distance_from_what_the_snr_and_grid_lead_to_expect() -> None:
    typical = _typical()
    assert typical.distance((2.0, 2.0, 2.0), 256) == 0.0
    # a lower snr alone is not atypical: fewer codes are what it leads to expect
    assert typical.distance((-0.0, 1.0, 2.0), 256) == 0.0
    assert typical.distance((2.0, 2.0, 2.5), 256) == pytest.approx(1.0)  # one std is 0.5 along H
    assert typical.distance((2.0, 2.0 + math.log(2), 2.0), 512) == pytest.approx(0.0, abs=1e-12)
    # snr and grid are held inside the calibration's ranges
    assert typical.distance((30.0, 7.0, 2.0), 256) == pytest.approx(1.0)
    assert typical.distance((2.0, 3.0, 2.0), 4096) == pytest.approx(0.0, abs=1e-12)
    assert typical.distance((1.0, -math.inf, 2.0), 256) == math.inf
    assert typical.distance((1.0, 0.0, math.nan), 256) == math.inf
    assert code_figures(400.0, 100, 2.0, 0.5, 1.0) == (0.0, math.log(0.5), 1.0)


def test_smoothness_is_taken_as_the_one_that_fits_best_up_to_the_smoothest_calibrated() -> None:
    """Smooth objects need one code fewer (ln rho 1 lower) at full smoothness: anything from sharp to
    that is typical, less code than that or more than a sharp object needs is not."""
    typical = _typical(smoothing=((-1.0, 0.0), (0.0, 0.0)))
    assert typical.distance((2.0, 1.5, 2.0), 256) == pytest.approx(0.0, abs=1e-12)
    assert typical.distance((2.0, 1.0, 2.0), 256) == pytest.approx(0.0, abs=1e-12)
    assert typical.distance((2.0, -1.0, 2.0), 256) == pytest.approx(2.0)
    assert typical.distance((2.0, 4.0, 2.0), 256) == pytest.approx(2.0)
    assert typical.distance((2.0, 1.0, 3.0), 256) == pytest.approx(2.0)  # smoothness does not move H here


def test_measure_counts_codes_per_filter() -> None:
    rng = np.random.default_rng(0)
    y = torch.from_numpy((rng.standard_normal((1, 8, 8)) + 1j * rng.standard_normal((1, 8, 8))).astype(np.complex64))
    fourier = SampledFourier((8, 8), (8, 8))
    codes = torch.zeros((1, 3, 8, 8), dtype=torch.complex64)
    codes[0, 0, :2, :2] = 1 + 1j  # 8 non-zero parts in filter 0, 4 in filter 1
    codes[0, 1, 0, :4] = 1
    out = measure(fourier, fourier.adjoint(y), y, codes, 64, 1.0)
    assert out.data_residual < 1e-8 and out.active_per_sample == 12 / 64
    p = np.array([8, 4]) / 12
    assert abs(out.usage_entropy + (p * np.log(p)).sum()) < 1e-12
    assert math.isfinite(out.atypicality)
