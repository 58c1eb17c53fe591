"""FISTA as it is specified, on any linear operator's forward and adjoint: the reference the fused
solver (adacsc.core.fista) is checked against.

    min_s  1/2 ||K s - y||^2 + sum Lambda (|Re s| + |Im s|)

    s_0 = z_1 = 0 (or a warm start), t_1 = 1, step 1/L with L >= ||K||^2:
    s_k     = prox_{Lambda/L}( z_k - K^H (K z_k - y) / L )       soft-threshold Re and Im
    t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2
    z_{k+1} = s_k + (t_k - 1) / t_{k+1} (s_k - s_{k-1})

(Beck and Teboulle, SIAM J. Imaging Sci. 2009). Each iteration applies K once and K^H once; the
fused solver does the same work in the Fourier domain of the codes, with fewer passes.
"""

from __future__ import annotations

import math

import torch

from adacsc.core.linop import LinearOperator

__all__ = ["reference_fista", "shrink"]


def shrink(v: torch.Tensor, tau: "float | torch.Tensor") -> torch.Tensor:
    """Soft-threshold the real and imaginary parts of complex v by tau."""
    def real(part: torch.Tensor) -> torch.Tensor:
        return torch.sign(part) * torch.clamp(part.abs() - tau, min=0)

    return torch.complex(real(v.real), real(v.imag))


def reference_fista(op: LinearOperator, y: torch.Tensor, lam: "float | torch.Tensor", lipschitz: torch.Tensor,
                    n_iter: int, s0: torch.Tensor) -> torch.Tensor:
    """Run FISTA from the codes s0 (e.g. zeros of the code shape) and return the last s_k.

    lam: a float or a real tensor broadcastable to s; lipschitz: L as [1] or one value per slice.
    """
    per_slice = (1.0 / lipschitz).reshape((-1,) + (1,) * (s0.ndim - 1))
    s_prev = s = z = s0
    t = 1.0
    for _ in range(n_iter):
        s_prev, s = s, shrink(z - per_slice * op.adjoint(op.forward(z) - y), lam * per_slice)
        t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        z = s + ((t - 1.0) / t_next) * (s - s_prev)
        t = t_next
    return s
