"""FISTA for the sparse codes: min_s ||A D s - y'||^2 / 2 + || Lambda (.) s ||_1.

The l1 term acts on the real and imaginary parts separately (2K real code maps), so the proximal
step soft-thresholds Re and Im with Lambda / L. s_0 = 0, fixed iteration count, step 1/L.

Cost: per iteration one forward FFT (thresholded codes -> acquired frequencies) and one inverse
FFT (of the gradient step, taken in the Fourier domain) of the K code maps, see
`adacsc.core.spectral`. The solver keeps the spectra of the codes; the momentum (linear) is
applied to the spectra, so the extrapolated point never needs its own FFT.

Blocks of filters (`chunk_size`) are processed one after the other within each iteration: on a
CPU a block that fits in cache (~2 MB per thread) runs the FFTs and elementwise passes much
faster than one large tensor (and avoids re-faulting large allocations); on CUDA the default is
all filters at once. Filters only interact through the residual, which is summed over all
blocks before the gradient step.

Between iterations the solver asks whether to stop and runs the iteration hook of its context
(adacsc.core.cancel): the slice pool uses the hook to change the torch thread count of a running
solve when other slices start or finish.

Differentiable: plain torch ops; the only in-place writes go into freshly created tensors that
no backward formula needs, so autograd reaches Lambda (maps or a tensor scalar) and anything
upstream of y' (x_low, hence beta). Memory for training grows with iterations x K x grid.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from adacsc.core.cancel import between_iterations
from adacsc.core.spectral import SpectralCodeOperator

__all__ = ["fista", "soft_threshold", "objective", "default_chunk_size", "FISTA_ITERATIONS"]

log = logging.getLogger(__name__)

FISTA_ITERATIONS = 64
# aten's softshrink.out (not exposed by torch.nn.functional); fall back to allocating if absent
_SOFTSHRINK_OUT = getattr(getattr(torch._C, "_nn", None), "softshrink", None)
_CPU_CHUNK_BYTES_PER_THREAD = 2 * 2 ** 20  # about one L2 cache


def default_chunk_size(batch: int, num_filters: int, grid_shape: tuple[int, int],
                       device: torch.device, itemsize: int = 8) -> int:
    """Filters per block: all of them on CUDA; on CPU ~2 MB per torch thread (at least 1 filter).

    With several threads every small op ends in a thread barrier; fewer, larger blocks keep the
    solver usable when the cores are shared with other work (measured on 2 cores: 2 MB blocks
    are ~5 % faster on an idle machine but several times slower under load).
    """
    if device.type != "cpu":
        return num_filters
    per_filter = batch * grid_shape[0] * grid_shape[1] * itemsize
    budget = _CPU_CHUNK_BYTES_PER_THREAD * max(1, torch.get_num_threads())
    return max(1, min(num_filters, budget // max(per_filter, 1)))


def soft_threshold(v: torch.Tensor, tau: "float | torch.Tensor",
                   neg_tau: torch.Tensor | None = None) -> torch.Tensor:
    """Soft-threshold the real and imaginary parts of complex v separately.

    tau: a float, or a real tensor broadcastable to v's real view [..., 2] (i.e. the complex
    shape plus a trailing 1 or 2; a contiguous [..., 2] tensor is fastest on CPU).
    `neg_tau` = -tau may be passed to save a pass.
    """
    return torch.view_as_complex(_soft_real(torch.view_as_real(v), tau, neg_tau))


def _soft_real(vr: torch.Tensor, tau: "float | torch.Tensor", neg_tau: torch.Tensor | None,
               out: torch.Tensor | None = None, scratch: torch.Tensor | None = None) -> torch.Tensor:
    """Soft threshold of a real view; `out` / `scratch` are optional buffers (no autograd only)."""
    if not isinstance(tau, torch.Tensor):
        if out is not None and _SOFTSHRINK_OUT is not None:
            return _SOFTSHRINK_OUT(vr, float(tau), out=out)
        return F.softshrink(vr, float(tau))
    lo = -tau if neg_tau is None else neg_tau
    clipped = torch.clamp(vr, lo, tau, out=scratch)
    return vr - clipped if out is None else torch.sub(vr, clipped, out=out)


class _Workspace:
    """Reusable block-sized buffers for runs without autograd.

    Allocating and freeing MB-sized tensors in every iteration makes glibc hand memory back to
    the OS and fault it in again (thousands of page faults per iteration); reusing buffers
    avoids that. Disabled (every getter returns None, i.e. allocate) when autograd records.
    """

    def __init__(self, enabled: bool, device: torch.device) -> None:
        self.enabled = enabled
        self.device = device
        self._flat: dict[object, torch.Tensor] = {}

    def get(self, key: object, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor | None:
        if not self.enabled:
            return None
        n = math.prod(shape)
        buf = self._flat.get((key, dtype))
        if buf is None or buf.numel() < n:
            buf = torch.empty(n, dtype=dtype, device=self.device)
            self._flat[(key, dtype)] = buf
        return buf[:n].view(shape)


def _as_tau(lam: "float | torch.Tensor", lipschitz: torch.Tensor, batch: int, num_filters: int,
            grid: tuple[int, int]) -> "float | torch.Tensor":
    """Lambda / L in the shape soft_threshold wants: a float or [B|1, K|1, H|1, W|1, 1]."""
    target = (batch, num_filters) + grid
    if not isinstance(lam, torch.Tensor):
        lam = float(lam)
        if not math.isfinite(lam) or lam < 0:
            raise ValueError(f"lambda must be a finite number >= 0, got {lam}")
        if lipschitz.numel() == 1:
            return lam / float(lipschitz.reshape(()))
        lam = torch.tensor(lam, dtype=lipschitz.dtype, device=lipschitz.device)
    if lam.is_complex():
        raise ValueError("Lambda must be real")
    if lam.ndim > 4:
        raise ValueError(f"Lambda must broadcast to [B, K, H, W] = {list(target)}, got shape {tuple(lam.shape)}")
    shape4 = (1,) * (4 - lam.ndim) + tuple(lam.shape)
    for got, want, name in zip(shape4, target, "BKHW"):
        if got not in (1, want):
            raise ValueError(f"Lambda shape {tuple(lam.shape)} does not broadcast to [B, K, H, W] = "
                             f"{list(target)} (dim {name})")
    lam = lam.reshape(shape4)
    if not lam.requires_grad and bool((lam < 0).any()):
        raise ValueError("Lambda must be >= 0 everywhere")
    return (lam / lipschitz.to(lam.dtype).reshape(-1, 1, 1, 1))[..., None]


def _chunks(num_filters: int, chunk_size: int) -> list[slice]:
    return [slice(k, min(k + chunk_size, num_filters)) for k in range(0, num_filters, chunk_size)]


def fista(op: SpectralCodeOperator, y: torch.Tensor, lam: "float | torch.Tensor",
          lipschitz: torch.Tensor, n_iter: int = FISTA_ITERATIONS, chunk_size: int | None = None,
          callback: Callable[[int, torch.Tensor], None] | None = None,
          should_stop: Callable[[], bool] | None = None, s0: torch.Tensor | None = None) -> torch.Tensor:
    """Run FISTA from s_0 = 0 (or the warm start s0); returns the codes s [B, K, H, W] (complex,
    y's dtype). The readable specification is adacsc.core.fista_reference.

    y: k-space block [B, M1, M2] (centred, the high-pass data y').
    lam: a float, or a real tensor broadcastable to [B, K, H, W] (maps), >= 0.
    lipschitz: L >= ||A D||^2, a tensor of shape [1] or [B] (`op.squared_norm()`).
    callback(i, s): called after iteration i with the current codes (tests; costs a concat).
    should_stop(): asked before each iteration (default: the check bound to this context, see
    `adacsc.core.cancel`); True raises Cancelled.
    s0: codes [B, K, H, W] to start from (the momentum starts afresh), e.g. in dictionary learning.
    """
    if not y.is_complex() or y.ndim != 3 or tuple(y.shape[-2:]) != op.acquired_shape:
        raise ValueError(f"y must be complex [B, {op.acquired_shape[0]}, {op.acquired_shape[1]}], "
                         f"got {tuple(y.shape)} {y.dtype}")
    if y.dtype != op.dtype or y.device != op.device:
        raise ValueError(f"y ({y.dtype}, {y.device}) does not match the operator ({op.dtype}, {op.device})")
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    batch, k_all, grid = y.shape[0], op.num_filters, op.grid_shape
    lipschitz = torch.as_tensor(lipschitz, device=y.device, dtype=y.real.dtype).reshape(-1)
    if lipschitz.numel() not in (1, batch) or not bool((lipschitz > 0).all()):
        raise ValueError(f"lipschitz must be positive with 1 or B={batch} values, got {lipschitz.tolist()}")
    tau = _as_tau(lam, lipschitz, batch, k_all, grid)
    if chunk_size is None:
        chunk_size = default_chunk_size(batch, k_all, grid, y.device, y.element_size())
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    blocks = _chunks(k_all, chunk_size)
    log.debug("FISTA: B=%d, K=%d, grid %s, acquired %s, %d iterations, %d block(s) of <= %d filters, %s",
              batch, k_all, grid, op.acquired_shape, n_iter, len(blocks), chunk_size,
              "maps" if isinstance(tau, torch.Tensor) else "scalar lambda")

    def block_tau(b: slice) -> tuple["float | torch.Tensor", torch.Tensor | None]:
        if not isinstance(tau, torch.Tensor):
            return tau, None
        t = tau[:, b] if tau.shape[1] > 1 else tau
        # a contiguous [..., 2] threshold avoids a slow broadcasting clamp on CPU
        t = t.expand(t.shape[:-1] + (2,))
        if y.device.type == "cpu":
            t = t.contiguous()
        return t, -t

    taus = [block_tau(b) for b in blocks]
    g_blocks = [op._G[:, b] for b in blocks]
    gc_blocks = [op._G_conj[:, b] for b in blocks]
    y_blk = op._to_block(y)
    inv_l = (1.0 / lipschitz).reshape(-1, 1, 1)
    real = torch.view_as_real

    # State per filter block: the full spectra (uncentred, orthonormal FFT) of s = x_{k-1} and
    # s_prev = x_{k-2}, and their acquired-frequency parts. The gradient step is taken in the
    # Fourier domain: v = ifft2(lerp(S_prev, S, 1 + mu) - embed(G^H r / L)), where the
    # subtraction touches only the acquired block, in place; then s_new = soft(v) and
    # S_new = fft2(s_new). Elementwise passes run on real views (complex lerp is slow on CPU).
    # Without autograd the soft threshold overwrites v (a fresh FFT output), the block arrays
    # rotate and the other temporaries live in a workspace. The FFTs allocate their outputs:
    # torch.fft's out= costs a copy (~10 % of an iteration), and with the allocator's thresholds
    # fixed (adacsc.runtime) a fresh output reuses freed memory instead of faulting pages in.
    maps_mode = isinstance(tau, torch.Tensor)
    records = torch.is_grad_enabled() and (y.requires_grad or (maps_mode and tau.requires_grad))
    work = _Workspace(not records, y.device)
    spec: list[torch.Tensor] | None = None       # full spectra of s (complex)
    spec_prev: list[torch.Tensor] | None = None
    blk: list[torch.Tensor] | None = None        # acquired parts (complex, small)
    blk_prev: list[torch.Tensor] | None = None
    codes: list[torch.Tensor] = []
    if s0 is not None:
        if tuple(s0.shape) != (batch, k_all) + grid or s0.dtype != y.dtype:
            raise ValueError(f"s0 must be {y.dtype} [{batch}, {k_all}, {grid[0]}, {grid[1]}], got "
                             f"{tuple(s0.shape)} {s0.dtype}")
        codes = [s0[:, b] for b in blocks]
        spec = [torch.fft.fft2(c, norm="ortho") for c in codes]
        blk = [op._gather(c) for c in spec]
    t, mu = 1.0, 0.0
    step = between_iterations("FISTA", should_stop)
    for it in range(n_iter):
        step(it, n_iter)
        # residual at the extrapolated point z = s + mu (s - s_prev), on the acquired block
        resid = -y_blk
        if blk is not None:
            for j, b in enumerate(blocks):
                small = (batch, b.stop - b.start) + op.acquired_shape
                if blk_prev is None:
                    z_blk = blk[j]
                else:
                    buf = work.get("z_blk", small, y.dtype)
                    z_blk = torch.view_as_complex(torch.lerp(real(blk_prev[j]), real(blk[j]), 1.0 + mu,
                                                             out=None if buf is None else real(buf)))
                resid = resid + torch.mul(g_blocks[j], z_blk, out=work.get("prod", small, y.dtype)).sum(dim=1)
        resid = (resid * inv_l)[:, None]  # the step 1/L folded into the small residual
        new_spec, new_blk, codes = [], [], []
        for j, b in enumerate(blocks):
            shape = (batch, b.stop - b.start) + grid
            small = (batch, b.stop - b.start) + op.acquired_shape
            # (1/L) (A D)^H (A D z - y') on the acquired block
            grad = torch.mul(gc_blocks[j], resid, out=work.get("grad", small, y.dtype))
            if spec is None:
                v_spec = op._embed(-grad)
            else:
                z_buf = work.get("z", shape, y.dtype)
                if spec_prev is None:
                    z_spec = spec[j].clone() if z_buf is None else z_buf.copy_(spec[j])
                else:
                    z_spec = torch.view_as_complex(torch.lerp(
                        real(spec_prev[j]), real(spec[j]), 1.0 + mu, out=None if z_buf is None else real(z_buf)))
                v_spec = op._subtract_block_(z_spec, grad)
            v = torch.fft.ifft2(v_spec, norm="ortho")
            clip_buf = work.get("clip", shape + (2,), v.real.dtype) if maps_mode else None
            s_new = torch.view_as_complex(_soft_real(
                real(v), *taus[j], out=real(v) if work.enabled else None, scratch=clip_buf))
            s_spec = torch.fft.fft2(s_new, norm="ortho")
            codes.append(s_new)
            new_spec.append(s_spec)
            # block arrays rotate like the spectra (blk_prev[j] is not needed any more)
            blk_out = blk_prev[j] if (blk_prev is not None and work.enabled and not op._full) else None
            if blk_out is None and work.enabled and not op._full:
                blk_out = torch.empty(small, dtype=y.dtype, device=y.device)
            new_blk.append(op._gather(s_spec, out=blk_out))
        t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        mu = (t - 1.0) / t_next
        t = t_next
        spec_prev, spec = spec, new_spec
        blk_prev, blk = blk, new_blk
        if callback is not None:
            callback(it, torch.cat(codes, dim=1))
    if not codes:
        return y.new_zeros((batch, k_all) + grid)
    return codes[0] if len(codes) == 1 else torch.cat(codes, dim=1)


def objective(op: SpectralCodeOperator, y: torch.Tensor, s: torch.Tensor,
              lam: "float | torch.Tensor") -> torch.Tensor:
    """Per-slice objective ||A D s - y||^2/2 + sum Lambda (|Re s| + |Im s|), real [B]."""
    r = op.forward(s) - y
    data = 0.5 * (r.real ** 2 + r.imag ** 2).flatten(1).sum(dim=1)
    l1 = s.real.abs() + s.imag.abs()
    reg = (l1 * lam).flatten(1).sum(dim=1)
    return data + reg
