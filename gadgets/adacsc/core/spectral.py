"""A D (sampled Fourier after synthesis) expressed in the Fourier domain of the codes.

Why: FISTA on ||A D s - y'||^2/2 is dominated by FFTs of the K code maps. Because D is a circular
convolution and A keeps a block of the spectrum, A D is diagonal in the (uncentred, orthonormal)
FFT of the codes: with S_k = fft2(s_k, norm="ortho") and P the acquired frequencies,

    (A D s)[i] = phase[i] * sum_k G_k[i] * S_k[P_i],   G_k = mask * fft2(d_k)[P],
    (A D)^H r  = ifft2_ortho( embed_P( conj(G_k) * conj(phase) * r ) ),

so one FISTA iteration needs exactly one forward FFT (of the thresholded codes) and one inverse
FFT (of the gradient step, taken in the Fourier domain) of the K maps; the data term works on
the small [B, K, M1, M2] block. The centring phase is folded into the data once (`to_block`),
so the iteration never shifts. Block arrays use an internal order: the centred block order, or
the plain FFT order when grid == acquired (no gather/scatter needed then).

Also: ||A D||^2 exactly (`squared_norm`, overriding LinearOperator's power iteration). At each
frequency the normal operator (A D)^H A D is the rank-one matrix g g^H with g = (G_k[f])_k, so
||A D||^2 = max_f sum_k |G_k[f]|^2.
"""

from __future__ import annotations

import torch

from adacsc.core.convolution import Synthesis
from adacsc.core.filter_bank import FilterBank
from adacsc.core.fourier import SampledFourier, block_frequencies, block_pieces, centring_phase
from adacsc.core.linop import LinearOperator

__all__ = ["SpectralCodeOperator"]


class SpectralCodeOperator(LinearOperator):
    """A D for codes [B, K, H, W] -> k-space block [B, M1, M2], built for one device and dtype.

    Its public face is a LinearOperator's (forward/adjoint: the same operator as
    `fourier @ synthesis`, and `squared_norm` in closed form). The pieces the fused solver
    (adacsc.core.fista, the only user) works with are private: `_gather` / `_embed` /
    `_subtract_block_` (acquired frequencies of a full spectrum), `_restrict` / `_expand` (with the
    FFTs), the weights `_G` / `_G_conj`, `_to_block` for the data and `_full` (grid == acquired).
    """

    def __init__(self, synthesis: Synthesis, fourier: SampledFourier,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.complex64) -> None:
        if dtype not in (torch.complex64, torch.complex128):
            raise ValueError(f"dtype must be complex64 or complex128, got {dtype}")
        self.synthesis = synthesis
        self.fourier = fourier
        self.device = torch.device(device)
        self.dtype = dtype
        (m1, m2), (h, w) = fourier.acquired_shape, fourier.grid_shape
        self._row_pieces = block_pieces(m1, h)
        self._col_pieces = block_pieces(m2, w)
        # Internal order of the block: centred block order, except when grid == acquired, where
        # the uncentred FFT order is kept so that no gather/scatter is needed at all.
        self._full = (m1, m2) == (h, w)
        if self._full:
            rows, cols = torch.arange(h), torch.arange(w)
        else:
            rows, cols = block_frequencies(m1, h), block_frequencies(m2, w)
        rows, cols = rows.to(self.device), cols.to(self.device)
        spectra = synthesis.spectra((h, w), self.device, dtype)  # [K, H, W]
        g = spectra.index_select(-2, rows).index_select(-1, cols)  # [K, M1, M2]
        mask = fourier.mask
        if mask is not None:
            mask = self._to_internal(mask.to(device=self.device, dtype=g.real.dtype))
            mask = mask.reshape((-1,) + tuple(mask.shape[-2:])) if mask.ndim > 2 else mask[None]
            g = g[None] * mask[:, None]  # mask [Bm, M1, M2]
        else:
            g = g[None]
        self._mask = mask
        self._G = g  # [Bm or 1, K, M1, M2], internal order
        self._G_conj = g.conj().resolve_conj()
        self._phase = (centring_phase(h, dtype, self.device)[rows][:, None]
                       * centring_phase(w, dtype, self.device)[cols][None, :])  # [M1, M2], internal order

    @classmethod
    def of_filters(cls, bank: FilterBank, fourier: SampledFourier, device: torch.device | str,
                   dtype: torch.dtype) -> "SpectralCodeOperator":
        """A D for a filter bank, moved to `device` in the real type of `dtype` and detached (the
        operator is a constant of the solve)."""
        real = torch.float64 if dtype == torch.complex128 else torch.float32
        return cls(Synthesis(bank.to(device, real)), fourier, device, dtype)

    @property
    def num_filters(self) -> int:
        return int(self._G.shape[1])

    @property
    def grid_shape(self) -> tuple[int, int]:
        return self.fourier.grid_shape

    @property
    def acquired_shape(self) -> tuple[int, int]:
        return self.fourier.acquired_shape

    def _to_internal(self, t: torch.Tensor) -> torch.Tensor:
        """Centred block order -> internal order (ifftshift when grid == acquired)."""
        return torch.fft.ifftshift(t, dim=(-2, -1)) if self._full else t

    def _to_centred(self, t: torch.Tensor) -> torch.Tensor:
        return torch.fft.fftshift(t, dim=(-2, -1)) if self._full else t

    # --- fused pieces (internal order) ---------------------------------------------------------
    def _gather(self, spec: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The acquired frequencies of a full (uncentred) spectrum: [..., H, W] -> [..., M1, M2].

        Without `out` (and when grid == acquired) the result may share memory with `spec`.
        """
        if self._full:
            return spec if out is None else out.copy_(spec)
        if out is None:
            # contiguous slices + cat: about twice as fast as index_select on CPU
            return torch.cat([torch.cat([spec[..., r_full, c_full] for c_full, _ in self._col_pieces], dim=-1)
                              for r_full, _ in self._row_pieces], dim=-2)
        for r_full, r_blk in self._row_pieces:
            for c_full, c_blk in self._col_pieces:
                out[..., r_blk, c_blk].copy_(spec[..., r_full, c_full])
        return out

    def _embed(self, g: torch.Tensor) -> torch.Tensor:
        """A block spectrum [..., M1, M2] zero-filled to the full (uncentred) spectrum [..., H, W]."""
        if self._full:
            return g
        full = g.new_zeros(g.shape[:-2] + self.grid_shape)
        for r_full, r_blk in self._row_pieces:
            for c_full, c_blk in self._col_pieces:
                full[..., r_full, c_full] = g[..., r_blk, c_blk]
        return full

    def _subtract_block_(self, spec: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """In place: spec[acquired frequencies] -= g (spec must be a fresh, writable tensor)."""
        if self._full:
            return spec.sub_(g)
        for r_full, r_blk in self._row_pieces:
            for c_full, c_blk in self._col_pieces:
                spec[..., r_full, c_full].sub_(g[..., r_blk, c_blk])
        return spec

    def _restrict(self, s: torch.Tensor) -> torch.Tensor:
        """fft2(s, ortho) at the acquired frequencies: [..., H, W] -> [..., M1, M2]."""
        return self._gather(torch.fft.fft2(s, norm="ortho"))

    def _expand(self, g: torch.Tensor) -> torch.Tensor:
        """ifft2(ortho) of the block spectrum g [..., M1, M2] zero-filled to the grid."""
        return torch.fft.ifft2(self._embed(g), norm="ortho")

    def _to_block(self, y: torch.Tensor) -> torch.Tensor:
        """Data [B, M1, M2] (centred k-space block) -> the layout of the fused iteration."""
        out = self._to_internal(y) * self._phase.conj()
        return out if self._mask is None else out * self._mask

    def squared_norm(self, start: torch.Tensor | None = None, *, n_iter: int = 200,
                     rtol: float = 1e-6) -> torch.Tensor:
        """Exact ||A D||^2 = max_f sum_k |G_k(f)|^2, shape [Bm] (Bm = 1 without a batched mask);
        no power iteration, so `start`, `n_iter` and `rtol` are not used."""
        power = (self._G.real ** 2 + self._G.imag ** 2).sum(dim=1)  # [Bm, M1, M2]
        return power.flatten(1).amax(dim=1)

    # --- plain operator interface -------------------------------------------------------------
    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """A D s: codes [B, K, H, W] -> k-space block [B, M1, M2] (centred)."""
        self._check_codes(s)
        return self._to_centred(self._phase * (self._G * self._restrict(s)).sum(dim=1))

    def adjoint(self, r: torch.Tensor) -> torch.Tensor:
        """(A D)^H r: k-space block [B, M1, M2] -> codes [B, K, H, W]."""
        if not r.is_complex() or r.ndim != 3 or tuple(r.shape[-2:]) != self.acquired_shape:
            raise ValueError(f"k-space must be complex [B, {self.acquired_shape[0]}, {self.acquired_shape[1]}], "
                             f"got {tuple(r.shape)} {r.dtype}")
        return self._expand(self._G_conj * (self._to_internal(r) * self._phase.conj())[:, None])

    def _check_codes(self, s: torch.Tensor) -> None:
        if not s.is_complex() or s.ndim != 4 or s.shape[1] != self.num_filters \
                or tuple(s.shape[-2:]) != self.grid_shape:
            raise ValueError(f"codes must be complex [B, K={self.num_filters}, {self.grid_shape[0]}, "
                             f"{self.grid_shape[1]}], got {tuple(s.shape)} {s.dtype}")

    def __repr__(self) -> str:
        return f"SpectralCodeOperator({self.fourier!r} @ {self.synthesis!r}, {self.device}, {self.dtype})"
