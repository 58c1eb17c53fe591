"""A small base class for linear operators: forward, adjoint, composition, norm.

Operators are plain Python objects (not nn.Modules): they hold precomputed, non-learned
tensors and act on whatever device their inputs live on. `A @ B` composes, `A.H` is the adjoint
view, `A(x)` is `A.forward(x)`.

Norm. `squared_norm` is ||A||^2, the largest eigenvalue of A^H A (for FISTA the step-size constant
L of the data term ||A s - y||^2 / 2); `operator_norm` is ||A||. Any operator has them by power
iteration on A^H A, which approaches the value from below; an operator that knows a closed form
overrides `squared_norm` (adacsc.core.spectral: A D is diagonal per frequency) and is then exact
and needs no start vector.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch

__all__ = ["LinearOperator", "ComposedOperator", "AdjointOperator", "power_iteration"]

log = logging.getLogger(__name__)


class LinearOperator(ABC):
    """A linear map with an explicit adjoint (with respect to the real part of <x, y>)."""

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the operator."""

    @abstractmethod
    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply the adjoint operator."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def __matmul__(self, other: "LinearOperator") -> "ComposedOperator":
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return ComposedOperator(self, other)

    @property
    def H(self) -> "LinearOperator":  # noqa: N802 (mathematical notation)
        """The adjoint as an operator of its own."""
        return AdjointOperator(self)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """A^H A x (used by power iteration)."""
        return self.adjoint(self.forward(x))

    def squared_norm(self, start: torch.Tensor | None = None, *, n_iter: int = 200,
                     rtol: float = 1e-6) -> torch.Tensor:
        """||A||^2 per leading batch element of `start` (a random vector of the domain's shape):
        power iteration on A^H A, a lower estimate that stops when it changes by less than `rtol`.
        Operators with a closed form override this; they ignore `start`."""
        if start is None:
            raise ValueError(f"{type(self).__name__} has no closed-form norm: pass a start vector for power "
                             "iteration")
        return power_iteration(self.normal, start, n_iter=n_iter, rtol=rtol)

    def operator_norm(self, start: torch.Tensor | None = None, *, n_iter: int = 200,
                      rtol: float = 1e-6) -> torch.Tensor:
        """||A||, the largest singular value, per batch element (see `squared_norm`)."""
        return torch.sqrt(self.squared_norm(start, n_iter=n_iter, rtol=rtol))


class ComposedOperator(LinearOperator):
    """outer @ inner: x -> outer(inner(x)); adjoint inner^H(outer^H(y))."""

    def __init__(self, outer: LinearOperator, inner: LinearOperator) -> None:
        self.outer = outer
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer.forward(self.inner.forward(x))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.inner.adjoint(self.outer.adjoint(y))

    def __repr__(self) -> str:
        return f"{self.outer!r} @ {self.inner!r}"


class AdjointOperator(LinearOperator):
    """The adjoint of an operator: forward and adjoint swapped."""

    def __init__(self, op: LinearOperator) -> None:
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op.adjoint(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.op.forward(y)

    @property
    def H(self) -> LinearOperator:  # noqa: N802
        return self.op

    def __repr__(self) -> str:
        return f"({self.op!r}).H"


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
