"""Receiver noise correlated across coils, and the covariance of the noise-only readouts.

Conventions
-----------
Covariance of a noise vector n (one complex sample per channel) is C = E[n n^H], i.e.
C[i, j] = E[n_i conj(n_j)]; with data D [channels, samples] the estimate is D D^H / (K - 1).
Complex noise of "std sigma" has E|n|^2 = sigma^2 (sigma^2 / 2 in each of real and imaginary part).
Samples are drawn as n = L z with C = L L^H (Cholesky) and z circular standard normal.

Imaging covariance: C = sigma^2 R, R a random Hermitian positive-definite correlation matrix with
unit diagonal and clearly non-zero off-diagonals (|R_ij| drawn in [0.1, 0.4], random phases).

Noise-readout covariance (derivation)
-------------------------------------
Gadgetron's NoiseAdjustGadget estimates the covariance C_n of the noise readouts, forms the
whitening matrix W0 = inv(chol(C_n)) (so that W0 C_n W0^H = I) and applies to every imaging
readout W = s W0 with the bandwidth scale

    s = sqrt(2 * acq_dwell / noise_dwell * relativeReceiverNoiseBandwidth).

Imaging noise of covariance C becomes W C W^H = s^2 W0 C W0^H, which is the identity exactly when
C = C_n / s^2. So, for NoiseAdjust to map the imaging noise to white unit variance, the noise
readouts must be simulated with

    C_n = s^2 C = C * 2 * acq_dwell * relBW / noise_dwell.

(Physically, a shorter noise dwell time means a wider bandwidth and more noise per sample; the
factor 2 * relBW is Gadgetron's calibration convention, which we honour.) Only the product
matters to NoiseAdjust; a reader who whitens with the stored imaging covariance C directly
(ground_truth/noise_covariance) gets the same result.
"""

from __future__ import annotations

import numpy as np

MIN_CORRELATION = 0.1
MAX_CORRELATION = 0.4
#: Smallest eigenvalue allowed in the correlation matrix (keeps it well conditioned).
MIN_EIGENVALUE = 0.2


def random_correlation(
    n_coils: int,
    rng: np.random.Generator,
    *,
    low: float = MIN_CORRELATION,
    high: float = MAX_CORRELATION,
    min_eigenvalue: float = MIN_EIGENVALUE,
) -> np.ndarray:
    """Hermitian positive-definite [C, C] complex128 with unit diagonal.

    Off-diagonal magnitudes are drawn uniformly in [low, high] with random phases. When that
    matrix is not positive definite enough (possible for many coils), all off-diagonals are
    shrunk by one common factor until the smallest eigenvalue is `min_eigenvalue`.
    """
    if n_coils < 1:
        raise ValueError(f"n_coils must be >= 1, got {n_coils}")
    off = np.zeros((n_coils, n_coils), dtype=np.complex128)
    iu = np.triu_indices(n_coils, k=1)
    mags = rng.uniform(low, high, size=iu[0].size)
    phases = rng.uniform(-np.pi, np.pi, size=iu[0].size)
    off[iu] = mags * np.exp(1j * phases)
    off = off + off.conj().T
    if n_coils > 1:
        lam_min = float(np.linalg.eigvalsh(off).min())
        if 1.0 + lam_min < min_eigenvalue:
            off *= (1.0 - min_eigenvalue) / (-lam_min)
    corr = np.eye(n_coils, dtype=np.complex128) + off
    return 0.5 * (corr + corr.conj().T)


def imaging_covariance(n_coils: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Per-sample covariance of the imaging readouts: sigma^2 * random_correlation (complex128)."""
    if not sigma > 0:
        raise ValueError(f"noise sigma must be > 0, got {sigma!r}")
    return (sigma**2) * random_correlation(n_coils, rng)


def bandwidth_scale_squared(acq_dwell_us: float, noise_dwell_us: float, relative_bandwidth: float) -> float:
    """s^2 = 2 * acq_dwell / noise_dwell * relBW (Gadgetron NoiseAdjust); 1 when a dwell time is 0."""
    if acq_dwell_us == 0 or noise_dwell_us == 0:
        return 1.0
    return 2.0 * acq_dwell_us / noise_dwell_us * relative_bandwidth


def noise_readout_covariance(
    imaging_cov: np.ndarray, acq_dwell_us: float, noise_dwell_us: float, relative_bandwidth: float
) -> np.ndarray:
    """Covariance for the noise-only readouts: C_n = C * 2 * acq_dwell * relBW / noise_dwell."""
    return np.asarray(imaging_cov) * bandwidth_scale_squared(acq_dwell_us, noise_dwell_us, relative_bandwidth)


def correlated_noise(cov: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Complex Gaussian noise [C, *shape] (complex64) with per-sample covariance `cov` [C, C]."""
    cov = np.asarray(cov, dtype=np.complex128)
    n = cov.shape[0]
    chol = np.linalg.cholesky(cov)
    count = int(np.prod(shape)) if shape else 1
    z = (rng.standard_normal((n, count)) + 1j * rng.standard_normal((n, count))) / np.sqrt(2.0)
    return (chol @ z).reshape((n,) + tuple(shape)).astype(np.complex64)


def whitening_matrix(cov: np.ndarray) -> np.ndarray:
    """W with W cov W^H = I (W = inv(L), cov = L L^H); for applying to data [C, ...]: W @ data."""
    return np.linalg.inv(np.linalg.cholesky(np.asarray(cov, dtype=np.complex128)))
