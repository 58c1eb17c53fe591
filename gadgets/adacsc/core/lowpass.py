"""The low-pass part x_low: the exact solution of (I + beta grad^H grad) x = x0.

grad is the pair of circular forward differences (x[n+1] - x[n] along each axis), so grad^H grad
is diagonalised by the FFT with eigenvalues 4 sin^2(pi k / N) summed over the two axes, and

    x_low = ifft2( fft2(x0) / (1 + beta * (4 sin^2(pi k1/H) + 4 sin^2(pi k2/W))) ).

Exact (no CG iterations), one FFT pair per image, differentiable in beta and x0.
"""

from __future__ import annotations

import math

import torch

__all__ = ["gradient_eigenvalues", "lowpass", "forward_differences", "gradient_magnitude",
           "forward_differences_adjoint"]


def gradient_eigenvalues(shape: tuple[int, int], device: torch.device | str | None = None,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Eigenvalues of grad^H grad in the uncentred FFT layout, real [H, W]."""
    h, w = (int(n) for n in shape)
    k1 = torch.arange(h, device=device, dtype=torch.float64)
    k2 = torch.arange(w, device=device, dtype=torch.float64)
    e1 = 4 * torch.sin(math.pi * k1 / h) ** 2
    e2 = 4 * torch.sin(math.pi * k2 / w) ** 2
    return (e1[:, None] + e2[None, :]).to(dtype)


def _check_beta(beta: float | torch.Tensor) -> None:
    if isinstance(beta, torch.Tensor):
        if beta.is_complex():
            raise ValueError("beta must be real")
        if not beta.requires_grad and bool((beta <= 0).any()):
            raise ValueError(f"beta must be > 0, got {beta.detach().cpu().tolist()}")
    elif not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")


def lowpass(x0: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
    """x_low = (I + beta grad^H grad)^-1 x0 for complex images [..., H, W].

    beta: a positive float or a real tensor (scalar, or shape [B] for x0 [B, H, W]).
    """
    if not x0.is_complex() or x0.ndim < 2:
        raise ValueError(f"x0 must be a complex image [..., H, W], got {tuple(x0.shape)} {x0.dtype}")
    _check_beta(beta)
    eig = gradient_eigenvalues(x0.shape[-2:], x0.device, x0.real.dtype)
    if isinstance(beta, torch.Tensor) and beta.ndim > 0:
        beta = beta.reshape(beta.shape + (1, 1))
    return torch.fft.ifft2(torch.fft.fft2(x0) / (1 + beta * eig))


def forward_differences(x: torch.Tensor) -> torch.Tensor:
    """grad x: circular forward differences, stacked [2, ..., H, W] (for tests and checks)."""
    return torch.stack([torch.roll(x, -1, dims=-2) - x, torch.roll(x, -1, dims=-1) - x])


def gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|grad x| per pixel [..., H, W]: the isotropic TV integrand (for tests and checks)."""
    g = forward_differences(x)
    return torch.sqrt(g.real.square().sum(0) + g.imag.square().sum(0))


def forward_differences_adjoint(g: torch.Tensor) -> torch.Tensor:
    """grad^H g for g [2, ..., H, W]."""
    return (torch.roll(g[0], 1, dims=-2) - g[0]) + (torch.roll(g[1], 1, dims=-1) - g[1])
