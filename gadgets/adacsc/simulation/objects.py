"""Choosing the simulated object: the real brain volume when available, else the analytic phantom."""

from __future__ import annotations

import logging

import numpy as np

from adacsc.simulation.brain import DEFAULT_BRAIN_VOLUME, BRAIN_VOLUME_ENV, brain_available, brain_slices
from adacsc.simulation.phantom import phantom_slices

log = logging.getLogger(__name__)

OBJECT_KINDS = ("brain", "phantom")


def resolve_object_kind(kind: str | None) -> str:
    """'brain' or 'phantom'. None means brain when the volume (and nibabel) is available, else
    phantom. Asking for 'brain' explicitly without the volume raises FileNotFoundError."""
    if kind is None:
        return "brain" if brain_available() else "phantom"
    kind = kind.lower()
    if kind not in OBJECT_KINDS:
        raise ValueError(f"unknown object {kind!r}; choose one of {', '.join(OBJECT_KINDS)}")
    if kind == "brain" and not brain_available():
        raise FileNotFoundError(
            f"object 'brain' needs a brain volume (set ${BRAIN_VOLUME_ENV} or install mricron-data: "
            f"{DEFAULT_BRAIN_VOLUME}) and nibabel; use --object phantom instead"
        )
    return kind


def object_slices(
    kind: str | None,
    matrix: int,
    slice_positions_mm: np.ndarray,
    *,
    fov_mm: float,
    slice_thickness_mm: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, str]:
    """Object images [S, N, N] complex64 (max |x| = 1 per slice, smooth phase) and the kind used."""
    used = resolve_object_kind(kind)
    if kind is None:
        log.info("object: %s (default: %s)", used,
                 "brain volume found" if used == "brain" else "no brain volume, analytic phantom")
    else:
        log.info("object: %s", used)
    if used == "brain":
        images = brain_slices(
            matrix, slice_positions_mm, fov_mm=fov_mm, slice_thickness_mm=slice_thickness_mm, rng=rng
        )
    else:
        images = phantom_slices(matrix, slice_positions_mm, fov_mm=fov_mm, rng=rng)
    return images, used
