"""The simulator's ground truth, stored with h5py beside the ISMRMRD data (docs/DESIGN.md).

Layout in the scan file (group = the ISMRMRD group, "dataset"):

- `/<group>/ground_truth/image`            [S, Y, X] complex64, the object, max |x| = 1 per slice
- `/<group>/ground_truth/coil_maps`        [S, C, Y, X] complex64, max root-sum-of-squares 1
- `/<group>/ground_truth/noise_covariance` [C, C] complex128, per-sample covariance of the
  imaging readout noise, C[i, j] = E[n_i conj(n_j)]

plus attributes on the `ground_truth` group (object kind, noise sigma, seed, dwell times,
relative noise bandwidth, field strength, ...), read into `GroundTruth.attrs`.

The ideal coil-combined magnitude in SNR units (noise std 1 after prewhitening, combination with
normalised maps, orthonormal FFT) is |x| * sqrt(s^H C^-1 s) per pixel: `ideal_combined_magnitude`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

GROUP = "ground_truth"


@dataclass
class GroundTruth:
    image: np.ndarray  # [S, Y, X] complex64
    coil_maps: np.ndarray  # [S, C, Y, X] complex64
    noise_covariance: np.ndarray  # [C, C] complex128
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def n_slices(self) -> int:
        return self.image.shape[0]

    @property
    def n_coils(self) -> int:
        return self.coil_maps.shape[1]


def write_ground_truth(
    path: str | os.PathLike,
    gt: GroundTruth,
    *,
    group: str = "dataset",
) -> None:
    """Add the ground truth to an existing ISMRMRD file (replacing an earlier one)."""
    image = np.asarray(gt.image, dtype=np.complex64)
    maps = np.asarray(gt.coil_maps, dtype=np.complex64)
    cov = np.asarray(gt.noise_covariance, dtype=np.complex128)
    if image.ndim != 3 or maps.ndim != 4 or maps.shape[0] != image.shape[0] or maps.shape[2:] != image.shape[1:]:
        raise ValueError(f"inconsistent ground truth shapes: image {image.shape}, coil_maps {maps.shape}")
    if cov.shape != (maps.shape[1], maps.shape[1]):
        raise ValueError(f"noise covariance {cov.shape} does not match {maps.shape[1]} coils")
    with h5py.File(path, "a") as f:
        parent = f.require_group(group)
        if GROUP in parent:
            del parent[GROUP]
        g = parent.create_group(GROUP)
        g.create_dataset("image", data=image, compression="gzip", shuffle=True,
                         track_times=False)
        g.create_dataset("coil_maps", data=maps, compression="gzip", shuffle=True,
                         track_times=False)
        g.create_dataset("noise_covariance", data=cov, track_times=False)
        for key, value in gt.attrs.items():
            g.attrs[key] = value


def read_ground_truth(path: str | os.PathLike, *, group: str = "dataset") -> GroundTruth:
    """Read the simulator's ground truth; FileNotFoundError / KeyError with a clear message."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with h5py.File(path, "r") as f:
        if f"{group}/{GROUP}" not in f:
            raise KeyError(f"{path} has no /{group}/{GROUP} (not a simulated scan?)")
        g = f[f"{group}/{GROUP}"]
        missing = [k for k in ("image", "coil_maps", "noise_covariance") if k not in g]
        if missing:
            raise KeyError(f"{path}: /{group}/{GROUP} lacks {', '.join(missing)}")
        attrs = {}
        for key, value in g.attrs.items():
            if isinstance(value, bytes):
                value = value.decode("utf-8")
            elif isinstance(value, np.generic):
                value = value.item()
            attrs[key] = value
        return GroundTruth(
            image=g["image"][()].astype(np.complex64),
            coil_maps=g["coil_maps"][()].astype(np.complex64),
            noise_covariance=g["noise_covariance"][()].astype(np.complex128),
            attrs=attrs,
        )


def snr_gain(coil_maps: np.ndarray, noise_covariance: np.ndarray) -> np.ndarray:
    """sqrt(s^H C^-1 s) per pixel for maps [..., C, Y, X]: the SNR of an optimal combination per
    unit object magnitude."""
    cinv = np.linalg.inv(np.asarray(noise_covariance, dtype=np.complex128))
    s = np.asarray(coil_maps, dtype=np.complex128)
    q = np.einsum("...cyx,cd,...dyx->...yx", s.conj(), cinv, s, optimize=True).real
    return np.sqrt(np.clip(q, 0.0, None))


def ideal_combined_magnitude(gt: GroundTruth) -> np.ndarray:
    """|x| * sqrt(s^H C^-1 s) per pixel, [S, Y, X] float64: the expected magnitude of the
    coil-combined image in SNR units (noise std 1 per pixel)."""
    return np.abs(gt.image).astype(np.float64) * snr_gain(gt.coil_maps, gt.noise_covariance)
