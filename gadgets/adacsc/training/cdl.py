"""Convolutional dictionary learning (CDL) on training slices, with the core's operators.

Problem, over a fixed set of B training crops x_b (complex, high-pass filtered) of size c x c:

    min_{d, s}  sum_b  1/2 || sum_k d_k * s_bk - x_b ||^2  +  lam sum_{b,k} (|Re s_bk| + |Im s_bk|)
    subject to  ||d_k||_2 <= 1  (all filters normalised to exactly 1 at the end),

with d_k real h x w filters and * the circular convolution of `adacsc.core.convolution` (filter
centre at the origin; the spectra come from `filter_spectra`, i.e. the same D as the solver). The
crops are multiplied by a Tukey window (`crop_window`) that takes them smoothly to zero at their
borders, so the circular boundary of the crop grid adds no wrap-around edges and the whole problem
stays diagonal in the Fourier domain. The l1 term acts on real and imaginary parts separately
as in the reconstruction.

Algorithm: alternating minimisation. Each outer iteration runs a few warm-started iterations of
the reconstruction's FISTA (adacsc.core.fista, step 1/L with the exact L = max_f sum_k
|d_k^(f)|^2) on all codes, then a few
accelerated projected-gradient steps on the filters with the codes fixed (per-frequency K x K
Gram matrices, step from a warm-started power iteration; projection onto the unit ball). Filters
that stay unused are re-seeded from the crops where the residual is largest. The final objective
is that of a fresh FISTA solve (s_0 = 0) with the final, unit-norm filters.

Data: crops of the high-pass part x - x_low of training images, x_low = `adacsc.core.lowpass`
with the reconstruction's default beta: the dictionary learns exactly what the CSC solver has to
represent. Crops are chosen at random (seeded) among positions with enough high-pass energy.
Cost per outer iteration: 2 x code_steps FFTs of B x K crop-sized maps, plus B K^2 c^2 for the Gram
matrices.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from adacsc.core.convolution import Synthesis, filter_spectra
from adacsc.core.filter_bank import FilterBank
from adacsc.core.dictionary import Dictionary
from adacsc.core.fista import fista
from adacsc.core.fourier import SampledFourier
from adacsc.core.lowpass import lowpass
from adacsc.core.reconstruct import DEFAULT_BETA
from adacsc.core.spectral import SpectralCodeOperator

__all__ = ["CDLConfig", "CDLResult", "highpass", "crop_window", "training_crops", "learn_dictionary",
           "sparse_code", "cdl_objective", "dictionary_name", "heldout_objective"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CDLConfig:
    """Settings of one learning run (all recorded in the dictionary's metadata)."""

    num_filters: int = 32
    filter_size: int = 9
    lam: float = 0.01
    iterations: int = 60  # outer (alternating) iterations
    code_steps: int = 4  # warm-started FISTA iterations per outer iteration
    filter_steps: int = 5  # projected-gradient steps on the filters per outer iteration
    crops: int = 32  # number of training crops (B)
    crop_size: int = 48
    taper: int = 8  # width (pixels) of the raised-cosine edge of the crop window
    beta: float = DEFAULT_BETA  # high-pass: x - (I + beta grad^H grad)^-1 x
    final_code_steps: int = 100  # FISTA iterations of the final objective (from s_0 = 0)
    reseed_every: int = 20  # re-seed unused filters every so many outer iterations (0: never)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_filters < 1:
            raise ValueError(f"num_filters must be >= 1, got {self.num_filters}")
        if self.filter_size < 1 or self.filter_size % 2 == 0:
            raise ValueError(f"filter_size must be odd and >= 1, got {self.filter_size}")
        if not (self.lam > 0 and math.isfinite(self.lam)):
            raise ValueError(f"lam must be a finite number > 0, got {self.lam}")
        if self.crop_size < 2 * self.filter_size + 2 * self.taper:
            raise ValueError(f"crop_size {self.crop_size} is too small for {self.filter_size}x"
                             f"{self.filter_size} filters and taper {self.taper} (needs >= "
                             f"{2 * self.filter_size + 2 * self.taper})")
        for name in ("iterations", "code_steps", "filter_steps", "crops", "final_code_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class CDLResult:
    """A learned dictionary with its learning history."""

    dictionary: Dictionary
    filters: torch.Tensor  # float32 [K, h, w], unit norm
    history: list[dict] = field(default_factory=list)  # per logged iteration
    final: dict = field(default_factory=dict)  # objective, data, l1, relative residual, density
    seconds: float = 0.0


def dictionary_name(num_filters: int, filter_size: int, lam: float, seed: int | None = None) -> str:
    """Standard file stem: cdl_k32_9x9_l0.05 (plus _s<seed> when seed is given and not 0)."""
    stem = f"cdl_k{num_filters}_{filter_size}x{filter_size}_l{lam:g}"
    return stem + (f"_s{seed}" if seed else "")


def highpass(x: torch.Tensor, beta: float = DEFAULT_BETA) -> torch.Tensor:
    """x - x_low with the solver's low-pass, for complex images [B, H, W]."""
    if not x.is_complex():
        x = x.to(torch.complex64)
    return x - lowpass(x, beta)


def training_crops(images: torch.Tensor, count: int, size: int, *, seed: int = 0,
                   beta: float = DEFAULT_BETA, taper: int = 8,
                   min_energy: float = 0.5) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
    """`count` windowed crops [count, size, size] of the high-pass part of `images` [N, H, W]
    and their (image index, row, column). Candidate crops whose high-pass energy is below
    `min_energy` x the mean over candidates are skipped (background); deterministic for a seed."""
    if images.ndim != 3 or images.shape[-1] < size or images.shape[-2] < size:
        raise ValueError(f"images [N, H, W] must be at least {size}x{size}, got {tuple(images.shape)}")
    hp = highpass(images, beta)
    rng = np.random.default_rng(seed)
    n, h, w = hp.shape
    pool = 8 * count
    idx = rng.integers(0, n, pool)
    rows = rng.integers(0, h - size + 1, pool)
    cols = rng.integers(0, w - size + 1, pool)
    energy = torch.stack([hp[i, r:r + size, c:c + size].abs().pow(2).sum()
                          for i, r, c in zip(idx, rows, cols)]).numpy()
    ok = np.flatnonzero(energy >= min_energy * energy.mean())
    if ok.size < count:
        ok = np.argsort(-energy)[:count]
    pick = ok[:count]
    crops = torch.stack([hp[idx[j], rows[j]:rows[j] + size, cols[j]:cols[j] + size] for j in pick])
    crops = crops * crop_window(size, taper)
    return crops.to(torch.complex64).contiguous(), [(int(idx[j]), int(rows[j]), int(cols[j])) for j in pick]


def crop_window(size: int, taper: int) -> torch.Tensor:
    """Separable Tukey window [size, size]: 1 inside, a raised-cosine ramp of `taper` pixels to
    zero at each edge. Windowed crops are (nearly) zero at their borders, so the circular
    convolution on the crop grid sees no wrap-around edges."""
    w = torch.ones(size, dtype=torch.float64)
    if taper > 0:
        ramp = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(taper, dtype=torch.float64) + 0.5) / taper)
        w[:taper] = ramp
        w[size - taper:] = ramp.flip(0)
    return (w[:, None] * w[None, :]).float()


_CHUNK_BYTES = 3 * 2 ** 20


def _crop_chunks(batch: int, num_filters: int, grid: tuple[int, int], chunk_bytes: int = _CHUNK_BYTES) -> list[slice]:
    per_crop = num_filters * grid[0] * grid[1] * 8
    n = max(1, min(batch, chunk_bytes // max(per_crop, 1)))
    return [slice(i, min(i + n, batch)) for i in range(0, batch, n)]


def coding_operator(filters: torch.Tensor, x: torch.Tensor) -> SpectralCodeOperator:
    """A D on the full grid of the crops x (A the unitary centred FFT, nothing left out), so that
    ||A D s - A x|| = ||D s - x||: sparse coding is the reconstruction's own problem."""
    grid = tuple(x.shape[-2:])
    return SpectralCodeOperator.of_filters(FilterBank(filters), SampledFourier(grid, grid), x.device, x.dtype)


def sparse_code(filters: torch.Tensor, x: torch.Tensor, lam: float, n_iter: int, *,
                s0: torch.Tensor | None = None, return_spectra: bool = False
                ) -> "torch.Tensor | tuple[torch.Tensor, torch.Tensor]":
    """Codes for min_s 1/2 ||D s - x||^2 + lam ||s||_1 (re/im separately) on the grid of x, by
    the reconstruction's solver (adacsc.core.fista) with a warm start s0 (the momentum restarts
    at every call). Crops are independent given the filters and are coded in chunks that fit in
    the CPU cache.

    filters: real [K, h, w]; x: complex [B, c, c]; returns codes [B, K, c, c] (and their
    unnormalised spectra fft2(s) with return_spectra=True)."""
    op = coding_operator(filters, x)
    lip = op.squared_norm()
    b, k = x.shape[0], op.num_filters
    s_out = x.new_empty((b, k) + tuple(x.shape[-2:]))
    for c in _crop_chunks(b, k, tuple(x.shape[-2:])):
        s_out[c] = fista(op, op.fourier(x[c]), lam, lip, n_iter, s0=None if s0 is None else s0[c])
    return (s_out, torch.fft.fft2(s_out)) if return_spectra else s_out


def _synthesis(filters: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """D s on the grid of the codes."""
    return Synthesis(FilterBank(filters.detach().to(s.real.dtype)))(s)


def cdl_objective(filters: torch.Tensor, x: torch.Tensor, s: torch.Tensor, lam: float) -> dict:
    """Terms of the CDL objective, averaged per crop: objective, data, l1, relative residual
    ||D s - x|| / ||x|| and code density (fraction of non-zero real code coefficients)."""
    r = _synthesis(filters, s) - x
    data = 0.5 * float(r.abs().pow(2).sum())
    l1 = float(s.real.abs().sum() + s.imag.abs().sum())
    b = x.shape[0]
    return {"objective": (data + lam * l1) / b, "data": data / b, "l1": l1 / b,
            "relative_residual": float(r.abs().pow(2).sum().sqrt() / x.abs().pow(2).sum().sqrt()),
            "density": float(((s.real != 0).sum() + (s.imag != 0).sum()) / (2 * s.numel()))}


def _project(d: torch.Tensor) -> torch.Tensor:
    norms = d.flatten(1).norm(dim=1).clamp(min=1.0)
    return d / norms[:, None, None]


class _FilterStep:
    """Accelerated projected gradient on the filters with the codes fixed, in the Fourier domain.

    With S_b = fft2(s_b), X_b = fft2(x_b) (unnormalised, N = c^2 pixels) the data term is
    (1/2N) sum_f [ d^H G d - 2 Re(d^H h) ] + const per frequency f, with the K x K Gram matrices
    G(f) = sum_b S_b(f)^H S_b(f) and h(f) = sum_b S_b(f)^H X_b(f), computed once per update;
    each gradient step then costs FFTs of the K filters and a K x K product per frequency:
    grad = Re( P^T ifft2(G d^ - h) ), P the zero-padding (centre at the origin) of filter_spectra.
    """

    def __init__(self, shape: tuple[int, int, int], grid: tuple[int, int], generator: torch.Generator):
        self.grid = grid
        self.size = shape[-2:]
        self.v = torch.randn(shape, generator=generator)

    def _grad(self, d: torch.Tensor, gram: torch.Tensor, h: torch.Tensor | None) -> torch.Tensor:
        k = d.shape[0]
        dh = filter_spectra(d, self.grid, gram.dtype).reshape(k, -1).T.contiguous()  # [N, K]
        g = torch.bmm(gram, dh[:, :, None])[:, :, 0]
        if h is not None:
            g = g - h
        img = torch.fft.ifft2(g.T.reshape(k, *self.grid)).real
        hh, ww = self.size
        img = torch.roll(img, shifts=(hh // 2, ww // 2), dims=(-2, -1))
        return img[:, :hh, :ww].contiguous()

    def lipschitz(self, gram: torch.Tensor, n_iter: int = 5) -> float:
        est = 0.0
        for _ in range(n_iter):
            self.v = self.v / self.v.norm()
            w = self._grad(self.v, gram, None)
            est = float(w.norm())
            self.v = w
        return 1.1 * est

    def run(self, d: torch.Tensor, s_hat: torch.Tensor, x: torch.Tensor, steps: int) -> torch.Tensor:
        """`steps` accelerated projected-gradient steps from d, for code spectra s_hat [B, K, c, c]."""
        b, k = s_hat.shape[:2]
        n = s_hat.shape[-1] * s_hat.shape[-2]
        x_hat = torch.fft.fft2(x).reshape(b, n).T  # [N, B]
        sc = s_hat.reshape(b, k, n).permute(2, 1, 0).contiguous()  # [N, K, B]
        gram = torch.matmul(sc.conj(), sc.transpose(1, 2))  # [N, K, K]
        h = torch.matmul(sc.conj(), x_hat[:, :, None])[:, :, 0]  # [N, K]
        del sc
        lip = self.lipschitz(gram)
        if lip <= 0:
            return d
        y, d_prev, t = d, d, 1.0
        for _ in range(steps):
            d_new = _project(y - self._grad(y, gram, h) / lip)
            t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
            y = d_new + ((t - 1.0) / t_next) * (d_new - d_prev)
            d_prev, t = d_new, t_next
        return d_prev


def _initial_filters(x: torch.Tensor, k: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """Random patches of the (complex) crops, real or imaginary part, zero mean, unit norm."""
    b, c, _ = x.shape
    out = []
    for _ in range(k):
        i, r, q = rng.integers(0, b), rng.integers(0, c - size + 1), rng.integers(0, c - size + 1)
        patch = x[i, r:r + size, q:q + size]
        patch = patch.real if rng.random() < 0.5 else patch.imag
        patch = patch - patch.mean() + 0.01 * torch.from_numpy(rng.standard_normal((size, size))).float()
        out.append(patch / patch.norm())
    return torch.stack(out).float()


def learn_dictionary(crops: torch.Tensor, config: CDLConfig, *, name: str | None = None,
                     metadata: dict | None = None, progress: bool = True,
                     log_every: int = 10) -> CDLResult:
    """Learn K filters from training crops [B, c, c] (complex high-pass images, as returned by
    `training_crops`). Returns a `CDLResult` whose `dictionary` carries the provenance metadata
    (config, history summary and final objective, plus `metadata`)."""
    if crops.ndim != 3 or not crops.is_complex():
        raise ValueError(f"crops must be complex [B, c, c], got {tuple(crops.shape)} {crops.dtype}")
    start = time.perf_counter()
    torch_gen = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    k, f = config.num_filters, config.filter_size
    x = crops.to(torch.complex64)
    grid = tuple(x.shape[-2:])
    d = _initial_filters(x, k, f, rng)
    s = None
    step = _FilterStep((k, f, f), grid, torch_gen)
    history: list[dict] = []
    iterator = range(config.iterations)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(iterator, desc=f"CDL K={k} {f}x{f} lam={config.lam:g}", unit="it", leave=False)
        iterator = bar
    for it in iterator:
        s, s_hat = sparse_code(d, x, config.lam, config.code_steps, s0=s, return_spectra=True)
        d = step.run(d, s_hat, x, config.filter_steps)
        if config.reseed_every and (it + 1) % config.reseed_every == 0 and it + 1 < config.iterations:
            d, s = _reseed_unused(d, s, x, rng)
        if (it + 1) % log_every == 0 or it + 1 == config.iterations:
            terms = cdl_objective(d, x, s, config.lam)
            terms.update(iteration=it + 1, seconds=round(time.perf_counter() - start, 2))
            history.append(terms)
            if bar is not None:
                bar.set_postfix(obj=f"{terms['objective']:.4g}", res=f"{terms['relative_residual']:.3f}",
                                dens=f"{terms['density']:.4f}")
            log.debug("CDL iteration %d: %s", it + 1, terms)
    if bar is not None:
        bar.close()
    # unit norm exactly, then a fresh solve for the final objective
    d = d / d.flatten(1).norm(dim=1)[:, None, None]
    s_final = sparse_code(d, x, config.lam, config.final_code_steps)
    final = cdl_objective(d, x, s_final, config.lam)
    usage = (s_final.abs().pow(2).sum(dim=(0, 2, 3)) > 0)
    final["filters_used"] = int(usage.sum())
    seconds = time.perf_counter() - start
    final["seconds"] = round(seconds, 2)
    meta = dict(metadata or {})
    meta.update(cdl_config=asdict(config), final_objective=final,
                history=[{key: (round(v, 6) if isinstance(v, float) else v) for key, v in h.items()}
                         for h in history])
    name = name or dictionary_name(k, f, config.lam, config.seed)
    dictionary = Dictionary(d.numpy().astype(np.float32), name,
                            source=meta.pop("source", "convolutional dictionary learning (adacsc.training.cdl)"),
                            metadata=meta)
    return CDLResult(dictionary, torch.from_numpy(dictionary.filters.copy()), history, final, seconds)


def _reseed_unused(d: torch.Tensor, s: torch.Tensor, x: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace filters whose codes are all zero by patches of the largest residual; their codes restart at 0."""
    energy = s.abs().pow(2).sum(dim=(0, 2, 3))
    unused = torch.nonzero(energy == 0).flatten().tolist()
    if not unused:
        return d, s
    r = _synthesis(d, s) - x
    size = d.shape[-1]
    b, c, _ = x.shape
    # mean residual energy of every patch position
    e = torch.nn.functional.avg_pool2d(r.abs().pow(2)[:, None].float(), size, stride=1)[:, 0]
    flat = torch.argsort(e.flatten(), descending=True)[: 4 * len(unused)].tolist()
    chosen = rng.choice(len(flat), size=min(len(unused), len(flat)), replace=False)
    d = d.clone()
    for k, j in zip(unused, chosen):
        bi, rem = divmod(flat[int(j)], e.shape[1] * e.shape[2])
        ri, ci = divmod(rem, e.shape[2])
        patch = x[bi, ri:ri + size, ci:ci + size]
        patch = patch.real if rng.random() < 0.5 else patch.imag
        patch = patch - patch.mean()
        if float(patch.norm()) > 0:
            d[k] = patch / patch.norm()
    log.debug("re-seeded %d unused filters", len(unused))
    return d, s


def heldout_objective(filters: "torch.Tensor | Dictionary", lam: float, *, split: str = "val",
                      count: int = 32, crop_size: int = 48, data_size: int = 160, seed: int = 99,
                      beta: float = DEFAULT_BETA, n_iter: int = 150) -> dict:
    """How well a dictionary represents unseen images: the CDL objective terms (`cdl_objective`)
    after `n_iter` FISTA iterations from zero on `count` high-pass crops of `split` (default the
    validation slabs, which no dictionary is learned from). Comparable across dictionaries for
    the same lam and crops (the same seed gives the same crops)."""
    from adacsc.training.slices import load_split

    f = torch.as_tensor(filters.filters if isinstance(filters, Dictionary) else filters).float()
    images = load_split(split, data_size)
    crops, _ = training_crops(images, count, crop_size, seed=seed, beta=beta)
    s = sparse_code(f, crops, lam, n_iter)
    return cdl_objective(f, crops, s, lam)
