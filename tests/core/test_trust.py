"""The code figures of the trust index (adacsc.core.trust): filter-usage entropy, the
atypicality distance and what `measure` returns."""

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


def test_atypicality_is_the_mahalanobis_distance() -> None:
    typical = Typical(mean=(1.0, 0.0, 2.0), precision=((4.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 0.25)))
    assert typical.distance((1.0, 0.0, 2.0)) == 0.0
    assert typical.distance((2.0, 0.0, 2.0)) == pytest.approx(2.0)  # one std is 0.5 along the first axis
    assert typical.distance((1.0, 0.0, 4.0)) == pytest.approx(1.0)
    assert typical.distance((1.0, -math.inf, 2.0)) == math.inf
    assert code_figures(400.0, 100, 2.0, 0.5, 1.0) == (0.0, math.log(0.5), 1.0)


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
