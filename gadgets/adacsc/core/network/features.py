"""What the map networks see: the per-image input scale and the filter responses of x0.

Input scale. Both networks divide x0 by a per-image statistic that does not depend on the filters
(`NetworkConfig.input_normalization`): by default "percentile", the 99th percentile of |x0| over the
slice, the statistic adacsc.core.scaling.robust_scale uses to normalise the solver's data. The
reconstructor already hands over x0_n with that percentile = 1, so there the normalisation is a
no-op and the network sees exactly the solver's units; called on raw data it makes the logits u
invariant to the scale of x0. (If the reconstructor normalises a whole volume with one scale,
per_slice_scale=False, use input_normalization="none" so that input and Lambda share units.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from adacsc.core.convolution import Synthesis
from adacsc.core.scaling import SCALE_PERCENTILE, robust_scale


def check_image(x0: torch.Tensor) -> torch.Tensor:
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f"x0 must be a torch.Tensor, got {type(x0).__name__}")
    if x0.ndim != 3:
        raise ValueError(f"x0 must have shape [B, H, W], got {tuple(x0.shape)}")
    return x0.to(torch.complex64)


def image_scale(x0: torch.Tensor, mode: str = "percentile") -> torch.Tensor:
    """Per-image scale [B] of x0 [B, H, W], a constant (no gradient): the 99th percentile of |x0|
    ("percentile", adacsc.core.scaling.robust_scale; 1 for an all-zero slice), the RMS of |x0|
    ("rms") or ones ("none")."""
    if mode == "none":
        return torch.ones(x0.shape[0], dtype=torch.float32, device=x0.device)
    if mode == "percentile":
        return robust_scale(x0.detach(), SCALE_PERCENTILE, per_slice=True).to(torch.float32)
    if mode != "rms":
        raise ValueError(f"unknown input normalisation {mode!r}")
    power = (x0.real.detach().float() ** 2 + x0.imag.detach().float() ** 2).mean(dim=(-2, -1))
    return torch.where(power > 0, power.sqrt(), torch.ones_like(power))


def filter_responses(x0: torch.Tensor, filters: Synthesis) -> torch.Tensor:
    """r[b, k] = d_k (circular correlation) x0[b], the filter centre at the origin: D^H x0, from the
    synthesis operator D.

    r[b, k, y, x] = sum_{i, j} d_k[c_y + i, c_x + j] * x0[b, y + i, x + j] (indices modulo H, W),
    i.e. channel k of D^T x0 for D s = sum_k d_k * s_k (circular convolution). x0 [B, H, W]
    complex; returns [B, K, H, W] complex64.
    """
    return filters.adjoint(check_image(x0))


def _correlation_transfer(filters: Synthesis, height: int, width: int, device: torch.device) -> torch.Tensor:
    """[K, H, W] complex: the DFT transfer functions of correlation with each filter (centre at
    the origin): the conjugate spectra D keeps for the grid. Correlation with a real filter =
    multiplication by its conjugate spectrum."""
    return filters.spectra((height, width), device).conj()


def pooled_filter_responses(x0: torch.Tensor, filters: Synthesis, factor: int) -> torch.Tensor:
    """filter_responses(x0, filters) average-pooled by `factor`: [B, K, ceil(H/f), ceil(W/f)].

    Pooling windows start at pixel 0 (as F.avg_pool2d); where H or W is not a multiple of the
    factor the responses are first padded circularly. When both are multiples the pooling is done
    in the Fourier domain (box transfer function, spectrum folded onto the coarse grid, one small
    inverse FFT), which avoids the full-size inverse FFT.
    """
    if factor == 1:
        return filter_responses(x0, filters)
    x0 = check_image(x0)
    batch, height, width = x0.shape
    if height % factor or width % factor:
        full = filter_responses(x0, filters)
        k = full.shape[1]
        parts = torch.view_as_real(full).reshape(batch * k, height, width, 2).permute(0, 3, 1, 2)
        pooled = F.avg_pool2d(pad_to_multiple(parts, factor), factor)
        pooled = pooled.permute(0, 2, 3, 1).contiguous()
        return torch.view_as_complex(pooled).reshape(batch, k, *pooled.shape[1:3])

    def box(n: int) -> torch.Tensor:
        # transfer function of y[i] = (1/f) sum_{a<f} x[i + a]
        freqs = torch.arange(n, device=x0.device, dtype=torch.float64)
        offsets = torch.arange(factor, device=x0.device, dtype=torch.float64)
        phase = 2 * math.pi * freqs[:, None] * offsets[None, :] / n
        return torch.polar(torch.ones_like(phase), phase).mean(dim=1).to(torch.complex64)

    transfer = _correlation_transfer(filters, height, width, x0.device)
    transfer = transfer * (box(height)[:, None] * box(width)[None, :])
    spectra = torch.fft.fft2(x0)[:, None] * transfer[None]  # [B, K, H, W]
    low_h, low_w = height // factor, width // factor
    # fold the spectrum onto the coarse grid: Z[i] = sum_j S[i + j * H/f] (per axis); slice
    # additions are much faster than a strided reduction
    rows = spectra[..., :low_h, :]
    for j in range(1, factor):
        rows = rows + spectra[..., j * low_h : (j + 1) * low_h, :]
    folded = rows[..., :low_w]
    for j in range(1, factor):
        folded = folded + rows[..., j * low_w : (j + 1) * low_w]
    return torch.fft.ifft2(folded) / (factor * factor)


def pad_to_multiple(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Circularly pad the last two axes up to a multiple of `factor` (the images are periodic)."""
    height, width = x.shape[-2:]
    pad_h = (-height) % factor
    pad_w = (-width) % factor
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="circular")


def compress_snr(z: torch.Tensor) -> torch.Tensor:
    """z * asinh(|z|) / |z|: a complex SNR map compressed logarithmically above 1, phase kept."""
    magnitude = z.abs()
    return z * (torch.asinh(magnitude) / magnitude.clamp_min(1e-12))
