"""Analytic fallback object: slices of a 3-D modified Shepp-Logan head phantom (needs no data).

The phantom is a sum of ten ellipsoids (intensities of the "modified" Shepp-Logan of Toft, 3-D
extents after the common phantom3d parameters; the small out-of-plane tilts are left out). It is
evaluated analytically (indicator functions) on a supersampled grid and box-averaged to the
requested matrix, so edges are anti-aliased. Coordinates: u (columns, readout/x) and v (rows,
phase/y) normalised to [-1, 1) over the field of view; the phantom's "up" (+y) is the top row;
w is the normalised slice position (same scale as u, v; the stack is centred at w = 0.1 so a few
small ellipsoids show). A smooth synthetic phase is applied and each slice has max |x| = 1.
"""

from __future__ import annotations

import numpy as np

from adacsc.simulation.phase import apply_smooth_phase, normalise_max

#: Rows: intensity A, semi-axes a, b, c, centre x0, y0, z0, in-plane rotation phi (degrees).
MODIFIED_SHEPP_LOGAN_3D = np.array(
    [
        [1.0, 0.6900, 0.920, 0.810, 0.00, 0.0000, 0.00, 0.0],
        [-0.8, 0.6624, 0.874, 0.780, 0.00, -0.0184, 0.00, 0.0],
        [-0.2, 0.1100, 0.310, 0.220, 0.22, 0.0000, 0.00, -18.0],
        [-0.2, 0.1600, 0.410, 0.280, -0.22, 0.0000, 0.00, 18.0],
        [0.1, 0.2100, 0.250, 0.410, 0.00, 0.3500, -0.15, 0.0],
        [0.1, 0.0460, 0.046, 0.050, 0.00, 0.1000, 0.25, 0.0],
        [0.1, 0.0460, 0.046, 0.050, 0.00, -0.1000, 0.25, 0.0],
        [0.1, 0.0460, 0.023, 0.050, -0.08, -0.6050, 0.00, 0.0],
        [0.1, 0.0230, 0.023, 0.020, 0.00, -0.6060, 0.00, 0.0],
        [0.1, 0.0230, 0.046, 0.020, 0.06, -0.6050, 0.00, 0.0],
    ]
)

#: Normalised slice position of the stack centre.
PHANTOM_STACK_CENTRE = 0.1


def shepp_logan_magnitude(matrix: int, w: float, *, oversample: int = 4) -> np.ndarray:
    """Real, non-negative phantom slice [N, N] at normalised slice position `w` (unnormalised)."""
    if matrix < 2:
        raise ValueError(f"matrix must be >= 2, got {matrix}")
    m = matrix * oversample
    # sub-pixel centres of the fine grid, covering the same [-1, 1) extent as the coarse grid
    coarse_step = 2.0 / matrix
    fine = -1.0 + (np.arange(m) + 0.5) / oversample * coarse_step - 0.5 * coarse_step
    x = fine[None, :]
    y = -fine[:, None]  # row 0 is the top of the image: +y
    img = np.zeros((m, m), dtype=np.float64)
    for A, a, b, c, x0, y0, z0, phi in MODIFIED_SHEPP_LOGAN_3D:
        dz = (w - z0) / c
        if abs(dz) >= 1.0:
            continue
        scale = np.sqrt(1.0 - dz * dz)  # the ellipse cut of the ellipsoid at height w
        t = np.deg2rad(phi)
        xr = (x - x0) * np.cos(t) + (y - y0) * np.sin(t)
        yr = -(x - x0) * np.sin(t) + (y - y0) * np.cos(t)
        img += A * (((xr / (a * scale)) ** 2 + (yr / (b * scale)) ** 2) <= 1.0)
    img = img.reshape(matrix, oversample, matrix, oversample).mean(axis=(1, 3))
    return np.clip(img, 0.0, None)


def phantom_slices(
    matrix: int,
    slice_positions_mm: np.ndarray,
    *,
    fov_mm: float = 240.0,
    rng: np.random.Generator | None = None,
    max_phase_variation_rad: float = np.pi / 2,
) -> np.ndarray:
    """Phantom slices [S, N, N] complex64 at `slice_positions_mm` (offsets from the stack centre).

    Positions are normalised by half the field of view and centred on `PHANTOM_STACK_CENTRE`;
    max |x| = 1 per slice; smooth phase.
    """
    z = np.atleast_1d(np.asarray(slice_positions_mm, dtype=np.float64))
    if z.ndim != 1 or z.size < 1:
        raise ValueError("need at least one slice position")
    rng = np.random.default_rng() if rng is None else rng
    w = PHANTOM_STACK_CENTRE + z / (fov_mm / 2.0)
    mag = np.stack([shepp_logan_magnitude(matrix, float(wi)) for wi in w])
    mag = normalise_max(mag)
    return apply_smooth_phase(mag, w, rng, max_variation_rad=max_phase_variation_rad)
