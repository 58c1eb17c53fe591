"""Centred orthonormal FFTs in torch and the sampled Fourier operator A = S F.

Convention (same as `adacsc.mr.fft`): F = fftshift . fft2(norm="ortho") . ifftshift over the last
two axes. k-space index N//2 is the DC sample of an N-point axis.

`SampledFourier(acquired_shape, grid_shape)` keeps the central `acquired_shape` block of the
centred spectrum of a `grid_shape` image (super-resolution: grid = factor x acquired, factor 1
allowed), optionally multiplied by a binary mask inside the block (undersampled lines). The
adjoint zero-fills.

Helpers `block_frequencies` and `centring_phase` describe the same block in the *uncentred*
FFT layout; the solver (`adacsc.core.spectral`) uses them to work with plain `torch.fft.fft2`
without any shifts: for X = fft2(x, norm="ortho"),

    (F x)[block position i] = phase[k_i] * X[k_i],   k_i = (i - M//2) mod N   (per axis),
    phase[k] = exp(2 pi i k (N//2) / N).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from adacsc.core.linop import LinearOperator

__all__ = [
    "fft2c",
    "ifft2c",
    "SampledFourier",
    "check_shape2",
    "block_frequencies",
    "block_pieces",
    "centring_phase",
    "prepare_mask",
]

_DIMS = (-2, -1)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D FFT over the last two axes (image -> k-space)."""
    x = torch.fft.ifftshift(x, dim=_DIMS)
    return torch.fft.fftshift(torch.fft.fft2(x, norm="ortho"), dim=_DIMS)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D inverse FFT over the last two axes (k-space -> image)."""
    k = torch.fft.ifftshift(k, dim=_DIMS)
    return torch.fft.fftshift(torch.fft.ifft2(k, norm="ortho"), dim=_DIMS)


def check_shape2(shape: Sequence[int], what: str) -> tuple[int, int]:
    """Validate a 2-D shape of positive ints; return it as a tuple."""
    try:
        out = tuple(int(n) for n in shape)
    except TypeError as exc:
        raise ValueError(f"{what} must be a pair of positive ints, got {shape!r}") from exc
    if len(out) != 2 or min(out) < 1 or any(int(n) != n for n in shape):
        raise ValueError(f"{what} must be a pair of positive ints, got {shape!r}")
    return out  # type: ignore[return-value]


def block_frequencies(acquired: int, grid: int) -> torch.Tensor:
    """Uncentred FFT indices of the centred block of length `acquired`, in block order."""
    if not 1 <= acquired <= grid:
        raise ValueError(f"acquired size {acquired} must lie in [1, grid size {grid}]")
    i = torch.arange(acquired)
    return torch.remainder(i - acquired // 2, grid)


def block_pieces(acquired: int, grid: int) -> list[tuple[slice, slice]]:
    """The centred block as contiguous pieces: (slice in uncentred FFT axis, slice in block).

    Block positions i >= M//2 are frequencies 0.. (the start of the FFT axis); positions
    i < M//2 are the negative frequencies at the end of the FFT axis.
    """
    half = acquired // 2
    pieces = [
        (slice(grid - half, grid), slice(0, half)),
        (slice(0, acquired - half), slice(half, acquired)),
    ]
    return [(full, blk) for full, blk in pieces if full.stop > full.start]


def centring_phase(grid: int, dtype: torch.dtype = torch.complex64,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """phase[k] = exp(2 pi i k (N//2)/N): the effect of the image-domain ifftshift on fft()."""
    k = torch.arange(grid, dtype=torch.float64)
    angle = 2.0 * math.pi * k * (grid // 2) / grid
    return torch.polar(torch.ones_like(angle), angle).to(device=device, dtype=dtype)


def prepare_mask(mask: torch.Tensor | np.ndarray | None, acquired_shape: tuple[int, int]
                 ) -> torch.Tensor | None:
    """Validate a binary sampling mask inside the acquired block; return it as float32 or None.

    The mask must broadcast against [..., M1, M2] (e.g. [M1, 1] for phase-encode lines,
    [M1, M2], or [B, M1, M2]) and contain only 0 and 1.
    """
    if mask is None:
        return None
    m = torch.as_tensor(mask)
    if m.is_complex():
        raise ValueError("sampling mask must be real (0/1), got a complex tensor")
    if m.ndim < 2:
        raise ValueError(f"sampling mask must have at least 2 dims [..., M1, M2], got shape {tuple(m.shape)}")
    for got, want in zip(m.shape[-2:], acquired_shape):
        if got not in (1, want):
            raise ValueError(
                f"sampling mask shape {tuple(m.shape)} does not broadcast to the acquired block {acquired_shape}")
    m = m.to(torch.float32)
    if not bool(((m == 0) | (m == 1)).all()):
        raise ValueError("sampling mask must be binary (values 0 and 1 only)")
    return m


class SampledFourier(LinearOperator):
    """A = S F: centred orthonormal FFT on `grid_shape`, keep the central `acquired_shape` block.

    forward: [..., H, W] complex image -> [..., M1, M2] k-space (times the mask, if any).
    adjoint: [..., M1, M2] -> zero-filled [..., H, W] image.
    """

    def __init__(self, acquired_shape: Sequence[int], grid_shape: Sequence[int],
                 mask: torch.Tensor | np.ndarray | None = None) -> None:
        self.acquired_shape = check_shape2(acquired_shape, "acquired_shape")
        self.grid_shape = check_shape2(grid_shape, "grid_shape")
        for m, n, axis in zip(self.acquired_shape, self.grid_shape, ("E1/y", "RO/x")):
            if m > n:
                raise ValueError(
                    f"acquired size {m} exceeds grid size {n} along {axis}: the grid must be at "
                    "least as large as the acquired matrix")
        self.mask = prepare_mask(mask, self.acquired_shape)
        self._slices = tuple(slice(n // 2 - m // 2, n // 2 - m // 2 + m)
                             for m, n in zip(self.acquired_shape, self.grid_shape))

    @property
    def factor(self) -> tuple[float, float]:
        """Grid size over acquired size per axis (2 for 2x super-resolution)."""
        return tuple(n / m for m, n in zip(self.acquired_shape, self.grid_shape))  # type: ignore[return-value]

    def _mask_like(self, t: torch.Tensor) -> torch.Tensor | None:
        if self.mask is None:
            return None
        return self.mask.to(device=t.device, dtype=t.real.dtype)

    def _check(self, t: torch.Tensor, shape: tuple[int, int], what: str) -> None:
        if not t.is_complex():
            raise ValueError(f"{what} must be complex, got dtype {t.dtype}")
        if t.ndim < 2 or tuple(t.shape[-2:]) != shape:
            raise ValueError(f"{what} must have trailing shape {shape}, got {tuple(t.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x, self.grid_shape, "image")
        k = fft2c(x)[..., self._slices[0], self._slices[1]]
        m = self._mask_like(k)
        return k if m is None else k * m

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check(y, self.acquired_shape, "k-space")
        m = self._mask_like(y)
        if m is not None:
            y = y * m
        full = y.new_zeros(y.shape[:-2] + self.grid_shape)
        full[..., self._slices[0], self._slices[1]] = y
        return ifft2c(full)

    def normal_diagonal(self, device: torch.device | str | None = None,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A^H A in the centred k-space of the grid: real [..., H, W], the mask inside the block
        and 0 outside (A^H A = F^H diag(.) F)."""
        inside = torch.ones(self.acquired_shape, dtype=dtype, device=device)
        if self.mask is not None:
            inside = inside * self.mask.to(device=device, dtype=dtype)
        full = inside.new_zeros(inside.shape[:-2] + self.grid_shape)
        full[..., self._slices[0], self._slices[1]] = inside
        return full

    def squared_norm(self, start: torch.Tensor | None = None, *, n_iter: int = 200,
                     rtol: float = 1e-6) -> torch.Tensor:
        """Exact ||A||^2: A^H A = F^H diag(mask) F with F unitary, so 1 when any sample is kept
        and 0 otherwise, shape [Bm] (Bm = 1 without a batched mask); `start`, `n_iter` and `rtol`
        are not used."""
        kept = self.normal_diagonal().flatten(-2).amax(dim=-1)
        return kept.reshape(-1)

    def __repr__(self) -> str:
        masked = ", masked" if self.mask is not None else ""
        return f"SampledFourier(acquired={self.acquired_shape}, grid={self.grid_shape}{masked})"
