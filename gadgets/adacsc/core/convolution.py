"""Circular 2-D convolution with a bank of real filters: the synthesis operator D.

D s = sum_k d_k * s_k for complex codes s [B, K, H, W] -> image [B, H, W]; the adjoint D^H x is
the circular correlation of x with every filter -> [B, K, H, W]. Both run through the FFT.

The centre of an (odd-sized) filter sits at the origin of the grid, so a centred delta filter is
the identity (no shift). The filter spectra are computed once per (filters, grid, device, dtype)
and cached on the operator.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from adacsc.core.filter_bank import FilterBank
from adacsc.core.linop import LinearOperator

__all__ = ["filter_spectra", "Synthesis"]

log = logging.getLogger(__name__)


def filter_spectra(filters: torch.Tensor, grid_shape: Sequence[int],
                   dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """Unnormalised 2-D FFT of every filter zero-padded to `grid_shape`, centre at the origin.

    Returns complex [K, H, W] on the filters' device, such that for codes s,
    fft2(D s) = sum_k spectra[k] * fft2(s_k)   (both FFTs with the same normalisation).
    `filters` is the tensor of a FilterBank.
    """
    k, h, w = filters.shape
    height, width = (int(n) for n in grid_shape)
    if h > height or w > width:
        raise ValueError(f"filter size {h}x{w} exceeds the grid {height}x{width}")
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    padded = filters.new_zeros((k, height, width), dtype=real)
    padded[:, :h, :w] = filters.to(real)
    padded = torch.roll(padded, shifts=(-(h // 2), -(w // 2)), dims=(-2, -1))
    return torch.fft.fft2(padded).to(dtype)


class Synthesis(LinearOperator):
    """D: codes [B, K, H, W] complex -> image [B, H, W] complex, D s = sum_k d_k * s_k (circular).

    Real filters act identically on the real and imaginary parts of the codes. The adjoint D^H x
    (channel k: the circular correlation of x with d_k) is what the map networks see.
    """

    def __init__(self, bank: FilterBank) -> None:
        if not isinstance(bank, FilterBank):
            raise TypeError(f"Synthesis takes a FilterBank, got {type(bank).__name__}")
        self.bank = bank
        self._cache: dict[tuple, torch.Tensor] = {}

    @property
    def num_filters(self) -> int:
        return self.bank.num_filters

    @property
    def filter_shape(self) -> tuple[int, int]:
        return self.bank.filter_shape

    def spectra(self, grid_shape: Sequence[int], device: torch.device,
                dtype: torch.dtype = torch.complex64) -> torch.Tensor:
        """Cached `filter_spectra` for this grid on `device` (complex [K, H, W])."""
        key = (tuple(int(n) for n in grid_shape), torch.device(device), dtype)
        spec = self._cache.get(key)
        if spec is None:
            log.debug("filter spectra: K=%d on grid %s (%s, %s)", self.num_filters, key[0], device, dtype)
            spec = filter_spectra(self.bank.tensor.to(device), key[0], dtype)
            self._cache[key] = spec
        return spec

    def _check_codes(self, s: torch.Tensor) -> None:
        if not s.is_complex() or s.ndim != 4 or s.shape[1] != self.num_filters:
            raise ValueError(
                f"codes must be complex [B, K={self.num_filters}, H, W], got {tuple(s.shape)} {s.dtype}")

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        self._check_codes(s)
        spec = self.spectra(s.shape[-2:], s.device, s.dtype)
        return torch.fft.ifft2((torch.fft.fft2(s) * spec).sum(dim=1))

    def adjoint(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_complex() or x.ndim != 3:
            raise ValueError(f"image must be complex [B, H, W], got {tuple(x.shape)} {x.dtype}")
        spec = self.spectra(x.shape[-2:], x.device, x.dtype)
        return torch.fft.ifft2(torch.fft.fft2(x)[:, None] * spec.conj())

    def __repr__(self) -> str:
        k, (h, w) = self.num_filters, self.filter_shape
        return f"Synthesis(K={k}, {h}x{w})"
