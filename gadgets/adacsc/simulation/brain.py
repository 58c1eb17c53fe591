"""Realistic object: axial slices of a real brain volume (Colin27 T1, Debian's mricron-data).

`brain_volume_path()` finds the volume ($ADACSC_BRAIN_VOLUME, else
/usr/share/mricron/templates/ch2better.nii.gz; None when absent), `load_volume(path)` reads it
with nibabel, reoriented to the closest canonical RAS+ voxel order (axis 2 runs inferior ->
superior, so `volume[:, :, k]` is an axial plane). `axial_slices` cuts slabs of a given thickness
(partial-volume averaged along z), resamples them in plane to an N x N grid over the field of
view (anti-aliased: Gaussian pre-filter, then linear interpolation) and returns them in the image
convention of the project: rows = phase/y (anterior at the top), columns = readout/x (the
patient's right on the left, radiological view). `brain_slices` adds the per-slice normalisation
(max |x| = 1) and a smooth synthetic phase; the training-data code can reuse all three.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from adacsc.simulation.phase import apply_smooth_phase, normalise_max

BRAIN_VOLUME_ENV = "ADACSC_BRAIN_VOLUME"
DEFAULT_BRAIN_VOLUME = Path("/usr/share/mricron/templates/ch2better.nii.gz")

#: Height of the default stack centre within the brain's inferior-superior extent (0 = bottom).
#: 0.6 lands at the level of the lateral ventricles in Colin27.
DEFAULT_STACK_HEIGHT = 0.6


def brain_volume_path() -> Path | None:
    """The brain volume to use: $ADACSC_BRAIN_VOLUME if set (and existing), else the Colin27 T1
    template of mricron-data; None when no file is there."""
    env = os.environ.get(BRAIN_VOLUME_ENV)
    candidates = [Path(env)] if env else []
    candidates.append(DEFAULT_BRAIN_VOLUME)
    for path in candidates:
        if path.is_file():
            return path
    return None


def brain_available() -> bool:
    """True when a brain volume file exists and nibabel can be imported to read it."""
    if brain_volume_path() is None:
        return False
    try:
        import nibabel  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=2)
def _load_canonical(path: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    try:
        import nibabel as nib
    except ImportError as exc:  # pragma: no cover - nibabel is a declared dependency
        raise ImportError("reading the brain volume needs nibabel (pip install nibabel)") from exc
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"brain volume not found: {p}")
    img = nib.as_closest_canonical(nib.load(str(p)))
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{p}: expected a 3-D volume, got shape {data.shape}")
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    data.setflags(write=False)
    return data, zooms


def load_volume(path: str | os.PathLike) -> np.ndarray:
    """The volume at `path` as float32 [X(R), Y(A), Z(S)] (canonical RAS+ voxel order), read-only."""
    return _load_canonical(str(path))[0]


def voxel_size_mm(path: str | os.PathLike) -> tuple[float, float, float]:
    """Voxel size (mm) of the volume at `path`, in the order of `load_volume`'s axes."""
    return _load_canonical(str(path))[1]


def _bounding_box(volume: np.ndarray, rel_threshold: float = 0.05) -> list[tuple[int, int]]:
    mask = volume > rel_threshold * float(volume.max())
    if not mask.any():
        raise ValueError("the brain volume is empty")
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        box.append((int(idx[0]), int(idx[-1])))
    return box


def axial_slices(
    volume: np.ndarray,
    voxel_mm: tuple[float, float, float],
    matrix: int,
    slice_positions_mm: np.ndarray,
    *,
    fov_mm: float = 240.0,
    slice_thickness_mm: float = 5.0,
    stack_centre_mm: float | None = None,
) -> np.ndarray:
    """Magnitude slices [S, N, N] float32 (unnormalised) of `volume` (canonical RAS+ order).

    `slice_positions_mm` are offsets (mm, + superior) from the stack centre; the stack centre is
    `stack_centre_mm` above the lowest brain voxel, by default `DEFAULT_STACK_HEIGHT` of the brain's
    height. In plane the brain's bounding-box centre is put at the image centre (pixel N // 2).
    Each slice averages the planes within `slice_thickness_mm`; positions outside the volume
    give zero slices.
    """
    z = np.atleast_1d(np.asarray(slice_positions_mm, dtype=np.float64))
    vx, vy, vz = voxel_mm
    box = _bounding_box(volume)
    ic = 0.5 * (box[0][0] + box[0][1])
    jc = 0.5 * (box[1][0] + box[1][1])
    k_lo, k_hi = box[2]
    if stack_centre_mm is None:
        kc = k_lo + DEFAULT_STACK_HEIGHT * (k_hi - k_lo)
    else:
        kc = k_lo + stack_centre_mm / vz

    pixel_mm = fov_mm / matrix
    grid = (np.arange(matrix) - matrix // 2) * pixel_mm
    # rows: y (posterior positive) -> volume axis 1 (anterior positive); columns: x (patient left
    # positive) -> volume axis 0 (right positive)
    rows_j = jc - grid[:, None] / vy + 0.0 * grid[None, :]
    cols_i = ic - grid[None, :] / vx + 0.0 * grid[:, None]
    sigma = (0.42 * pixel_mm / vx, 0.42 * pixel_mm / vy)
    half = max(slice_thickness_mm / 2.0, 0.5 * vz)

    out = np.zeros((z.size, matrix, matrix), dtype=np.float32)
    for s, zs in enumerate(z):
        k_centre = kc + zs / vz
        k0 = int(np.ceil(k_centre - half / vz - 1e-9))
        k1 = int(np.floor(k_centre + half / vz + 1e-9))
        k0, k1 = max(k0, 0), min(k1, volume.shape[2] - 1)
        if k1 < k0:
            continue
        slab = volume[:, :, k0 : k1 + 1].mean(axis=2, dtype=np.float64)
        if sigma[0] > 0.5 or sigma[1] > 0.5:
            slab = ndimage.gaussian_filter(slab, sigma=(max(sigma[0], 0), max(sigma[1], 0)))
        out[s] = ndimage.map_coordinates(slab, [cols_i, rows_j], order=1, mode="constant", cval=0.0)
    return np.clip(out, 0.0, None)


def brain_slices(
    matrix: int,
    slice_positions_mm: np.ndarray,
    *,
    fov_mm: float = 240.0,
    slice_thickness_mm: float = 5.0,
    stack_centre_mm: float | None = None,
    path: str | os.PathLike | None = None,
    rng: np.random.Generator | None = None,
    max_phase_variation_rad: float = np.pi / 2,
) -> np.ndarray:
    """Brain slices [S, N, N] complex64 with max |x| = 1 per slice and a smooth phase.

    `path` defaults to `brain_volume_path()`; FileNotFoundError when there is none.
    """
    if path is None:
        path = brain_volume_path()
        if path is None:
            raise FileNotFoundError(
                f"no brain volume: set ${BRAIN_VOLUME_ENV} or install mricron-data "
                f"({DEFAULT_BRAIN_VOLUME})"
            )
    rng = np.random.default_rng() if rng is None else rng
    volume = load_volume(path)
    mag = axial_slices(
        volume,
        voxel_size_mm(path),
        matrix,
        slice_positions_mm,
        fov_mm=fov_mm,
        slice_thickness_mm=slice_thickness_mm,
        stack_centre_mm=stack_centre_mm,
    )
    mag = normalise_max(mag)
    w = np.atleast_1d(np.asarray(slice_positions_mm, dtype=np.float64)) / (fov_mm / 2.0)
    return apply_smooth_phase(mag, w, rng, max_variation_rad=max_phase_variation_rad)
