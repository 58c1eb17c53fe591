"""CSC reconstruction of a batch of slices (METHOD.md steps 1-5).

    y  (SNR units) -> scale_b = robust_scale(A^H y)         (adacsc.core.scaling)
    y_n = y / scale_b
    1. x0 = A^H y_n                                          zero-filled, on the grid
    2. x_low = (I + beta grad^H grad)^-1 x0                  exact, Fourier domain ("tikhonov")
       or x_low = argmin 1/2||A x - y_n||^2 + mu TV(x),     mu = tv_weight * sigma_n ("tv",
       adacsc.core.tv: edge-preserving, follows the noise level)
    3. y'  = y_n - A x_low
    4. s*  = FISTA(min ||A D s - y'||^2/2 + ||Lambda (.) s||_1), s_0 = 0, step 1/L, L = ||A D||^2
    5. x*  = x_low + D s*
    outputs multiplied by scale_b again (SNR units).

Lambda is in normalised units and is either a float (scalar mode), a tensor broadcastable to
[B, K, H, W], a `NoiseMultiple(c)` (scalar mode that follows the noise: Lambda = c * sigma_n), or a
callable `map_fn(x0_n, filters) -> [B, K, H, W]` (NET_Theta: x0_n is the *normalised* zero-filled
image, complex [B, H, W]; filters real [K, h, w] on the same device). A callable whose attribute
`uses_noise` is true (a noise-aware NET_Theta) is called as map_fn(x0_n, filters, sigma_n); one
whose `uses_lowpass` is true also gets the low-pass part, map_fn(x0_n, filters, sigma_n, x_low=x_low_n).
A callable whose `sets_lowpass_weight` is true also sets the TV weight per pixel: the TV low-pass
uses mu = tv_weight * sigma_n * map_fn.lowpass_weights(x0_n, sigma_n) (the "tv" low-pass only).

Noise. `noise_std` is the k-space noise std per slice in the units of y (1 in SNR units after
prewhitening; an estimate otherwise); in normalised units it is sigma_n = noise_std / scale_b.
It is needed by noise-aware maps and by NoiseMultiple, and ignored otherwise.

For inference call under `torch.inference_mode()` (or use `infer`): otherwise autograd records
all iterations, since beta is a learnable parameter.
"""

from __future__ import annotations

import logging
import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
from torch import nn

from adacsc.core.convolution import as_filter_tensor
from adacsc.core.fista import FISTA_ITERATIONS, fista
from adacsc.core.fourier import SampledFourier, check_shape2
from adacsc.core.lowpass import lowpass as tikhonov_lowpass
from adacsc.core.power import lipschitz_constant
from adacsc.core.scaling import SCALE_PERCENTILE, broadcast_scale, noise_levels, robust_scale
from adacsc.core.spectral import SpectralCodeOperator
from adacsc.core.tv import tv_lowpass

__all__ = ["CSCReconstructor", "CSCResult", "MapFn", "LambdaSpec", "NoiseMultiple", "DEFAULT_BETA",
           "DEFAULT_TV_WEIGHT", "DEFAULT_NOISE_LAMBDA", "LOWPASS_KINDS", "TrainedSettings"]

log = logging.getLogger(__name__)

MapFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class NoiseMultiple:
    """A scalar lambda that follows the noise: Lambda = value * sigma_n (per slice)."""

    value: float

    def __post_init__(self) -> None:
        if not (isinstance(self.value, (int, float)) and math.isfinite(self.value) and self.value >= 0):
            raise ValueError(f"a noise-relative lambda must be a finite number >= 0, got {self.value!r}")


LambdaSpec = Union[float, torch.Tensor, NoiseMultiple, MapFn]

DEFAULT_BETA = 1.0
LOWPASS_KINDS = ("tikhonov", "tv")
#: TV weight of the "tv" low-pass in units of the noise std (mu = tv_weight * sigma_n)
DEFAULT_TV_WEIGHT = 0.7
#: the default scalar-mode lambda in units of the noise std (Lambda = DEFAULT_NOISE_LAMBDA * sigma_n)
DEFAULT_NOISE_LAMBDA = 2.0
_OP_CACHE_SIZE = 8


@dataclass
class CSCResult:
    """Outputs of one batched reconstruction (images complex [B, H, W] on the grid).

    image:  x* = x_low + D s*, SNR units
    x0:     A^H y, zero-filled, SNR units
    x_low:  the low-pass part, SNR units
    codes:  s* [B, K, H, W], SNR units (image - x_low == D codes)
    lam:    Lambda used by the solver, normalised units (float or tensor broadcastable to codes)
    lowpass_weights: [B, H, W] the per-pixel multiplier of the TV weight the network set (None
            when the TV weight is constant)
    scale:  [B] the normalisation divisor (normalised = SNR units / scale)
    noise:  [B] sigma_n, the k-space noise std in normalised units (None when not given)
    lipschitz: the step-size constant L used (normalised units; independent of the data)
    """

    image: torch.Tensor
    x0: torch.Tensor
    x_low: torch.Tensor
    codes: torch.Tensor
    lam: "float | torch.Tensor"
    scale: torch.Tensor
    lipschitz: torch.Tensor
    noise: torch.Tensor | None = None
    lowpass_weights: torch.Tensor | None = None


class CSCReconstructor(nn.Module):
    """Batched CSC reconstruction with a fixed (or per-call) dictionary and a learnable beta.

    filters: a Dictionary, or a real array/tensor [K, h, w] (odd sizes, unit norm).
    beta: initial low-pass weight (> 0), stored as log_beta (nn.Parameter) so it stays positive.
    n_iter: FISTA iterations. percentile / per_slice_scale: see adacsc.core.scaling.
    chunk_size: filters per block in FISTA (None: automatic, see fista.default_chunk_size).
    lipschitz_method: "exact" (closed form) or "power" (power iteration, 1.01 safety).
    lowpass: "tikhonov" (the published low-pass, weight beta) or "tv" (TV weight tv_weight times
        the noise level; needs noise_std at every call).
    """

    def __init__(self, filters: "object", beta: float = DEFAULT_BETA, n_iter: int = FISTA_ITERATIONS,
                 percentile: float = SCALE_PERCENTILE, per_slice_scale: bool = True,
                 chunk_size: int | None = None, lipschitz_method: str = "exact",
                 lowpass: str = "tikhonov", tv_weight: float = DEFAULT_TV_WEIGHT) -> None:
        super().__init__()
        if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
            raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
        if n_iter < 0:
            raise ValueError(f"n_iter must be >= 0, got {n_iter}")
        if lipschitz_method not in ("exact", "power"):
            raise ValueError(f"lipschitz_method must be 'exact' or 'power', got {lipschitz_method!r}")
        if lowpass not in LOWPASS_KINDS:
            raise ValueError(f"lowpass must be one of {LOWPASS_KINDS}, got {lowpass!r}")
        if not (isinstance(tv_weight, (int, float)) and math.isfinite(tv_weight) and tv_weight > 0):
            raise ValueError(f"tv_weight must be a finite number > 0, got {tv_weight!r}")
        self.lowpass = lowpass
        self.tv_weight = float(tv_weight)
        self.register_buffer("filters", as_filter_tensor(filters).detach().to(torch.float32).clone())
        self.log_beta = nn.Parameter(torch.tensor(math.log(beta), dtype=torch.float32))
        self.n_iter = int(n_iter)
        self.percentile = float(percentile)
        self.per_slice_scale = bool(per_slice_scale)
        self.chunk_size = chunk_size
        self.lipschitz_method = lipschitz_method
        self._ops: "OrderedDict[tuple, tuple[SpectralCodeOperator, torch.Tensor, torch.Tensor]]" = OrderedDict()
        self._ops_lock = threading.Lock()

    @property
    def beta(self) -> torch.Tensor:
        """The low-pass weight, exp(log_beta) > 0."""
        return torch.exp(self.log_beta)

    @property
    def num_filters(self) -> int:
        return int(self.filters.shape[0])

    def operator(self, filters: torch.Tensor | None, acquired_shape: Sequence[int], grid_shape: Sequence[int],
                 mask: "torch.Tensor | np.ndarray | None", device: torch.device,
                 dtype: torch.dtype) -> tuple[SpectralCodeOperator, torch.Tensor]:
        """The A D operator and its step-size constant L for these shapes, mask, device and dtype.

        filters: None for the stored dictionary, whose operators are kept (the reconstructor is
        their only cache, keyed by shapes, mask, device, dtype and the dictionary tensor: its
        storage, which the entry keeps alive, and the version that in-place edits bump); other
        filters (e.g. a random dictionary per training batch) get a fresh operator."""
        fourier = SampledFourier(acquired_shape, grid_shape, mask)
        if filters is not None:
            return self._build(filters, fourier, device, dtype)
        stored = self.filters
        version = -1 if stored.is_inference() else stored._version
        key = (stored.data_ptr(), version, fourier.acquired_shape, fourier.grid_shape, _mask_key(fourier.mask), str(device), dtype)
        with self._ops_lock:  # slices of a scan run in parallel threads (adacsc.gadgets.slice_pool)
            hit = self._ops.get(key)
            if hit is not None:
                self._ops.move_to_end(key)
                return hit[0], hit[1]
            op, lip = self._build(stored, fourier, device, dtype)
            self._ops[key] = (op, lip, stored)
            while len(self._ops) > _OP_CACHE_SIZE:
                self._ops.popitem(last=False)
            return op, lip

    def _build(self, filters: torch.Tensor, fourier: SampledFourier, device: torch.device,
               dtype: torch.dtype) -> tuple[SpectralCodeOperator, torch.Tensor]:
        op = SpectralCodeOperator.of_filters(filters, fourier, device, dtype)
        return op, lipschitz_constant(op, self.lipschitz_method)

    def _lambda(self, lam: LambdaSpec, x0_n: torch.Tensor, filters: torch.Tensor, num_filters: int,
                noise: torch.Tensor | None, x_low: torch.Tensor) -> "float | torch.Tensor":
        needs_noise = isinstance(lam, NoiseMultiple) or getattr(lam, "uses_noise", False)
        if needs_noise and noise is None:
            raise ValueError("this lambda follows the noise level: pass noise_std (k-space noise std per slice)")
        if isinstance(lam, NoiseMultiple):
            return (lam.value * noise).to(x0_n.real.dtype).view(-1, 1, 1, 1)
        if callable(lam) and not isinstance(lam, torch.Tensor):
            if getattr(lam, "uses_lowpass", False):
                maps = lam(x0_n, filters, noise, x_low=x_low)
            else:
                maps = lam(x0_n, filters, noise) if needs_noise else lam(x0_n, filters)
            want = (x0_n.shape[0], num_filters) + tuple(x0_n.shape[-2:])
            if not isinstance(maps, torch.Tensor) or tuple(maps.shape) != want:
                got = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
                raise ValueError(f"the map function must return Lambda maps of shape {want}, got {got}")
            if maps.is_complex():
                raise ValueError("the map function must return real Lambda maps")
            return maps.to(x0_n.real.dtype)
        if isinstance(lam, torch.Tensor):
            return lam.to(device=x0_n.device, dtype=x0_n.real.dtype)
        if isinstance(lam, (int, float)) and not isinstance(lam, bool):
            return float(lam)
        raise ValueError(f"lam must be a float, a tensor of maps or a callable map_fn, got {type(lam).__name__}")

    def forward(self, y: torch.Tensor, grid_shape: Sequence[int], lam: LambdaSpec,
                mask: "torch.Tensor | np.ndarray | None" = None,
                filters: "object | None" = None,
                noise_std: "torch.Tensor | float | None" = None) -> CSCResult:
        """Reconstruct slices from their acquired k-space block.

        y: complex [B, M1, M2], the centred acquired k-space block in SNR units (complex64, or
           complex128 for checks); grid_shape: (H, W) >= (M1, M2), e.g. 2x for super-resolution.
        lam: float | tensor [B|1, K|1, H|1, W|1] | map_fn(x0_n, filters) -> [B, K, H, W].
        mask: optional binary mask inside the acquired block (broadcast to [B, M1, M2]).
        filters: optional dictionary overriding the stored one for this call (e.g. a random
           dictionary per training batch).
        noise_std: k-space noise std per slice ([B] or one value) in the units of y.
        """
        if not isinstance(y, torch.Tensor) or not y.is_complex() or y.ndim != 3:
            raise ValueError(f"y must be a complex tensor [B, M1, M2], got "
                             f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
        if y.dtype not in (torch.complex64, torch.complex128):
            raise ValueError(f"y must be complex64 (or complex128), got {y.dtype}")
        if not bool(torch.isfinite(torch.view_as_real(y)).all()):
            raise ValueError("y contains NaN or infinite values")
        grid = check_shape2(grid_shape, "grid_shape")
        real = y.real.dtype
        override = None if filters is None else as_filter_tensor(filters)
        f = (self.filters if override is None else override).to(device=y.device, dtype=real)
        op, lip = self.operator(override, y.shape[-2:], grid, mask, y.device, y.dtype)
        fourier = op.fourier

        x0 = fourier.adjoint(y)
        scale = robust_scale(x0, self.percentile, self.per_slice_scale)
        y_n = y / broadcast_scale(scale, 3)
        x0_n = x0 / broadcast_scale(scale, 3)
        noise = None if noise_std is None else noise_levels(noise_std, y.shape[0], y.device) / scale
        beta = self.beta.to(device=y.device, dtype=real)
        weights = None
        if getattr(lam, "sets_lowpass_weight", False):
            if self.lowpass != "tv":
                raise ValueError("this network sets the TV weight per pixel: it needs the TV low-pass, "
                                 f"not {self.lowpass!r}")
            if noise is None:
                raise ValueError("the TV low-pass follows the noise level: pass noise_std")
            weights = lam.lowpass_weights(x0_n, noise)
        if self.lowpass == "tv":
            if noise is None:
                raise ValueError("the TV low-pass follows the noise level: pass noise_std")
            x_low = tv_lowpass(y_n, fourier, self.tv_weight * noise, weight_map=weights)
        else:
            x_low = tikhonov_lowpass(x0_n, beta)
        y_high = y_n - fourier(x_low)
        lam_used = self._lambda(lam, x0_n, f, op.num_filters, noise, x_low)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("CSC: B=%d, %s -> %s, K=%d, scale %s, beta %.4g, L %s", y.shape[0], tuple(y.shape[-2:]),
                      grid, op.num_filters, [round(v, 4) for v in scale.tolist()], float(beta.detach()),
                      lip.tolist())
        codes = fista(op, y_high, lam_used, lip, self.n_iter, self.chunk_size)
        x = x_low + op.synthesis(codes)
        s = broadcast_scale(scale, 3)
        return CSCResult(image=x * s, x0=x0, x_low=x_low * s, codes=codes * broadcast_scale(scale, 4),
                         lam=lam_used, scale=scale, lipschitz=lip, noise=noise,
                         lowpass_weights=None if weights is None else weights.detach())

    def infer(self, y: torch.Tensor, grid_shape: Sequence[int], lam: LambdaSpec,
              mask: "torch.Tensor | np.ndarray | None" = None, filters: "object | None" = None,
              noise_std: "torch.Tensor | float | None" = None) -> CSCResult:
        """`forward` under torch.inference_mode() (no autograd bookkeeping)."""
        with torch.inference_mode():
            return self.forward(y, grid_shape, lam, mask, filters, noise_std)

    def extra_repr(self) -> str:
        k, h, w = self.filters.shape
        low = f"beta={float(self.beta.detach()):.4g}" if self.lowpass == "tikhonov" else f"tv_weight={self.tv_weight:g}"
        return (f"K={k}, {h}x{w}, {low}, n_iter={self.n_iter}, "
                f"lipschitz={self.lipschitz_method}")


def _mask_key(mask: torch.Tensor | None) -> tuple:
    """A key for a sampling mask's contents (shape and hash; small masks only)."""
    if mask is None:
        return ()
    m = mask.detach().to("cpu", torch.uint8).contiguous()
    return tuple(m.shape), hashlib.sha1(m.numpy().tobytes()).hexdigest()


@dataclass(frozen=True)
class TrainedSettings:
    """The reconstruction settings a set of weights was trained with, read from their scalars
    (written by adacsc.training.trainer.Trainer.scalars), with the published values where they say
    nothing: the Tikhonov low-pass and FISTA_ITERATIONS iterations."""

    beta: float = DEFAULT_BETA
    iterations: int = FISTA_ITERATIONS
    lowpass: str = "tikhonov"
    tv_weight: float = DEFAULT_TV_WEIGHT

    @classmethod
    def from_scalars(cls, scalars: "dict[str, float]") -> "TrainedSettings":
        return cls(beta=float(scalars.get("beta", DEFAULT_BETA)),
                   iterations=int(scalars.get("iterations", FISTA_ITERATIONS)),
                   lowpass="tv" if "tv_weight" in scalars else "tikhonov",
                   tv_weight=float(scalars.get("tv_weight", DEFAULT_TV_WEIGHT)))

    def reconstructor(self, filters: "object") -> CSCReconstructor:
        """A CSCReconstructor with these settings for `filters`."""
        return CSCReconstructor(filters, beta=self.beta, n_iter=self.iterations, lowpass=self.lowpass,
                                tv_weight=self.tv_weight)
