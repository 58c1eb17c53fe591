"""A bank of real 2-D filters as the operators, the reconstructor and the networks take it.

`FilterBank` is validated once, when it is made (real floating-point values, shape [K, h, w] with
K >= 1 and odd sizes, so that every filter has a centre); everything downstream takes it as given
instead of checking an array on every call. A `Dictionary` (adacsc.core.dictionary) is the
provenance-carrying form that files load into; `FilterBank(dictionary.filters)` is its filters.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["FilterBank"]


class FilterBank:
    """K real, odd-sized 2-D filters as one tensor [K, h, w] (`tensor`), validated when made."""

    __slots__ = ("tensor",)

    def __init__(self, filters: torch.Tensor | np.ndarray) -> None:
        if isinstance(filters, FilterBank):
            raise TypeError("already a FilterBank: pass it on as it is")
        if not isinstance(filters, (torch.Tensor, np.ndarray)):
            raise TypeError(f"filters must be a tensor or an array [K, h, w], got {type(filters).__name__}")
        t = torch.as_tensor(filters)
        if t.is_complex() or not t.is_floating_point():
            raise ValueError(f"filters must be a real floating-point array [K, h, w], got dtype {t.dtype}")
        if t.ndim != 3:
            raise ValueError(f"filters must have shape [K, h, w], got {tuple(t.shape)}")
        k, h, w = t.shape
        if k < 1 or h % 2 == 0 or w % 2 == 0:
            raise ValueError(
                f"filters must have K >= 1 and odd sizes (odd so that each filter has a centre), got {tuple(t.shape)}")
        self.tensor = t

    @classmethod
    def _valid(cls, tensor: torch.Tensor) -> "FilterBank":
        """A bank of a tensor derived from a valid one (same shape, real): no second check."""
        bank = object.__new__(cls)
        bank.tensor = tensor
        return bank

    @property
    def num_filters(self) -> int:
        return int(self.tensor.shape[0])

    @property
    def filter_shape(self) -> tuple[int, int]:
        return int(self.tensor.shape[1]), int(self.tensor.shape[2])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "FilterBank":
        """The same filters on `device` in the real floating-point `dtype`, detached (the operators
        hold them as constants)."""
        if dtype is not None and (dtype.is_complex or not dtype.is_floating_point):
            raise ValueError(f"a filter bank is real: dtype {dtype} is not a real floating-point type")
        return FilterBank._valid(self.tensor.detach().to(device=device, dtype=dtype))

    def __repr__(self) -> str:
        k, (h, w) = self.num_filters, self.filter_shape
        return f"FilterBank(K={k}, {h}x{w}, {self.tensor.dtype}, {self.tensor.device})"
