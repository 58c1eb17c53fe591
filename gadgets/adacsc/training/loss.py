"""The training loss: the (optionally relative) mean squared error over the complex grid."""

from __future__ import annotations

import torch

__all__ = ["image_loss"]


def image_loss(image: torch.Tensor, target: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over the complex grid: mean |image - target|^2.

    With `reference` (e.g. the zero-filled image), the MSE of each image is divided by the MSE of
    its reference (a constant), then averaged over the batch: every image counts alike, whatever
    its noise level (plain MSE is dominated by the noisiest images, its scale grows with the
    noise variance)."""
    diff = torch.view_as_real(image - target.to(image.dtype))
    per_image = diff.pow(2).sum(dim=-1).flatten(1).mean(dim=1)
    if reference is None:
        return per_image.mean()
    with torch.no_grad():
        ref = torch.view_as_real(reference.to(image.dtype) - target.to(image.dtype))
        ref = ref.pow(2).sum(dim=-1).flatten(1).mean(dim=1).clamp_min(1e-12)
    return (per_image / ref).mean()
