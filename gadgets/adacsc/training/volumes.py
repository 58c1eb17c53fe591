"""Source volumes of the training data and their resampling into 2-D slices (world coordinates).

Every image used for training, validation or testing comes from a T1-weighted brain volume shipped
by Debian's `mricron-data` package (/usr/share/mricron/templates), or from the analytic phantom of
`adacsc.simulation.phantom` (no data file). The held-out test subject, a second human volume used
for testing only, is the MNI ICBM152 2009a T1 template as the PyPI package `nilearn` ships it
(package data only: nilearn is never imported). mricron-data's JHU file (`jhu189.nii.gz`) is a
189-region label atlas, not a T1 image, so it cannot serve. `SOURCES` (and `TEST_ONLY_SOURCES`) list them with their provenance: package,
file, licence as stated in /usr/share/doc/mricron-data/copyright, species, role.

Geometry. Volumes are read with `adacsc.simulation.brain.load_volume` (reoriented to canonical RAS+
voxel order) and addressed in world millimetres through their (canonical) affine; the two Colin27
volumes (ch2better at 0.5 mm, ch2 at 1 mm) are both in MNI space, so one world position names the
same anatomy in both. A slice is a plane perpendicular to a world axis:

  orientation  slicing axis   rows (top -> bottom)        columns (left -> right)
  axial        z (S)          anterior -> posterior       patient right -> left (radiological)
  coronal      y (A)          superior -> inferior        patient right -> left (radiological)
  sagittal     x (R)          superior -> inferior        anterior -> posterior

Pixel (r, c) of an N x N slice sits at in-plane offset ((r - N//2), (c - N//2)) * fov/N from the
plane centre. Resampling is anti-aliased: the volume is Gaussian pre-filtered (FWHM about one output
pixel), then sampled with trilinear interpolation at several depths through the slice thickness,
which are averaged (partial-volume slice profile).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from adacsc.simulation.brain import DEFAULT_BRAIN_VOLUME, brain_volume_path, load_volume

__all__ = [
    "ORIENTATIONS",
    "VolumeSource",
    "SOURCES",
    "TEST_ONLY_SOURCES",
    "source_path",
    "file_sha256",
    "world_volume",
    "brain_box_mm",
    "plane_fraction",
    "resample_slices",
]

log = logging.getLogger(__name__)

#: orientation -> (slicing world axis, world direction of increasing row, of increasing column)
ORIENTATIONS: dict[str, tuple[int, tuple[float, float, float], tuple[float, float, float]]] = {
    "axial": (2, (0.0, -1.0, 0.0), (-1.0, 0.0, 0.0)),
    "coronal": (1, (0.0, 0.0, -1.0), (-1.0, 0.0, 0.0)),
    "sagittal": (0, (0.0, 0.0, -1.0), (0.0, -1.0, 0.0)),
}

TEMPLATES_DIR = DEFAULT_BRAIN_VOLUME.parent
_PACKAGE = "mricron-data (Debian)"
_LICENCE = ("BSD-3-clause (Files: *, Copyright 2006-2010 Chris Rorden, per "
            "/usr/share/doc/mricron-data/copyright)")


@dataclass(frozen=True)
class VolumeSource:
    """One source volume and where it comes from."""

    key: str
    file: str  # file name inside TEMPLATES_DIR
    description: str
    species: str
    role: str  # "in-distribution" or "out-of-distribution"
    package: str = _PACKAGE
    licence: str = _LICENCE


SOURCES: dict[str, VolumeSource] = {
    "colin27_ch2better": VolumeSource(
        "colin27_ch2better", "ch2better.nii.gz",
        "Colin27 single-subject T1 template (average of 27 scans of one adult human), improved "
        "brain-extracted version, 0.5 mm isotropic, MNI space",
        "human", "in-distribution"),
    "colin27_ch2": VolumeSource(
        "colin27_ch2", "ch2.nii.gz",
        "Colin27 single-subject T1 template, whole head with scalp and skull, 1 mm isotropic, MNI "
        "space (same subject and space as ch2better)",
        "human", "in-distribution"),
    "inia19_macaque": VolumeSource(
        "inia19_macaque", "inia19-t1-brain.nii.gz",
        "INIA19 rhesus macaque T1 brain template (brain-extracted), 0.5 mm isotropic",
        "rhesus macaque", "out-of-distribution"),
}


#: volumes used for testing only, never for training, tuning or dictionary learning (not shipped by
#: mricron-data, so kept apart from SOURCES)
TEST_ONLY_SOURCES: dict[str, VolumeSource] = {
    "mni152_2009a": VolumeSource(
        "mni152_2009a", "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
        "MNI ICBM152 2009a nonlinear symmetric T1 template (average of 152 adults, none of them "
        "Colin27), brain-extracted, 1 mm isotropic, MNI space",
        "human", "held-out test subject", package="nilearn (PyPI), package data nilearn/datasets/data",
        licence=("'unknown' per the description nilearn ships with it "
                 "(nilearn/datasets/description/icbm152_2009.rst; nilearn itself is BSD-3-clause); "
                 "Fonov et al. 2009, 2011, McConnell Brain Imaging Centre, MNI. Used for testing only, "
                 "read at run time; no image data is copied into the repository")),
}


def source_path(key: str) -> Path:
    """Path of a source volume; the primary human volume follows `brain_volume_path()`."""
    if key not in SOURCES and key not in TEST_ONLY_SOURCES:
        raise KeyError(f"unknown source volume {key!r}; known: {', '.join([*SOURCES, *TEST_ONLY_SOURCES])}")
    if key == "colin27_ch2better":
        path = brain_volume_path()
        if path is not None:
            return Path(path)
    if key == "mni152_2009a":
        return _nilearn_data(TEST_ONLY_SOURCES[key].file)
    path = TEMPLATES_DIR / SOURCES[key].file
    if not path.is_file():
        raise FileNotFoundError(
            f"training source {key!r} needs {path} (Debian package mricron-data: apt-get install mricron-data)")
    return path


def _nilearn_data(name: str) -> Path:
    """A data file of the installed nilearn package, found without importing nilearn (whose
    dependencies the evaluation does not need)."""
    import importlib.util

    spec = importlib.util.find_spec("nilearn")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "datasets" / "data" / name
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"the held-out test subject needs {name} from the PyPI package nilearn "
        "(pip install --no-deps nilearn, or the `evaluate` extra)")


@lru_cache(maxsize=8)
def file_sha256(path: str) -> str:
    """SHA-256 of a file (hex), for provenance records."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=4)
def _canonical_affine(path: str) -> np.ndarray:
    import nibabel as nib

    affine = np.asarray(nib.as_closest_canonical(nib.load(path)).affine, dtype=np.float64)
    affine.setflags(write=False)
    return affine


def world_volume(key: str) -> tuple[np.ndarray, np.ndarray]:
    """(volume float32 [X, Y, Z] in canonical RAS+ order, read-only; its 4x4 voxel->world affine)."""
    path = str(source_path(key))
    return load_volume(path), _canonical_affine(path)


@lru_cache(maxsize=8)
def _threshold(key: str, rel_threshold: float) -> float:
    volume, _ = world_volume(key)
    positive = volume[volume > 0]
    if positive.size == 0:
        raise ValueError(f"the volume {key!r} is empty")
    return rel_threshold * float(np.percentile(positive, 99.0))


@lru_cache(maxsize=24)
def _plane_counts(key: str, axis: int, rel_threshold: float) -> np.ndarray:
    """Number of object voxels in every voxel plane perpendicular to `axis`."""
    volume, _ = world_volume(key)
    other = tuple(a for a in range(3) if a != axis)
    counts = (volume > _threshold(key, rel_threshold)).sum(axis=other).astype(np.float64)
    counts.setflags(write=False)
    return counts


@lru_cache(maxsize=8)
def brain_box_mm(key: str, rel_threshold: float = 0.1) -> tuple[tuple[float, float], ...]:
    """World extent (mm) of the object (voxels above rel_threshold x the 99th percentile of the
    positive voxels) along x, y, z: ((lo, hi), (lo, hi), (lo, hi)), voxel centres."""
    _, affine = world_volume(key)
    box = []
    for axis in range(3):
        idx = np.flatnonzero(_plane_counts(key, axis, rel_threshold))
        if idx.size == 0:
            raise ValueError(f"the volume {key!r} is empty")
        ends = sorted(float(affine[axis, 3] + affine[axis, axis] * i) for i in (idx[0], idx[-1]))
        box.append((ends[0], ends[1]))
    return tuple(box)


def plane_fraction(key: str, orientation: str, positions_mm: np.ndarray, fov_mm: float,
                   rel_threshold: float = 0.1) -> np.ndarray:
    """Object area in the voxel plane nearest each position, as a fraction of the fov_mm^2 square.

    Independent of the output matrix size, so the set of kept slices does not change with it.
    """
    volume, affine = world_volume(key)
    axis = ORIENTATIONS[orientation][0]
    counts = _plane_counts(key, axis, rel_threshold)
    voxel_area = float(np.prod([abs(affine[a, a]) for a in range(3) if a != axis]))
    pos = np.atleast_1d(np.asarray(positions_mm, dtype=np.float64))
    idx = np.rint((pos - affine[axis, 3]) / affine[axis, axis]).astype(int)
    inside = (idx >= 0) & (idx < volume.shape[axis])
    out = np.zeros(pos.shape)
    out[inside] = counts[idx[inside]] * voxel_area / fov_mm ** 2
    return out


@lru_cache(maxsize=3)
def _prefiltered(key: str, pixel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The volume anti-aliased for output pixels of pixel_mm, and its voxel->world affine.

    Where the pixels are much coarser than the voxels, the volume is first block-averaged by an
    integer factor (cheap), then Gaussian filtered (FWHM about one output pixel overall)."""
    volume, affine = world_volume(key)
    voxel = np.abs(np.diag(affine)[:3])
    factors = [max(1, int(pixel_mm / (2.0 * v))) for v in voxel]
    if max(factors) > 1:
        f0, f1, f2 = factors
        n0, n1, n2 = (dim // f for dim, f in zip(volume.shape, factors))
        volume = volume[: n0 * f0, : n1 * f1, : n2 * f2].reshape(n0, f0, n1, f1, n2, f2).mean(
            axis=(1, 3, 5), dtype=np.float32)
        scale = np.diag(list(factors) + [1]).astype(np.float64)
        shift = np.eye(4)
        shift[:3, 3] = [(f - 1) / 2.0 for f in factors]
        affine = affine @ shift @ scale
    sigma = [max(0.0, 0.42 * pixel_mm / (v * f)) for v, f in zip(voxel, factors)]
    if max(sigma) > 0.5:
        log.debug("pre-filtering %s with sigma %s voxels", key, sigma)
        volume = ndimage.gaussian_filter(volume.astype(np.float32), sigma=sigma, mode="constant", cval=0.0)
    volume.setflags(write=False)
    return volume, affine


def resample_slices(key: str, orientation: str, positions_mm: np.ndarray, size: int, *,
                    fov_mm: float, centre_mm: tuple[float, float, float],
                    thickness_mm: float) -> np.ndarray:
    """Magnitude slices float32 [S, size, size] (unnormalised, >= 0) of source `key`.

    positions_mm: world coordinates along the slicing axis of `orientation`; centre_mm: the world
    point put at pixel (size//2, size//2) (its slicing-axis coordinate is ignored).
    """
    if orientation not in ORIENTATIONS:
        raise ValueError(f"unknown orientation {orientation!r}; choose from {', '.join(ORIENTATIONS)}")
    if size < 4:
        raise ValueError(f"slice size must be >= 4, got {size}")
    axis, row_dir, col_dir = ORIENTATIONS[orientation]
    pixel_mm = fov_mm / size
    volume, affine = _prefiltered(key, round(pixel_mm, 6))
    pos = np.atleast_1d(np.asarray(positions_mm, dtype=np.float64))
    step = abs(float(affine[axis, axis]))
    n_sub = max(1, int(math.ceil(thickness_mm / step)))
    depth = (np.arange(n_sub) + 0.5) / n_sub * thickness_mm - thickness_mm / 2.0

    offs = (np.arange(size) - size // 2) * pixel_mm
    centre = np.asarray(centre_mm, dtype=np.float64)
    # world coordinates [3, S, n_sub, size, size]
    world = np.empty((3, pos.size, n_sub, size, size))
    for d in range(3):
        base = centre[d] + row_dir[d] * offs[:, None] + col_dir[d] * offs[None, :]
        if d == axis:
            base = base + (pos[:, None] + depth[None, :])[:, :, None, None] - centre[d]
            world[d] = base
        else:
            world[d] = np.broadcast_to(base, (pos.size, n_sub, size, size))
    inv = np.linalg.inv(affine)
    vox = np.tensordot(inv[:3, :3], world, axes=(1, 0)) + inv[:3, 3][:, None, None, None, None]
    values = ndimage.map_coordinates(volume, vox.reshape(3, -1), order=1, mode="constant", cval=0.0)
    values = values.reshape(pos.size, n_sub, size, size).mean(axis=1)
    return np.clip(values, 0.0, None).astype(np.float32)
