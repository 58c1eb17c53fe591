"""The data-consistency trust index of a CSC reconstruction: how far the image is from the data
it was made from, in units of what the noise explains.

    chi2 = ||A x* - y||^2 / (M sigma^2)

M acquired complex samples, sigma the k-space noise std. If the reconstruction were the object
itself, the residual would be the noise and chi2 = 1. A regularised reconstruction also fits part
of the noise: for Gaussian noise E||A x* - y||^2 = sigma^2 (M - df) + ||bias||^2 (Stein), df the
real degrees of freedom it spends on the data (its divergence). With the learned maps, 32 FISTA
iterations and the TV low-pass, df / M is 0.15-0.65 in distribution, larger where the codes are
dense (fine structure, low noise), so chi2 alone is 0.35-0.85 on good data and says little.

Measuring df (a Monte-Carlo divergence) would need a second reconstruction. Instead the expected
chi2 of in-distribution data is modelled from two figures the solve gives for free,

    chi2_0 = 1 - a * rho^b * s^c,

rho the non-zero code coefficients per acquired sample (real and imaginary parts counted apart:
how much model the solve used) and s = sigma / scale the noise level in the solver's normalised
units; a, b, c are fitted to validation slices (`benchmarks/bench_trust.py --calibrate`; the
figures and the held-out test are in docs/SITE_QA.md). The trust index is

    t = chi2 / chi2_0,

about 1 in distribution. A noise level that is wrong moves it as the square of the error (sigma 2x
too small: t about 4); an object the dictionary and maps cannot represent, or data the model
cannot explain (corrupted lines, spikes), leave structure in the residual and raise it.
"""

from __future__ import annotations

import math

#: (a, b, c) of chi2_0 = 1 - a rho^b s^c, fitted for the shipped default chain (netv3_lowfield_tv,
#: cdl_k32_9x9_l0.01, 32 iterations, TV low-pass) on validation slices
CALIBRATION = (0.33, 0.5, 0.0)
#: chi2_0 is kept at least this (a model that spent nearly every degree of freedom says nothing)
MIN_EXPECTED = 0.05


def expected_residual(active_per_sample: float, noise_normalised: float,
                      calibration: tuple[float, float, float] = CALIBRATION) -> float:
    """chi2_0: the data residual expected in distribution for this code density and noise."""
    a, b, c = calibration
    if not (math.isfinite(active_per_sample) and math.isfinite(noise_normalised) and noise_normalised > 0):
        return 1.0
    spent = a * max(active_per_sample, 0.0) ** b * noise_normalised ** c
    return max(1.0 - spent, MIN_EXPECTED)


def trust_index(data_residual: float, active_per_sample: float, noise_normalised: float,
                calibration: tuple[float, float, float] = CALIBRATION) -> float:
    """t = chi2 / chi2_0 (about 1 in distribution)."""
    return data_residual / expected_residual(active_per_sample, noise_normalised, calibration)
