"""The step size of FISTA: L >= ||A D||^2, by power iteration or exactly.

`power_iteration` estimates the largest eigenvalue of a normal operator (per batch element).
Power iteration approaches ||A D||^2 from below, hence the safety factor (default 1.01).

`lipschitz_constant` is what the solver calls. Its default method "exact" uses the closed form
of `SpectralCodeOperator.lipschitz` (A D is diagonal per frequency), which is exact and cheaper;
method "power" runs power iteration on the same operator. Nothing is cached here: the
reconstructor keeps L beside the operator it belongs to (adacsc.core.reconstruct).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from adacsc.core.spectral import SpectralCodeOperator

__all__ = ["power_iteration", "lipschitz_constant"]

log = logging.getLogger(__name__)


def power_iteration(normal: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                    n_iter: int = 200, rtol: float = 1e-6) -> torch.Tensor:
    """Largest eigenvalue of a Hermitian PSD operator `normal`, per leading batch element.

    x: start vector [B, ...] (random); returns a real tensor [B]. Stops early when every
    estimate changed by less than `rtol` (relative).
    """
    if n_iter < 1:
        raise ValueError(f"power_iteration: n_iter must be >= 1, got {n_iter}")
    dims = tuple(range(1, x.ndim))

    def norm(v: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((v.real ** 2 + v.imag ** 2).sum(dim=dims) if v.is_complex() else (v ** 2).sum(dim=dims))

    def bcast(v: torch.Tensor) -> torch.Tensor:
        return v.reshape((-1,) + (1,) * (x.ndim - 1))

    with torch.no_grad():
        x = x / bcast(norm(x))
        estimate = torch.zeros(x.shape[0], device=x.device, dtype=x.real.dtype)
        for it in range(n_iter):
            y = normal(x)
            new = norm(y)  # ||N x|| with ||x|| = 1 -> largest eigenvalue
            x = y / bcast(torch.clamp(new, min=torch.finfo(new.dtype).tiny))
            done = bool((torch.abs(new - estimate) <= rtol * new).all())
            estimate = new
            if done:
                log.debug("power iteration converged after %d iterations", it + 1)
                break
    return estimate


def lipschitz_constant(op: SpectralCodeOperator, method: str = "exact", safety: float | None = None,
                       n_iter: int = 200, seed: int = 0) -> torch.Tensor:
    """L >= ||A D||^2 for the operator, shape [Bm] (1 unless the mask has a batch dim).

    method "exact" (default): closed form, safety 1.0 by default.
    method "power": power iteration from a seeded random start, safety 1.01 by default.
    """
    if method not in ("exact", "power"):
        raise ValueError(f"lipschitz method must be 'exact' or 'power', got {method!r}")
    if safety is None:
        safety = 1.0 if method == "exact" else 1.01
    if safety < 1.0:
        raise ValueError(f"the safety factor must be >= 1, got {safety}")
    if method == "exact":
        value = op.lipschitz()
    else:
        batch = op.G.shape[0]
        gen = torch.Generator().manual_seed(seed)
        real = torch.float64 if op.dtype == torch.complex128 else torch.float32
        shape = (batch, op.num_filters) + op.grid_shape
        x = torch.complex(torch.randn(shape, generator=gen, dtype=real),
                          torch.randn(shape, generator=gen, dtype=real)).to(op.device)
        value = power_iteration(op.normal, x, n_iter=n_iter)
    value = (value * safety).detach()
    log.debug("L = %s (%s, safety %.3g) for K=%d, %s -> %s", value.cpu().tolist(), method, safety,
              op.num_filters, op.acquired_shape, op.grid_shape)
    return value
