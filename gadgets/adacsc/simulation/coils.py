"""Smooth, physically shaped receive coil sensitivities (Biot-Savart circular loops).

Geometry (mm, patient axes: x = readout / columns, y = phase / rows, z = slice direction, the
isocentre at pixel (N//2, N//2) of slice position 0):

- C >= 2: C circular loops on a ring around the head, equally spaced in angle (coil 0 anterior,
  then clockwise in the image), each loop flat, tangent to a cylinder of radius
  `ring_radius_mm` (default: just outside the field of view, 0.5 * fov + 10 mm, so the wires stay
  outside the image or at its border), centred at z = 0, loop radius half the arc between neighbours (40-80 mm).
- C = 1: a quadrature volume coil, modelled as the birdcage-like combination
  sum_k exp(i theta_k) B_k of 8 ring loops: a nearly homogeneous, smooth map.

The field of each loop is integrated numerically with Biot-Savart (64 segments, with a 15 mm
softening length standing in for the conductor width and the former's distance); the receive
sensitivity is the transverse component B_x - i B_y (B0 along z), times a random constant phase per
receiver channel. Maps are normalised so that the maximum over all slices and pixels of the
root-sum-of-squares sqrt(sum_c |s_c|^2) is 1. Output [S, C, N, N] complex64.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

N_SEGMENTS = 64
#: Largest grid on which the Biot-Savart integral is evaluated exactly (see coil_sensitivities).
EXACT_GRID = 96


def coil_names(n_coils: int) -> list[str]:
    """Receiver channel labels, as written to the header's coilLabel entries."""
    if n_coils == 1:
        return ["LF_HEAD_QUAD"]
    return [f"LF_HEAD_{c + 1:02d}" for c in range(n_coils)]


def loop_field(
    points: np.ndarray,
    centre: np.ndarray,
    normal: np.ndarray,
    radius: float,
    *,
    n_segments: int = N_SEGMENTS,
    softening_mm: float = 15.0,
) -> np.ndarray:
    """Magnetic field (arbitrary units, unit current) of a circular loop at `points` [..., 3] (mm).

    Biot-Savart, dB ~ dl x r / |r|^3, with a softening length against the wire singularity.
    """
    normal = np.asarray(normal, dtype=np.float64)
    normal = normal / np.linalg.norm(normal)
    helper = np.array([0.0, 0.0, 1.0]) if abs(normal[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(normal, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(normal, e1)
    t = np.linspace(0.0, 2.0 * np.pi, n_segments, endpoint=False) + np.pi / n_segments
    dt = 2.0 * np.pi / n_segments
    px, py, pz = (np.asarray(points[..., i], dtype=np.float64) for i in range(3))
    bx, by, bz = np.zeros_like(px), np.zeros_like(px), np.zeros_like(px)
    for tk in t:
        wx, wy, wz = centre + radius * (np.cos(tk) * e1 + np.sin(tk) * e2)
        lx, ly, lz = radius * dt * (-np.sin(tk) * e1 + np.cos(tk) * e2)
        rx, ry, rz = px - wx, py - wy, pz - wz
        r2 = rx * rx + ry * ry + rz * rz + softening_mm**2
        inv = r2 ** -1.5
        bx += (ly * rz - lz * ry) * inv
        by += (lz * rx - lx * rz) * inv
        bz += (lx * ry - ly * rx) * inv
    return np.stack([bx, by, bz], axis=-1)


def _pixel_centres_mm(matrix: int, fov_mm: float) -> np.ndarray:
    return (np.arange(matrix) - matrix // 2) * (fov_mm / matrix)


def _grid_points(coords_mm: np.ndarray, slice_positions_mm: np.ndarray) -> np.ndarray:
    z = np.asarray(slice_positions_mm, dtype=np.float64)
    zz, yy, xx = np.meshgrid(z, coords_mm, coords_mm, indexing="ij")
    return np.stack([xx, yy, zz], axis=-1)  # [S, Y, X, 3]


def _ring_loops(n: int, ring_radius: float, loop_radius: float, phase0: float = 0.0):
    for c in range(n):
        theta = phase0 + 2.0 * np.pi * c / n
        # coil 0 anterior (-y, top of the image), then clockwise in the displayed image
        direction = np.array([np.sin(theta), -np.cos(theta), 0.0])
        yield theta, ring_radius * direction, direction, loop_radius


def _raw_maps(coords_mm, n_coils, z, ring):
    """Unnormalised maps [S, C, M, M] at in-plane coordinates `coords_mm` (B_x - i B_y per loop)."""
    points = _grid_points(coords_mm, z)
    m = len(coords_mm)
    maps = np.zeros((z.size, n_coils, m, m), dtype=np.complex128)
    if n_coils == 1:
        n_ring = 8
        loop_r = float(np.clip(0.5 * 2.0 * np.pi * ring / n_ring, 40.0, 80.0))
        for theta, centre, normal, radius in _ring_loops(n_ring, ring, loop_r):
            b = loop_field(points, centre, normal, radius)
            maps[:, 0] += np.exp(1j * theta) * (b[..., 0] - 1j * b[..., 1])
    else:
        loop_r = float(np.clip(0.5 * 2.0 * np.pi * ring / n_coils, 40.0, 80.0))
        for c, (theta, centre, normal, radius) in enumerate(_ring_loops(n_coils, ring, loop_r)):
            b = loop_field(points, centre, normal, radius)
            maps[:, c] = b[..., 0] - 1j * b[..., 1]
    return maps


def _upsample(maps: np.ndarray, coarse_mm: np.ndarray, fine_mm: np.ndarray) -> np.ndarray:
    """Cubic interpolation of smooth maps [S, C, M, M] sampled at the regular `coarse_mm`
    (which covers `fine_mm`) to [S, C, N, N] at `fine_mm`."""
    step = coarse_mm[1] - coarse_mm[0]
    idx1d = (fine_mm - coarse_mm[0]) / step
    yy, xx = np.meshgrid(idx1d, idx1d, indexing="ij")
    n = len(fine_mm)
    out = np.empty(maps.shape[:2] + (n, n), dtype=np.complex128)
    for idx in np.ndindex(maps.shape[:2]):
        re = ndimage.map_coordinates(maps[idx].real, [yy, xx], order=3, mode="nearest")
        im = ndimage.map_coordinates(maps[idx].imag, [yy, xx], order=3, mode="nearest")
        out[idx] = re + 1j * im
    return out


def coil_sensitivities(
    matrix: int,
    n_coils: int,
    slice_positions_mm: np.ndarray,
    *,
    fov_mm: float = 240.0,
    rng: np.random.Generator | None = None,
    ring_radius_mm: float | None = None,
) -> np.ndarray:
    """Coil maps [S, C, N, N] complex64 for slices at `slice_positions_mm`, max RSS = 1.

    The field is evaluated exactly on grids up to `EXACT_GRID` pixels; larger matrices are
    interpolated (cubic) from a grid of that size (the maps are smooth: the difference to the
    exact integral is ~1e-6 over the head and < 3e-3 at the field-of-view border next to a coil).
    The returned maps are what the simulator uses and stores, so they are exact ground truth.
    """
    if n_coils < 1:
        raise ValueError(f"n_coils must be >= 1, got {n_coils}")
    rng = np.random.default_rng() if rng is None else rng
    z = np.atleast_1d(np.asarray(slice_positions_mm, dtype=np.float64))
    ring = 0.5 * fov_mm + 10.0 if ring_radius_mm is None else float(ring_radius_mm)

    fine = _pixel_centres_mm(matrix, fov_mm)
    if matrix <= EXACT_GRID:
        maps = _raw_maps(fine, n_coils, z, ring)
    else:
        # a coarse grid two pixels wider on each side than the field of view: no extrapolation
        step = fov_mm / EXACT_GRID
        coarse = (np.arange(-2, EXACT_GRID + 2) - EXACT_GRID // 2) * step
        maps = _upsample(_raw_maps(coarse, n_coils, z, ring), coarse, fine)

    maps *= np.exp(1j * rng.uniform(-np.pi, np.pi, size=n_coils))[None, :, None, None]
    rss = np.sqrt(np.sum(np.abs(maps) ** 2, axis=1))
    maps /= rss.max()
    return maps.astype(np.complex64)
