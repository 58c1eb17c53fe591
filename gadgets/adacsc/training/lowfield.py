"""The low-field degradation of METHOD.md in torch: y = S F x + n, on the super-resolution grid.

A ground-truth image x lives on the full (reconstruction) grid H x W. The scanner acquires only
the centred k-space block of M1 x M2 samples: A = S F is `adacsc.core.fourier.SampledFourier`
(acquired_shape=(M1, M2), grid_shape=(H, W)), the very operator the solver uses, so simulation and
reconstruction share one convention. With M = H/2 x W/2 the reconstruction is a 2x
super-resolution.

Noise level. Complex white Gaussian noise n with E|n_j|^2 = sigma^2 per k-space sample (real and
imaginary parts each of variance sigma^2/2), with

    sigma = noise_level * rms(S F x),   rms(y) = sqrt(mean_j |y_j|^2) over the acquired block,

i.e. noise_level is the noise-to-signal RMS ratio of the acquired data (1/SNR per sample). Because
the orthonormal FFT preserves energy and almost all of it lies in the block, the noise std per pixel
of the zero-filled image is about noise_level * rms(x) * sqrt(f1 f2 ... ) -- in practice
noise_level x (image RMS over the grid) whatever the block size. Training draws the block fraction
per batch (uniform in `block_fraction` per axis, sizes rounded to even numbers) and the noise level
per image (uniform in `noise_level`); the test sets use a fixed 50% block and the fixed levels
`TEST_NOISE_LEVELS`, with noise seeded per image (seed, index), so any batching gives the same data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from adacsc.core.fourier import SampledFourier

__all__ = [
    "LowFieldConfig",
    "LowFieldBatch",
    "TEST_BLOCK_FRACTION",
    "TEST_NOISE_LEVELS",
    "acquired_shape_for",
    "simulate",
    "random_lowfield",
    "fixed_lowfield",
    "augment",
]

TEST_BLOCK_FRACTION = 0.5
#: The two fixed noise levels of the test sets (noise-to-signal RMS ratio of the acquired k-space).
TEST_NOISE_LEVELS = (0.05, 0.15)


@dataclass(frozen=True)
class LowFieldConfig:
    """Ranges of the random training degradation."""

    block_fraction: tuple[float, float] = (0.25, 0.75)  # acquired size / grid size, per axis
    noise_level: tuple[float, float] = (0.02, 0.2)
    isotropic: bool = False  # one fraction for both axes (else drawn per axis)

    def __post_init__(self) -> None:
        lo, hi = self.block_fraction
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"block_fraction must satisfy 0 < lo <= hi <= 1, got {self.block_fraction}")
        lo, hi = self.noise_level
        if not 0 <= lo <= hi:
            raise ValueError(f"noise_level must satisfy 0 <= lo <= hi, got {self.noise_level}")


@dataclass
class LowFieldBatch:
    """A simulated batch: ground truth, measured k-space and the operator relating them."""

    target: torch.Tensor  # [B, H, W] complex ground truth on the reconstruction grid
    kspace: torch.Tensor  # [B, M1, M2] complex measured data y = S F x + n
    operator: SampledFourier  # A = S F
    noise_level: torch.Tensor  # [B] float32, noise-to-signal RMS ratio
    noise_std: torch.Tensor  # [B] float32, sigma per complex k-space sample

    @property
    def acquired_shape(self) -> tuple[int, int]:
        return self.operator.acquired_shape

    @property
    def grid_shape(self) -> tuple[int, int]:
        return self.operator.grid_shape

    def zero_filled(self) -> torch.Tensor:
        """x0 = A^H y [B, H, W]."""
        return self.operator.adjoint(self.kspace)

    def to(self, device: torch.device | str) -> "LowFieldBatch":
        return LowFieldBatch(self.target.to(device), self.kspace.to(device), self.operator,
                             self.noise_level.to(device), self.noise_std.to(device))


def acquired_shape_for(grid_shape: Sequence[int], fraction: float | Sequence[float],
                       even: bool = True) -> tuple[int, int]:
    """Acquired block size for a fraction (scalar or per axis) of the grid, at least 2 (or 1)."""
    fr = (fraction, fraction) if np.isscalar(fraction) else tuple(fraction)
    out = []
    for n, f in zip(grid_shape, fr):
        if not 0 < f <= 1:
            raise ValueError(f"block fraction must lie in (0, 1], got {f}")
        m = n * f
        m = 2 * int(round(m / 2)) if even else int(round(m))
        out.append(int(min(max(m, 2 if even and n >= 2 else 1), n)))
    return out[0], out[1]


def _check_images(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        raise ValueError(f"images must be a tensor [B, H, W], got {getattr(x, 'shape', type(x))}")
    if not x.is_complex():
        x = x.to(torch.complex64)
    return x


def _levels(noise_level: float | Sequence[float] | torch.Tensor, batch: int) -> torch.Tensor:
    lv = torch.as_tensor(noise_level, dtype=torch.float32).flatten()
    if lv.numel() == 1:
        lv = lv.expand(batch)
    if lv.numel() != batch:
        raise ValueError(f"need one noise level or one per image ({batch}), got {lv.numel()}")
    if bool((lv < 0).any()):
        raise ValueError("noise levels must be >= 0")
    return lv.clone()


def simulate(x: torch.Tensor, acquired_shape: Sequence[int], noise_level: float | Sequence[float] | torch.Tensor,
             generator: torch.Generator | None = None, *, noise: torch.Tensor | None = None) -> LowFieldBatch:
    """y = S F x + n for images x [B, H, W] (complex; real is promoted).

    noise_level: scalar or [B]; `noise` (optional, [B, M1, M2] complex with E|n|^2 = 1) replaces the
    draw from `generator`.
    """
    x = _check_images(x)
    op = SampledFourier(acquired_shape, x.shape[-2:])
    clean = op(x)
    levels = _levels(noise_level, x.shape[0]).to(x.device)
    rms = clean.abs().pow(2).mean(dim=(-2, -1)).sqrt().to(torch.float32)
    sigma = levels * rms
    if noise is None:
        noise = torch.randn(clean.shape, dtype=clean.dtype, generator=generator, device="cpu").to(x.device)
    elif tuple(noise.shape) != tuple(clean.shape):
        raise ValueError(f"noise must have shape {tuple(clean.shape)}, got {tuple(noise.shape)}")
    y = clean + sigma.to(clean.real.dtype)[:, None, None] * noise.to(clean.dtype)
    return LowFieldBatch(x, y, op, levels, sigma)


def random_lowfield(x: torch.Tensor, generator: torch.Generator,
                    config: LowFieldConfig = LowFieldConfig()) -> LowFieldBatch:
    """Training degradation: one random block size for the batch, a random noise level per image."""
    x = _check_images(x)
    lo, hi = config.block_fraction
    u = torch.rand(2, generator=generator, dtype=torch.float64)
    if config.isotropic:
        u[1] = u[0]
    frac = (lo + (hi - lo) * float(u[0]), lo + (hi - lo) * float(u[1]))
    nlo, nhi = config.noise_level
    levels = nlo + (nhi - nlo) * torch.rand(x.shape[0], generator=generator, dtype=torch.float32)
    return simulate(x, acquired_shape_for(x.shape[-2:], frac), levels, generator)


def fixed_lowfield(x: torch.Tensor, noise_level: float, *, block_fraction: float = TEST_BLOCK_FRACTION,
                   seed: int = 0, start_index: int = 0) -> LowFieldBatch:
    """Test degradation: fixed block and level; the noise of image i is seeded by (seed, start_index + i),
    so evaluating a set in chunks (pass start_index) gives exactly the same data as one batch."""
    x = _check_images(x)
    shape = acquired_shape_for(x.shape[-2:], block_fraction)
    noise = []
    for i in range(x.shape[0]):
        state = np.random.SeedSequence([int(seed), int(start_index + i), int(round(noise_level * 1e6))])
        g = torch.Generator().manual_seed(int(state.generate_state(1, np.uint64)[0] >> 1))
        noise.append(torch.randn(shape, dtype=torch.complex64, generator=g))
    n = torch.stack(noise) if noise else torch.zeros((0,) + shape, dtype=torch.complex64)
    return simulate(x, shape, noise_level, noise=n.to(x.dtype if x.is_complex() else torch.complex64))


def augment(x: torch.Tensor, generator: torch.Generator, *, flips: bool = True,
            global_phase: bool = True) -> torch.Tensor:
    """Cheap training augmentation of images [B, H, W]: random up-down / left-right flips (per batch)
    and a random constant phase per image. Shapes are kept; grids stay the full field of view."""
    x = _check_images(x)
    if flips:
        u = torch.rand(2, generator=generator)
        if u[0] < 0.5:
            x = torch.flip(x, dims=(-2,))
        if u[1] < 0.5:
            x = torch.flip(x, dims=(-1,))
    if global_phase:
        theta = 2 * math.pi * torch.rand(x.shape[0], generator=generator, dtype=torch.float64)
        x = x * torch.polar(torch.ones_like(theta), theta).to(x.dtype).to(x.device)[:, None, None]
    return x
