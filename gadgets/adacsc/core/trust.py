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
chi2 of in-distribution data is modelled from a figure the solve gives for free,

    chi2_0 = 1 - a * rho^b,

rho the non-zero code coefficients per acquired sample (real and imaginary parts counted apart:
how much model the solve used); a and b are fitted to validation slices at noise levels 0.02-0.3
(`benchmarks/bench_trust.py --calibrate`; a third term in the normalised noise level came out
with exponent 0.001 and was left out; the figures and the held-out test are in docs/SITE_QA.md).
The trust index is

    t = chi2 / chi2_0,

about 1 in distribution. A noise level that is wrong moves it as the square of the error (sigma 2x
too small: t about 4); an object the dictionary and maps cannot represent, or data the model
cannot explain (corrupted lines, spikes), leave structure in the residual and raise it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from adacsc.core.fourier import SampledFourier

#: (a, b) of chi2_0 = 1 - a rho^b, fitted for the shipped default chain (netv3_lowfield_tv,
#: cdl_k32_9x9_l0.01, 32 iterations, TV low-pass) on 48 + 20 validation slices of the 160 and 256 grids
CALIBRATION = (0.3696, 0.4300)
#: chi2_0 is kept at least this (a model that spent nearly every degree of freedom says nothing)
MIN_EXPECTED = 0.05


@dataclass(frozen=True)
class DataConsistency:
    """The data-consistency figures of one slice."""

    data_residual: float
    """chi2 = ||A x* - y||^2 / (M sigma^2)"""
    active_per_sample: float
    """rho: non-zero code coefficients (real and imaginary apart) per acquired sample"""
    trust_index: float
    """chi2 / chi2_0"""
    residual_map: torch.Tensor | None = None
    """|A^H (A x* - y)| / sigma [H, W], when asked for"""


def expected_residual(active_per_sample: float, calibration: tuple[float, float] = CALIBRATION) -> float:
    """chi2_0: the data residual expected in distribution for this code density."""
    a, b = calibration
    if not math.isfinite(active_per_sample):
        return 1.0
    return max(1.0 - a * max(active_per_sample, 0.0) ** b, MIN_EXPECTED)


def measure(fourier: SampledFourier, image: torch.Tensor, kspace: torch.Tensor, codes: torch.Tensor,
            samples: int, noise_std: float, residual_map: bool = False,
            calibration: tuple[float, float] = CALIBRATION) -> DataConsistency:
    """The figures of one slice: `image` x* [1, H, W] and `codes` [1, K, H, W] of the solve,
    `kspace` y [1, M1, M2] (zero where not acquired), `samples` M acquired, noise std sigma."""
    residual = fourier(image) - (kspace if fourier.mask is None else kspace * fourier.mask.to(kspace.device))
    chi2 = float(torch.sum(residual.real ** 2 + residual.imag ** 2)) / (max(samples, 1) * noise_std ** 2)
    rho = (int(torch.count_nonzero(codes.real)) + int(torch.count_nonzero(codes.imag))) / max(samples, 1)
    trust = chi2 / expected_residual(rho, calibration)
    residual_image = (fourier.adjoint(residual)[0].abs() / noise_std) if residual_map else None
    return DataConsistency(chi2, rho, trust, residual_image)
