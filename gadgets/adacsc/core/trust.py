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
too small: t about 4); data the model cannot explain (corrupted lines, spikes) leave structure in
the residual and raise it.

Code atypicality: the second signal. When the CSC fits the data, chi2 cannot tell an object
the model was trained on from one it was not: the macaque brain and the analytic phantom gave
t 0.91-1.23, like human brains. What differs is how the solve explains them: which dictionary
filters carry the image, and how much model it spends for the data's signal-to-noise ratio. Three
figures, all free from the solve:

    f = (ln snr, ln rho, H),   snr = ||y||^2 / (M sigma^2),   H = -sum_k p_k ln p_k,

p_k the share of the non-zero code coefficients that filter k holds (H is the entropy of the
filter usage: ln K when every filter is used alike; a permutation of the filters leaves it as it
is, like the maps of NET_Theta V3). The atypicality is the Mahalanobis distance of f from the
Gaussian of validation slices (human brains at noise levels 0.02-0.3, 160 and 256 grids),

    a = sqrt((f - mu)^T C^-1 (f - mu)),

fitted by `benchmarks/bench_trust.py --calibrate` (validation data only, never the test or
out-of-distribution cases). For a Gaussian f, a^2 is chi-square with 3 degrees of freedom, so
a > ATYPICALITY_LIMIT = 3.37 happens to 1 % of in-distribution slices; other anatomy uses the
filters differently for its snr (the phantom spreads its codes more evenly over the filters than
brains do, H higher; the macaque concentrates them on fewer, H lower) and lands outside (figures
in docs/SITE_QA.md).
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
class Typical:
    """The Gaussian of the code figures (ln snr, ln rho, H) of in-distribution slices."""

    mean: tuple[float, float, float]
    precision: tuple[tuple[float, float, float], ...]
    """the inverse of their covariance"""

    def distance(self, figures: tuple[float, float, float]) -> float:
        """The Mahalanobis distance of `figures` (inf when one is not finite)."""
        if not all(math.isfinite(f) for f in figures):
            return math.inf
        d = [f - m for f, m in zip(figures, self.mean)]
        return math.sqrt(max(sum(d[i] * self.precision[i][j] * d[j] for i in range(3) for j in range(3)), 0.0))


#: fitted for the shipped default chain on 102 validation slices (12 of the 160 grid at noise levels
#: 0.02-0.3, 6 of the 256 grid at 0.03-0.3: `benchmarks/bench_trust.py --calibrate --images 12`)
TYPICAL = Typical(mean=(4.70244, -0.473994, 2.76488),
                  precision=((1.638, -1.95476, -7.10826), (-1.95476, 7.38216, -20.1069),
                             (-7.10826, -20.1069, 250.323)))
#: a slice whose code atypicality is above this is not trusted: sqrt of the 99 % point of
#: chi-square with 3 degrees of freedom (11.345)
ATYPICALITY_LIMIT = 3.37


@dataclass(frozen=True)
class DataConsistency:
    """The data-consistency figures of one slice."""

    data_residual: float
    """chi2 = ||A x* - y||^2 / (M sigma^2)"""
    active_per_sample: float
    """rho: non-zero code coefficients (real and imaginary apart) per acquired sample"""
    trust_index: float
    """chi2 / chi2_0"""
    usage_entropy: float = math.nan
    """H: the entropy of the share of non-zero code coefficients per filter"""
    atypicality: float = math.nan
    """a: the Mahalanobis distance of (ln snr, ln rho, H) from validation slices"""
    residual_map: torch.Tensor | None = None
    """|A^H (A x* - y)| / sigma [H, W], when asked for"""


def expected_residual(active_per_sample: float, calibration: tuple[float, float] = CALIBRATION) -> float:
    """chi2_0: the data residual expected in distribution for this code density."""
    a, b = calibration
    if not math.isfinite(active_per_sample):
        return 1.0
    return max(1.0 - a * max(active_per_sample, 0.0) ** b, MIN_EXPECTED)


def usage_entropy(active: torch.Tensor) -> float:
    """H = -sum_k p_k ln p_k of the non-zero coefficients per filter `active` [K] (nan when none)."""
    total = float(active.sum())
    if total <= 0:
        return math.nan
    share = active.double() / total
    share = share[share > 0]
    return float(-(share * share.log()).sum())


def code_figures(kspace_energy: float, samples: int, noise_std: float, active_per_sample: float,
                 entropy: float) -> tuple[float, float, float]:
    """(ln snr, ln rho, H) of a slice (-inf where snr or rho is 0)."""
    snr = kspace_energy / (max(samples, 1) * noise_std ** 2)
    return (math.log(snr) if snr > 0 else -math.inf,
            math.log(active_per_sample) if active_per_sample > 0 else -math.inf, entropy)


def measure(fourier: SampledFourier, image: torch.Tensor, kspace: torch.Tensor, codes: torch.Tensor,
            samples: int, noise_std: float, residual_map: bool = False,
            calibration: tuple[float, float] = CALIBRATION, typical: Typical = TYPICAL) -> DataConsistency:
    """The figures of one slice: `image` x* [1, H, W] and `codes` [1, K, H, W] of the solve,
    `kspace` y [1, M1, M2] (zero where not acquired), `samples` M acquired, noise std sigma."""
    acquired = kspace if fourier.mask is None else kspace * fourier.mask.to(kspace.device)
    residual = fourier(image) - acquired
    chi2 = float(torch.sum(residual.real ** 2 + residual.imag ** 2)) / (max(samples, 1) * noise_std ** 2)
    active = torch.count_nonzero(codes.real[0], dim=(1, 2)) + torch.count_nonzero(codes.imag[0], dim=(1, 2))
    rho = float(active.sum()) / max(samples, 1)
    trust = chi2 / expected_residual(rho, calibration)
    entropy = usage_entropy(active)
    energy = float(torch.sum(acquired.real ** 2 + acquired.imag ** 2))
    atypicality = typical.distance(code_figures(energy, samples, noise_std, rho, entropy))
    residual_image = (fourier.adjoint(residual)[0].abs() / noise_std) if residual_map else None
    return DataConsistency(chi2, rho, trust, entropy, atypicality, residual_image)
