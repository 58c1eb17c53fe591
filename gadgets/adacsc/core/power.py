"""The step size of FISTA: L >= ||A D||^2, by power iteration or exactly, cached.

`power_iteration` estimates the largest eigenvalue of a normal operator (per batch element).
Power iteration approaches ||A D||^2 from below, hence the safety factor (default 1.01).

`lipschitz_constant` is what the solver calls. Its default method "exact" uses the closed form
of `SpectralCodeOperator.lipschitz` (A D is diagonal per frequency), which is exact and cheaper;
method "power" runs power iteration on the same operator. Results are cached per dictionary
identity (tensor storage, version, shape), shapes, mask, device, dtype and method: L is
recomputed whenever the dictionary or the grid changes.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

import torch

from adacsc.core.spectral import SpectralCodeOperator

__all__ = ["power_iteration", "lipschitz_constant", "clear_lipschitz_cache", "tensor_identity", "mask_identity"]

log = logging.getLogger(__name__)

_CACHE: "OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]]" = OrderedDict()
_CACHE_SIZE = 32
_CACHE_LOCK = threading.Lock()  # slices of several scans run in parallel threads


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


def tensor_identity(t: torch.Tensor) -> tuple:
    """A cheap identity key for a tensor's current contents (no device sync).

    Storage address and shape, plus the version counter that in-place edits bump (inference
    tensors have none: edit filters in place only outside inference mode).
    """
    version = -1 if t.is_inference() else t._version
    return (t.data_ptr(), version, tuple(t.shape), t.dtype, str(t.device))


def mask_identity(mask: torch.Tensor | None) -> tuple:
    """A key for a sampling mask's contents (shape and hash; small masks only)."""
    if mask is None:
        return ()
    m = mask.detach().to("cpu", torch.uint8).contiguous()
    return tuple(m.shape), hashlib.sha1(m.numpy().tobytes()).hexdigest()


def clear_lipschitz_cache() -> None:
    """Forget all cached step sizes."""
    with _CACHE_LOCK:
        _CACHE.clear()


def lipschitz_constant(op: SpectralCodeOperator, method: str = "exact", safety: float | None = None,
                       n_iter: int = 200, seed: int = 0) -> torch.Tensor:
    """L >= ||A D||^2 for the operator, shape [Bm] (1 unless the mask has a batch dim); cached.

    method "exact" (default): closed form, safety 1.0 by default.
    method "power": power iteration from a seeded random start, safety 1.01 by default.
    """
    if method not in ("exact", "power"):
        raise ValueError(f"lipschitz method must be 'exact' or 'power', got {method!r}")
    if safety is None:
        safety = 1.0 if method == "exact" else 1.01
    if safety < 1.0:
        raise ValueError(f"the safety factor must be >= 1, got {safety}")
    filters = op.synthesis.filters
    key = (tensor_identity(filters), op.acquired_shape, op.grid_shape, mask_identity(op.fourier.mask),
           str(op.device), op.dtype, method, float(safety), n_iter, seed)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit[0]
    if method == "exact":
        value = op.lipschitz()
    else:
        batch = op.G.shape[0]
        gen = torch.Generator().manual_seed(seed)
        real = torch.float64 if op.dtype == torch.complex128 else torch.float32
        shape = (batch, op.num_filters) + op.grid_shape
        x = torch.complex(torch.randn(shape, generator=gen, dtype=real),
                          torch.randn(shape, generator=gen, dtype=real)).to(op.device)
        value = power_iteration(op.normal, x, n_iter=n_iter)
    value = (value * safety).detach()
    log.debug("L = %s (%s, safety %.3g) for K=%d, %s -> %s", value.cpu().tolist(), method, safety,
              op.num_filters, op.acquired_shape, op.grid_shape)
    with _CACHE_LOCK:
        _CACHE[key] = (value, filters)  # keeping the filters alive keeps their identity unique
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return value
