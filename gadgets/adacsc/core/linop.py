"""A small base class for linear operators: forward, adjoint, composition.

Operators are plain Python objects (not nn.Modules): they hold precomputed, non-learned
tensors and act on whatever device their inputs live on. `A @ B` composes, `A.H` is the adjoint
view, `A(x)` is `A.forward(x)`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

__all__ = ["LinearOperator", "ComposedOperator", "AdjointOperator"]


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
