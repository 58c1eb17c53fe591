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

Lambda, in normalised units, comes from a strategy (adacsc.core.lambdas: a fixed value, a multiple
of the noise, given maps or a map network), which sees the normalised zero-filled image x0_n, the
synthesis operator D of the grid and the noise level, and then the low-pass part x_low. A strategy
may also set the TV weight per pixel (`LambdaStrategy.lowpass_weights`, a map network with
NetworkConfig.tv_map): the TV low-pass then uses mu = tv_weight * sigma_n * w. The filters are a
validated FilterBank (adacsc.core.filter_bank); the iteration count is an argument of each call.

Noise. `noise_std` is the k-space noise std per slice in the units of y (1 in SNR units after
prewhitening; an estimate otherwise); in normalised units it is sigma_n = noise_std / scale_b.
It is needed by noise-aware maps, NoiseMultiple and the TV low-pass, and ignored otherwise.

For inference call under `torch.inference_mode()` (or use `infer`): otherwise autograd records
all iterations, since beta is a learnable parameter.
"""

from __future__ import annotations

import logging
import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from adacsc.core.filter_bank import FilterBank
from adacsc.core.fista import fista
from adacsc.core.fourier import SampledFourier, check_shape2
from adacsc.core.lambdas import LambdaInputs, LambdaStrategy
from adacsc.core.lowpass import lowpass as tikhonov_lowpass
from adacsc.core.scaling import SCALE_PERCENTILE, broadcast_scale, noise_levels, robust_scale
from adacsc.core.spectral import SpectralCodeOperator
from adacsc.core.tv import tv_lowpass

__all__ = ["CSCReconstructor", "CSCResult", "DEFAULT_BETA", "DEFAULT_TV_WEIGHT", "DEFAULT_NOISE_LAMBDA",
           "LOWPASS_KINDS"]

log = logging.getLogger(__name__)

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
    scale:  [B] the normalisation divisor (normalised = SNR units / scale)
    noise:  [B] sigma_n, the k-space noise std in normalised units (None when not given)
    lipschitz: the step-size constant L used (normalised units; independent of the data)
    lowpass_weights: [B, H, W] the per-pixel multiplier of the TV weight the strategy set (None
            when the TV weight is constant)
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
    """Batched CSC reconstruction with a fixed (or per-call) filter bank and a learnable beta.

    bank: the filters (a FilterBank, validated when it was made).
    beta: initial low-pass weight (> 0), stored as log_beta (nn.Parameter) so it stays positive.
    percentile / per_slice_scale: see adacsc.core.scaling.
    chunk_size: filters per block in FISTA (None: automatic, see fista.default_chunk_size).
    lowpass: "tikhonov" (the published low-pass, weight beta) or "tv" (TV weight tv_weight times
        the noise level; needs noise_std at every call).
    The step size is 1/L with L = ||A D||^2 in closed form (SpectralCodeOperator.squared_norm).
    """

    def __init__(self, bank: FilterBank, beta: float = DEFAULT_BETA, percentile: float = SCALE_PERCENTILE,
                 per_slice_scale: bool = True, chunk_size: int | None = None, lowpass: str = "tikhonov",
                 tv_weight: float = DEFAULT_TV_WEIGHT) -> None:
        super().__init__()
        if not isinstance(bank, FilterBank):
            raise TypeError(f"the reconstructor takes a FilterBank, got {type(bank).__name__}")
        if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
            raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
        if lowpass not in LOWPASS_KINDS:
            raise ValueError(f"lowpass must be one of {LOWPASS_KINDS}, got {lowpass!r}")
        if not (isinstance(tv_weight, (int, float)) and math.isfinite(tv_weight) and tv_weight > 0):
            raise ValueError(f"tv_weight must be a finite number > 0, got {tv_weight!r}")
        self.lowpass = lowpass
        self.tv_weight = float(tv_weight)
        self.register_buffer("filters", bank.tensor.detach().to(torch.float32).clone())
        self.log_beta = nn.Parameter(torch.tensor(math.log(beta), dtype=torch.float32))
        self.percentile = float(percentile)
        self.per_slice_scale = bool(per_slice_scale)
        self.chunk_size = chunk_size
        self._ops: "OrderedDict[tuple, tuple[SpectralCodeOperator, torch.Tensor, torch.Tensor]]" = OrderedDict()
        self._ops_lock = threading.Lock()

    @property
    def beta(self) -> torch.Tensor:
        """The low-pass weight, exp(log_beta) > 0."""
        return torch.exp(self.log_beta)

    @property
    def num_filters(self) -> int:
        return int(self.filters.shape[0])

    def operator(self, bank: FilterBank | None, acquired_shape: Sequence[int], grid_shape: Sequence[int],
                 mask: "torch.Tensor | np.ndarray | None", device: torch.device,
                 dtype: torch.dtype) -> tuple[SpectralCodeOperator, torch.Tensor]:
        """The A D operator and its step-size constant L = ||A D||^2 for these shapes, mask, device
        and dtype.

        bank: None for the stored filters, whose operators are kept (the reconstructor is their
        only cache, keyed by shapes, mask, device, dtype and the filter tensor: its storage, which
        the entry keeps alive, and the version that in-place edits bump); another bank (e.g. a
        random dictionary per training batch) gets a fresh operator."""
        fourier = SampledFourier(acquired_shape, grid_shape, mask)
        if bank is not None:
            return self._build(bank, fourier, device, dtype)
        stored = self.filters
        version = -1 if stored.is_inference() else stored._version
        key = (stored.data_ptr(), version, fourier.acquired_shape, fourier.grid_shape, _mask_key(fourier.mask), str(device), dtype)
        with self._ops_lock:  # slices of a scan run in parallel threads (adacsc.gadgets.slice_pool)
            hit = self._ops.get(key)
            if hit is not None:
                self._ops.move_to_end(key)
                return hit[0], hit[1]
            # the buffer is the tensor of the bank validated in __init__ (moved or edited in place)
            op, lip = self._build(FilterBank._valid(stored), fourier, device, dtype)
            self._ops[key] = (op, lip, stored)
            while len(self._ops) > _OP_CACHE_SIZE:
                self._ops.popitem(last=False)
            return op, lip

    @staticmethod
    def _build(bank: FilterBank, fourier: SampledFourier, device: torch.device,
               dtype: torch.dtype) -> tuple[SpectralCodeOperator, torch.Tensor]:
        op = SpectralCodeOperator.of_filters(bank, fourier, device, dtype)
        return op, op.squared_norm().detach()

    def forward(self, y: torch.Tensor, grid_shape: Sequence[int], sparsity: LambdaStrategy, iterations: int, *,
                mask: "torch.Tensor | np.ndarray | None" = None, bank: FilterBank | None = None,
                noise_std: "torch.Tensor | float | None" = None) -> CSCResult:
        """Reconstruct slices from their acquired k-space block.

        y: complex [B, M1, M2], the centred acquired k-space block in SNR units (complex64, or
           complex128 for checks); grid_shape: (H, W) >= (M1, M2), e.g. 2x for super-resolution.
        sparsity: how Lambda is chosen (adacsc.core.lambdas).
        iterations: FISTA iterations (>= 0).
        mask: optional binary mask inside the acquired block (broadcast to [B, M1, M2]).
        bank: optional filters overriding the stored ones for this call (e.g. a random
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
        if not isinstance(sparsity, LambdaStrategy):
            raise TypeError(f"sparsity must be a LambdaStrategy (adacsc.core.lambdas), got {type(sparsity).__name__}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
        if bank is not None and not isinstance(bank, FilterBank):
            raise TypeError(f"bank must be a FilterBank, got {type(bank).__name__}")
        grid = check_shape2(grid_shape, "grid_shape")
        real = y.real.dtype
        op, lip = self.operator(bank, y.shape[-2:], grid, mask, y.device, y.dtype)
        fourier = op.fourier

        x0 = fourier.adjoint(y)
        scale = robust_scale(x0, self.percentile, self.per_slice_scale)
        y_n = y / broadcast_scale(scale, 3)
        x0_n = x0 / broadcast_scale(scale, 3)
        noise = None if noise_std is None else noise_levels(noise_std, y.shape[0], y.device) / scale
        beta = self.beta.to(device=y.device, dtype=real)
        weights = sparsity.lowpass_weights(LambdaInputs(x0_n, op.synthesis, noise))
        if weights is not None and self.lowpass != "tv":
            raise ValueError(f"this sparsity strategy sets the TV weight per pixel: it needs the TV low-pass, "
                             f"not {self.lowpass!r}")
        if self.lowpass == "tv":
            if noise is None:
                raise ValueError("the TV low-pass follows the noise level: pass noise_std")
            x_low = tv_lowpass(y_n, fourier, self.tv_weight * noise, weight_map=weights)
        else:
            x_low = tikhonov_lowpass(x0_n, beta)
        y_high = y_n - fourier(x_low)
        lam_used = sparsity.thresholds(LambdaInputs(x0_n, op.synthesis, noise, x_low))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("CSC: B=%d, %s -> %s, K=%d, scale %s, beta %.4g, L %s", y.shape[0], tuple(y.shape[-2:]),
                      grid, op.num_filters, [round(v, 4) for v in scale.tolist()], float(beta.detach()),
                      lip.tolist())
        codes = fista(op, y_high, lam_used, lip, iterations, self.chunk_size)
        x = x_low + op.synthesis(codes)
        s = broadcast_scale(scale, 3)
        return CSCResult(image=x * s, x0=x0, x_low=x_low * s, codes=codes * broadcast_scale(scale, 4),
                         lam=lam_used, scale=scale, lipschitz=lip, noise=noise,
                         lowpass_weights=None if weights is None else weights.detach())

    def infer(self, y: torch.Tensor, grid_shape: Sequence[int], sparsity: LambdaStrategy, iterations: int, *,
              mask: "torch.Tensor | np.ndarray | None" = None, bank: FilterBank | None = None,
              noise_std: "torch.Tensor | float | None" = None) -> CSCResult:
        """`forward` under torch.inference_mode() (no autograd bookkeeping)."""
        with torch.inference_mode():
            return self.forward(y, grid_shape, sparsity, iterations, mask=mask, bank=bank, noise_std=noise_std)

    def extra_repr(self) -> str:
        k, h, w = self.filters.shape
        low = f"beta={float(self.beta.detach()):.4g}" if self.lowpass == "tikhonov" else f"tv_weight={self.tv_weight:g}"
        return f"K={k}, {h}x{w}, {low}"


def _mask_key(mask: torch.Tensor | None) -> tuple:
    """A key for a sampling mask's contents (shape and hash; small masks only)."""
    if mask is None:
        return ()
    m = mask.detach().to("cpu", torch.uint8).contiguous()
    return tuple(m.shape), hashlib.sha1(m.numpy().tobytes()).hexdigest()
