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
is, like the maps of NET_Theta V3).

How much code a brain needs follows its snr and the grid: noisier data and finer pixels (less
detail per pixel) take fewer coefficients, on fewer filters. So the snr is not itself a sign of
anything (a scan at the noisiest training level, 0.45, has ln snr 1.8 against 7.8 at 0.02), and
the atypicality asks whether (ln rho, H) are what brains give at this snr and grid:

    e = (ln rho, H) - m(s, g) - t v(s),   a = min over t in [0, t_max] of sqrt(e^T C^-1 e),

m linear in (1, s, s^2, g), s = ln snr and g = ln(grid / 256) (the grid side, held inside the
calibration's ranges: noise levels 0.45 to 0.02, grids 128 to 512), C the covariance of the
residuals. v(s), linear in (1, s), is how far objects as smooth as the simulator renders them
(a Gaussian of 0.42 acquired pixels and linear interpolation: k-space down to 17 % at the edge
of the acquired block, as a scanner's raw-data filter may do) move the figures: fewer codes on
fewer filters. The object's smoothness is not known, so the atypicality takes the t that fits
best, from as sharp as the evaluation protocol's slices (0) to a little beyond the smoothed ones
(t_max = 1.25: the smallest multiple, in steps of 0.05, that leaves 1 % of the validation slices,
sharp and smoothed, above the limit; 1.9 % were at t_max = 1: the smoothed slices spread along v).
All of it is fitted by `benchmarks/bench_trust.py --calibrate` to validation slices only (never
the test or out-of-distribution cases): the 160 and 256 grids at noise levels 0.02-0.45, the
simulator's grids 128 and 512, 4 and 8 coils after coil combination, and smoothed slices. For a
Gaussian residual, a^2 (t = 0) is chi-square with 2 degrees of freedom, so a > ATYPICALITY_LIMIT
= 3.03 (its 99 % point) happens to at most 1 % of sharp in-distribution slices; other anatomy
uses the filters differently for its snr (the phantom spreads its codes more evenly over the
filters than brains do, H higher; the macaque concentrates them on fewer, H lower) and lands
outside (figures in docs/SITE_QA.md). A single Gaussian of (ln snr, ln rho, H), as before,
made the snr itself atypical: the simulator's multi-coil scans at --noise 0.06 (ln snr 1.8) were
all flagged.
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
#: the smoothing direction is linear in its first SMOOTHING_TERMS covariates: 1 and s
SMOOTHING_TERMS = 2


def _dot(coefficients: tuple[tuple[float, float], ...], terms: tuple[float, ...]) -> tuple[float, float]:
    """(ln rho, H) of `coefficients` [terms x 2] for the covariate values `terms`."""
    return (sum(c[0] * t for c, t in zip(coefficients, terms)), sum(c[1] * t for c, t in zip(coefficients, terms)))


@dataclass(frozen=True)
class Typical:
    """How in-distribution slices spend code for their SNR and grid: the expected (ln rho, H) as a
    function of ln snr and the grid size, the direction smooth objects move them in, and the
    Gaussian spread around them."""

    coefficients: tuple[tuple[float, float], ...]
    """(ln rho, H) per covariate (1, s, s^2, g): s = ln snr, g = ln(grid / 256)"""
    smoothing: tuple[tuple[float, float], ...]
    """the shift of (ln rho, H) of the smoothest objects in distribution, per covariate (1, s)"""
    precision: tuple[tuple[float, float], tuple[float, float]]
    """the inverse of the covariance of (ln rho, H) about the expectation"""
    snr_range: tuple[float, float]
    """the ln snr of the calibration (noise levels 0.45 to 0.02); s is held inside it"""
    grid_range: tuple[float, float]
    """the g of the calibration (grids 128 to 512); g is held inside it"""
    smoothest: float = 1.0
    """how far along `smoothing` an object may be (1: as far as the smoothed validation slices on average)"""

    def _norm2(self, d: tuple[float, float]) -> float:
        p = self.precision
        return d[0] * p[0][0] * d[0] + 2 * d[0] * p[0][1] * d[1] + d[1] * p[1][1] * d[1]

    def distance(self, figures: tuple[float, float, float], grid: float) -> float:
        """The Mahalanobis distance of (ln rho, H) of `figures` (ln snr, ln rho, H) from what
        in-distribution slices of that snr on a `grid`-pixel grid (the side, or the geometric mean
        of the sides) give, the object's smoothness taken as the one that fits best (inf when a
        figure is not finite)."""
        if not all(math.isfinite(f) for f in figures) or not grid > 0:
            return math.inf
        s = min(max(figures[0], self.snr_range[0]), self.snr_range[1])
        g = min(max(math.log(grid / 256), self.grid_range[0]), self.grid_range[1])
        mean = _dot(self.coefficients, (1.0, s, s * s, g))
        shift = _dot(self.smoothing, (1.0, s)[:SMOOTHING_TERMS])
        d = (figures[1] - mean[0], figures[2] - mean[1])
        p = self.precision
        along = shift[0] * (p[0][0] * d[0] + p[0][1] * d[1]) + shift[1] * (p[1][0] * d[0] + p[1][1] * d[1])
        scale = self._norm2(shift)
        t = min(max(along / scale, 0.0), self.smoothest) if scale > 0 else 0.0
        return math.sqrt(max(self._norm2((d[0] - t * shift[0], d[1] - t * shift[1])), 0.0))


#: fitted for the shipped default chain on 216 + 99 validation slices (`benchmarks/bench_trust.py --calibrate
#: --images 12`; the cases are listed in its `validation_rows`)
TYPICAL = Typical(coefficients=((-4.05836, 2.18573), (0.923388, 0.173779), (-0.0471846, -0.0107647),
                                (-1.18812, -0.171911)),
                  smoothing=((-0.708925, -0.246068), (0.0198028, -0.000765969)),
                  precision=((7.2487, -12.5708), (-12.5708, 169.43)),
                  snr_range=(1.7583, 7.8254), grid_range=(-0.6931, 0.6931), smoothest=1.25)
#: a slice whose code atypicality is above this is not trusted: sqrt of the 99 % point of
#: chi-square with 2 degrees of freedom (9.21)
ATYPICALITY_LIMIT = 3.03


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
    """a: the Mahalanobis distance of (ln rho, H) from what validation slices of that snr and grid give"""
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
    grid = math.sqrt(fourier.grid_shape[0] * fourier.grid_shape[1])
    atypicality = typical.distance(code_figures(energy, samples, noise_std, rho, entropy), grid)
    residual_image = (fourier.adjoint(residual)[0].abs() / noise_std) if residual_map else None
    return DataConsistency(chi2, rho, trust, entropy, atypicality, residual_image)
