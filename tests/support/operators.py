"""Checks shared by the operator tests: random complex data and the adjointness check."""

from collections.abc import Callable

import torch


def crandn(*shape: int, dtype: torch.dtype = torch.complex128, generator: torch.Generator | None = None
           ) -> torch.Tensor:
    """Complex standard normal data of `shape`."""
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    return torch.complex(torch.randn(shape, generator=generator, dtype=real),
                         torch.randn(shape, generator=generator, dtype=real))


def assert_adjoint(forward: Callable[[torch.Tensor], torch.Tensor], adjoint: Callable[[torch.Tensor], torch.Tensor],
                   x: torch.Tensor, y: torch.Tensor, rtol: float) -> None:
    """<forward(x), y> == <x, adjoint(y)> to a relative tolerance (complex inner products)."""
    lhs = complex(torch.vdot(forward(x).flatten(), y.flatten()))
    rhs = complex(torch.vdot(x.flatten(), adjoint(y).flatten()))
    assert abs(lhs - rhs) <= rtol * abs(lhs), (lhs, rhs)
