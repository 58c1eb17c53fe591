"""Total-variation low-pass part: the edge-preserving alternative to the Tikhonov low-pass.

    x_tv = argmin_x 1/2 ||A x - y||^2 + mu ||grad x||_{2,1},

A = S F (the sampled Fourier operator of the reconstruction), grad the circular forward
differences, ||.||_{2,1} the isotropic TV of a complex image (per pixel the l2 norm of the two
complex differences). Solved by ADMM on z = grad x with the scaled dual u:

    x <- F^H [ (F A^H y + rho F grad^H (z - u)) / (diag(A^H A) + rho * eig(grad^H grad)) ]
    z <- shrink(grad x + u, mu / rho)            (per pixel, isotropic)
    u <- u + grad x - z

The x-update is exact: A^H A and grad^H grad are both diagonal in the (centred) Fourier domain,
so an iteration costs one FFT pair. rho = 4 mu per slice; 50 iterations reach the PSNR of 200
(checked on 256 x 256 brain slices at 2x super-resolution). mu is per slice, so a batch of slices
at different noise levels is one call.

Spatially adaptive weight. An optional positive map w [B, H, W] weights the TV per pixel,
mu sum_p w_p |grad x|_p: the shrinkage threshold becomes w_p mu / rho (rho stays 4 mu per slice,
so the x-update is still exact). When w carries a gradient (a learned map in training) and autograd
is on, the iterations are recorded so the loss reaches the map; otherwise no gradient flows.
"""

from __future__ import annotations

import torch

from adacsc.core.fourier import SampledFourier, fft2c, ifft2c
from adacsc.core.lowpass import forward_differences, forward_differences_adjoint, gradient_eigenvalues

__all__ = ["TV_ITERATIONS", "tv_lowpass"]

TV_ITERATIONS = 50
_RHO_PER_MU = 4.0


def tv_lowpass(y: torch.Tensor, fourier: SampledFourier, mu: torch.Tensor,
               iterations: int = TV_ITERATIONS, weight_map: torch.Tensor | None = None) -> torch.Tensor:
    """x_tv [B, H, W] for acquired k-space y [B, M1, M2] and TV weights mu [B] (> 0, units of y),
    optionally times a positive per-pixel weight map [B, H, W] on the grid."""
    if iterations < 1:
        raise ValueError(f"TV iterations must be >= 1, got {iterations}")
    mu = mu.detach().to(device=y.device, dtype=y.real.dtype).reshape(-1, 1, 1)
    if mu.shape[0] != y.shape[0] or not bool((mu > 0).all()):
        raise ValueError(f"need one TV weight > 0 per slice ({y.shape[0]}), got {mu.flatten().tolist()}")
    weights = None
    if weight_map is not None:
        want = (y.shape[0], *fourier.grid_shape)
        if tuple(weight_map.shape) != want or weight_map.is_complex():
            raise ValueError(f"the TV weight map must be real with shape {want}, got "
                             f"{tuple(weight_map.shape)} {weight_map.dtype}")
        weights = weight_map.to(device=y.device, dtype=y.real.dtype)
        if not bool((weights.detach() > 0).all()):
            raise ValueError("the TV weight map must be > 0 everywhere")
    record = weights is not None and weights.requires_grad and torch.is_grad_enabled()
    with torch.set_grad_enabled(record):
        rho = _RHO_PER_MU * mu
        eig = torch.fft.fftshift(gradient_eigenvalues(fourier.grid_shape, y.device, y.real.dtype), dim=(-2, -1))
        denominator = fourier.normal_diagonal(y.device, y.real.dtype) + rho * eig
        # k = 0 unacquired (regular undersampling without the centre line): nothing determines the
        # mean, whose numerator is 0 too; leave it 0 instead of 0 / 0
        denominator = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
        x = fourier.adjoint(y)
        data = fft2c(x)
        z = forward_differences(x)
        u = torch.zeros_like(z)
        threshold = mu / rho if weights is None else weights * (mu / rho)
        for _ in range(iterations):
            x = ifft2c((data + rho * fft2c(forward_differences_adjoint(z - u))) / denominator)
            v = forward_differences(x) + u
            # clamped before the root: a finite gradient where the differences vanish (z is 0 there)
            norm = torch.sqrt((v.real.square().sum(0) + v.imag.square().sum(0)).clamp_min(1e-24))
            z = v * torch.clamp(1 - threshold / norm.clamp_min(1e-12), min=0)
            u = v - z
    return x
