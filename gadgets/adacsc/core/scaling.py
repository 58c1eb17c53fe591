"""Intensity normalisation of the data handed to the solver and the map network.

Input data are in SNR units (noise std 1 per k-space sample after prewhitening and coil
combination, see docs/DESIGN.md), so image intensities vary with field strength, coil, voxel
size and protocol. The solver and the network see normalised data instead:

    scale_b = 99th percentile of |x0_b| over the pixels of slice b,   x0 = A^H y (zero-filled),
    y_n = y / scale_b,   x0_n = x0 / scale_b,

so the bright tissue of every slice has magnitude about 1 (the percentile ignores a few
outliers, such as a bright vessel or a spike). Lambda (scalar or maps) is in these normalised
units; the reconstructor multiplies its image and code outputs by scale_b again. In normalised
units the k-space noise std is 1 / scale_b. A slice with x0 = 0 everywhere gets scale 1.

`per_slice=False` uses one scale for the whole batch (a volume), which keeps the balance of
data term and Lambda identical across its slices. The scale is a constant (no gradient).
"""

from __future__ import annotations

import math

import torch

__all__ = ["SCALE_PERCENTILE", "robust_scale", "broadcast_scale", "noise_levels"]

SCALE_PERCENTILE = 99.0


def robust_scale(x0: torch.Tensor, percentile: float = SCALE_PERCENTILE, per_slice: bool = True) -> torch.Tensor:
    """Percentile of |x0| per slice ([B, H, W] -> real [B]) or over the batch (same value B times)."""
    if x0.ndim != 3:
        raise ValueError(f"x0 must be [B, H, W], got shape {tuple(x0.shape)}")
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must lie in (0, 100], got {percentile}")
    with torch.no_grad():
        mag = x0.abs().flatten(1) if per_slice else x0.abs().reshape(1, -1)
        n = mag.shape[1]
        k = min(n, max(1, math.ceil(percentile / 100.0 * n)))
        value = torch.kthvalue(mag, k, dim=1).values
        value = torch.where(value > 0, value, torch.ones_like(value))
        if not per_slice:
            value = value.expand(x0.shape[0]).clone()
    return value


def broadcast_scale(scale: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshape a per-slice scale [B] to broadcast against a [B, ...] tensor of `ndim` dims."""
    return scale.reshape((-1,) + (1,) * (ndim - 1))


def noise_levels(noise_std: "torch.Tensor | float", batch: int, device: torch.device | str) -> torch.Tensor:
    """A noise std given as one value or one per slice, as a float32 tensor [B] on `device` (a
    constant); every value must be finite and > 0."""
    sigma = torch.as_tensor(noise_std, dtype=torch.float32).detach().flatten().to(device)
    if sigma.numel() == 1:
        sigma = sigma.expand(batch).clone()
    if sigma.numel() != batch:
        raise ValueError(f"noise_std needs one value or one per slice ({batch}), got {sigma.numel()}")
    if not bool(torch.isfinite(sigma).all()) or bool((sigma <= 0).any()):
        raise ValueError(f"noise_std must be finite and > 0, got {sigma.tolist()}")
    return sigma
