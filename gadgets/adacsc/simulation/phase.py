"""Smooth synthetic image phase (B0 off-resonance and receive-chain phase stand-in).

Real MR images are complex with a slowly varying phase. We model it as a random low-order
polynomial in normalised in-plane coordinates (u, v in [-1, 1) over the field of view) and the
slice position w, plus a random global offset:

    phi(u, v, w) = phi0 + a1 u + a2 v + a3 w + a4 u^2 + a5 v^2 + a6 u v + a7 u w + a8 v w,

rescaled so that the spatially varying part spans at most `max_variation_rad` (default pi/2).
"""

from __future__ import annotations

import numpy as np


def grid_coordinates(matrix: int) -> np.ndarray:
    """Normalised pixel-centre coordinates in [-1, 1): (j - N/2) / (N/2), centre pixel N//2 at 0."""
    return (np.arange(matrix) - matrix // 2) / (matrix / 2.0)


def smooth_phase(
    matrix: int,
    slice_positions: np.ndarray | float,
    rng: np.random.Generator,
    *,
    max_variation_rad: float = np.pi / 2,
) -> np.ndarray:
    """Smooth phase maps [S, N, N] (radians) for slices at normalised positions `slice_positions`.

    The same polynomial is shared by all slices (the phase varies smoothly through the stack).
    """
    w = np.atleast_1d(np.asarray(slice_positions, dtype=np.float64))
    u = grid_coordinates(matrix)[None, None, :]
    v = grid_coordinates(matrix)[None, :, None]
    w3 = w[:, None, None]
    a = rng.uniform(-1.0, 1.0, size=8)
    terms = (
        a[0] * u + a[1] * v + a[2] * w3
        + a[3] * u**2 + a[4] * v**2 + a[5] * u * v + a[6] * u * w3 + a[7] * v * w3
    )
    terms = np.broadcast_to(terms, (w.size, matrix, matrix))
    span = float(terms.max() - terms.min())
    if span > 0:
        terms = terms * (max_variation_rad / span)
    phi0 = rng.uniform(-np.pi, np.pi)
    return (phi0 + terms - terms.mean()).astype(np.float64)


def apply_smooth_phase(
    magnitude: np.ndarray,
    slice_positions: np.ndarray | float,
    rng: np.random.Generator,
    *,
    max_variation_rad: float = np.pi / 2,
) -> np.ndarray:
    """`magnitude` [S, N, N] (real, >= 0) times exp(i phi) with `smooth_phase`; complex64."""
    magnitude = np.asarray(magnitude)
    if magnitude.ndim != 3 or magnitude.shape[1] != magnitude.shape[2]:
        raise ValueError(f"expected [S, N, N] magnitude images, got {magnitude.shape}")
    phi = smooth_phase(magnitude.shape[-1], slice_positions, rng, max_variation_rad=max_variation_rad)
    return (magnitude * np.exp(1j * phi)).astype(np.complex64)


def normalise_max(images: np.ndarray, per_slice: bool = True) -> np.ndarray:
    """Scale so that max |x| = 1 (per slice by default); all-zero slices are left at zero."""
    images = np.asarray(images)
    if per_slice:
        peak = np.abs(images).reshape(images.shape[0], -1).max(axis=1)
        peak = np.where(peak > 0, peak, 1.0).reshape((-1,) + (1,) * (images.ndim - 1))
    else:
        peak = np.abs(images).max() or 1.0
    return images / peak
