"""The reconstruction methods compared by `adacsc evaluate`, each a callable
(LowFieldBatch, noise level) -> complex images [N, H, W] on the CPU.

Methods with a regularisation weight (scalar CSC, BART) hold one weight per noise level, chosen
on validation data by `tune` (a bracketed search: a coarse grid, widened while its best value sits
at an end, then refined to neighbours within 2^(1/4) of the optimum), as an operator would tune a
protocol.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from adacsc.core.app import CSCRecon, TrainedSettings
from adacsc.core.dictionary import Dictionary
from adacsc.core.lambdas import FixedLambda, LambdaStrategy, NoiseMultiple, SparsityMaps
from adacsc.core.reconstruct import CSCResult
from adacsc.core.scaling import robust_scale
from adacsc.training.lowfield import TEST_BLOCK_FRACTION, LowFieldBatch
from adacsc.metrics import magnitude_psnr

__all__ = ["Method", "ZeroFilled", "LowPassPart", "ScalarCSC", "NoiseScalarCSC", "MapCSC", "BlackBox", "BartPics",
           "tune", "tune_one", "bracket_search", "FINEST_STEP"]

log = logging.getLogger(__name__)


class Method(Protocol):
    name: str

    def __call__(self, batch: LowFieldBatch, noise_level: float) -> torch.Tensor: ...


def _level_key(level: float) -> str:
    return f"{float(level):g}"


@dataclass
class ZeroFilled:
    """A^H y: the zero-filled (zero-padded k-space) image, the unregularised reference."""

    name: str = "zero-filled"

    def __call__(self, batch: LowFieldBatch, noise_level: float) -> torch.Tensor:
        return batch.zero_filled().cpu()


@dataclass
class _CSC:
    """Shared set-up of the CSC methods: the dictionary and the trained settings, built into the
    deployed reconstruction (CSCRecon.from_trained, as the gadget builds it). Every solve is told
    the true noise level of the data, as a noise scan tells the gadget."""

    dictionary: Dictionary
    settings: TrainedSettings
    device: torch.device = torch.device("cpu")

    def __post_init__(self) -> None:
        self.recon = CSCRecon.from_trained(self.dictionary, FixedLambda(0.0), self.settings,
                                           super_resolution=round(1 / TEST_BLOCK_FRACTION), device=self.device)

    def _solve(self, batch: LowFieldBatch, sparsity: LambdaStrategy) -> CSCResult:
        return self.recon.with_sparsity(sparsity).solve(batch.kspace, batch.grid_shape, batch.noise_std)


@dataclass
class LowPassPart(_CSC):
    """The CSC's own low-pass part alone (the TV or Tikhonov image x_low, every code switched off):
    what the sparse codes are measured against. `adacsc evaluate` takes it from the learned-map
    run, which computes it anyway; called on its own it solves with lambda 0 and keeps x_low."""

    name: str = "the CSC's low-pass part alone (codes off)"

    def __call__(self, batch: LowFieldBatch, noise_level: float) -> torch.Tensor:
        return self._solve(batch, FixedLambda(0.0)).x_low.cpu()


@dataclass
class ScalarCSC(_CSC):
    """CSC with one lambda for the whole image, one value per noise level (`lambdas`)."""

    lambdas: dict[str, float] = field(default_factory=dict)
    name: str = "CSC, scalar lambda"

    def __call__(self, batch: LowFieldBatch, noise_level: float) -> torch.Tensor:
        key = _level_key(noise_level)
        if key not in self.lambdas:
            raise ValueError(f"{self.name}: no lambda tuned for noise level {key}")
        return self._solve(batch, FixedLambda(self.lambdas[key])).image.cpu()

    def with_lambda(self, lam: float) -> Callable[[LowFieldBatch, float], torch.Tensor]:
        return lambda batch, level: self._solve(batch, FixedLambda(float(lam))).image.cpu()


@dataclass
class NoiseScalarCSC(_CSC):
    """CSC with lambda = `multiple` x the noise level: the scalar mode's shipped default, untuned."""

    multiple: float = 1.0
    name: str = "CSC, scalar lambda following the noise"

    def __call__(self, batch: LowFieldBatch, noise_level: float) -> torch.Tensor:
        return self._solve(batch, NoiseMultiple(self.multiple)).image.cpu()

    def with_multiple(self, multiple: float) -> Callable[[LowFieldBatch, float], torch.Tensor]:
        return lambda batch, level: self._solve(batch, NoiseMultiple(float(multiple))).image.cpu()


@dataclass
class MapCSC(_CSC):
    """CSC with the per-filter Lambda maps predicted by NET_Theta from the filters and x0.
    `permutation` reorders the filters (the maps follow them: the output must not change)."""

    network: torch.nn.Module | None = None
    permutation: Sequence[int] | None = None
    name: str = "CSC, learned maps"

    def __post_init__(self) -> None:
        if self.permutation is not None:
            self.dictionary = self.dictionary.permuted(list(self.permutation))
        super().__post_init__()
        self.network = self.network.to(self.device).eval()

    def solve(self, batch: LowFieldBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images, Lambda maps [N, K, H, W], the low-pass part x_low) on the CPU."""
        res = self._solve(batch, SparsityMaps(self.network))
        return res.image.cpu(), res.lam.cpu(), res.x_low.cpu()

    def __call__(self, batch: LowFieldBatch, noise_level: float) -> torch.Tensor:
        return self.solve(batch)[0]


@dataclass
class BlackBox:
    """The black-box U-Net (adacsc.training.blackbox) applied to the zero-filled image."""

    model: torch.nn.Module
    device: torch.device = torch.device("cpu")
    name: str = "black-box U-Net"

    def __post_init__(self) -> None:
        self.model = self.model.to(self.device).eval()

    def __call__(self, batch: LowFieldBatch, noise_level: float) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(batch.zero_filled().to(self.device)).cpu()


@dataclass
class BartPics:
    """BART `pics` with l1-wavelet or total-variation regularisation (adacsc.evaluation.bart).
    Each image is divided by the robust scale of its zero-filled image first (as the CSC solver
    does), so one lambda fits images of any intensity."""

    regulariser: str
    iterations: int = 100
    random_shifts: bool = False
    lambdas: dict[str, float] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            kind = "l1-wavelet" if self.regulariser == "wavelet" else "TV"
            self.name = f"BART pics, {kind}" + (", cycle spinning" if self.random_shifts else "")

    def with_lambda(self, lam: float) -> Callable[[LowFieldBatch, float], torch.Tensor]:
        def run(batch: LowFieldBatch, level: float) -> torch.Tensor:
            from adacsc.evaluation.bart import pics

            scale = robust_scale(batch.zero_filled().cpu(), per_slice=True).reshape(-1, 1, 1)
            y = (batch.kspace.cpu() / scale).numpy()
            images = pics(y, tuple(batch.grid_shape), self.regulariser, float(lam), iterations=self.iterations,
                          random_shifts=self.random_shifts)
            return torch.from_numpy(np.ascontiguousarray(images)) * scale
        return run

    def __call__(self, batch: LowFieldBatch, noise_level: float) -> torch.Tensor:
        key = _level_key(noise_level)
        if key not in self.lambdas:
            raise ValueError(f"{self.name}: no lambda tuned for noise level {key}")
        return self.with_lambda(self.lambdas[key])(batch, noise_level)


#: the finest ratio between tried values around an optimum (the issue's 2^(1/4))
FINEST_STEP = 2 ** 0.25
#: how many times a search may step past the end of its grid (each time by the grid's end ratio)
MAX_WIDEN = 6
_MAX_REFINE = 12  # refinement rounds (a unimodal score needs about log2(log2(grid ratio) / log2(finest)) + 2)


def _key(value: float) -> str:
    return f"{value:.4g}"


def bracket_search(score: Callable[[float], float], grid: Sequence[float], *, finest: float | None = FINEST_STEP,
                   max_widen: int = MAX_WIDEN) -> tuple[float, dict[str, float], bool]:
    """Maximise `score` over a positive parameter: the grid first; while its best value is at an
    end, one more value beyond that end (at most `max_widen` times); then around the best value
    with ratios halved in log until the neighbours tried on both sides are within `finest` of it.

    Returns (best value, {value: score} of every value tried, whether the best value is still at an
    end of the tried range, i.e. the widening limit was reached)."""
    values = sorted({float(v) for v in grid})
    if not values or values[0] <= 0:
        raise ValueError(f"the grid must hold positive values, got {list(grid)}")
    tried: dict[float, float] = {}

    def at(v: float) -> float:
        v = float(_key(v))
        if v not in tried:
            tried[v] = float(score(v))
        return tried[v]

    for v in values:
        at(v)
    low = values[1] / values[0] if len(values) > 1 else 2.0
    high = values[-1] / values[-2] if len(values) > 1 else 2.0
    for _ in range(max_widen):
        best = max(tried, key=tried.get)
        if best == min(tried):
            at(best / low)
        elif best == max(tried):
            at(best * high)
        else:
            break
    best = max(tried, key=tried.get)
    step = max(low, high)
    # refine only inside a bracket: a best value still at an end is reported as such
    for _ in range(_MAX_REFINE if finest is not None and best not in (min(tried), max(tried)) else 0):
        step = max(step ** 0.5, finest) if step > finest * (1 + 1e-9) else finest
        at(best / step)
        at(best * step)
        new = max(tried, key=tried.get)
        if new == best and step <= finest * (1 + 1e-9):
            break
        best = new
    edge = best in (min(tried), max(tried))
    return best, {_key(v): tried[v] for v in sorted(tried)}, edge


def _search(refine: bool) -> dict[str, Any]:
    return {} if refine else {"finest": None, "max_widen": 0}


def tune(make: Callable[[float], Callable[[LowFieldBatch, float], torch.Tensor]], grid: Sequence[float],
         batches: dict[str, LowFieldBatch], label: str, memo: dict[tuple[str, float], float] | None = None,
         refine: bool = True) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """Bracketed search (`bracket_search`) per noise level (key of `batches`, the validation data at
    that level) for the value with the best mean PSNR. `memo` ({(level, value): PSNR}) keeps every
    score for reuse; `refine=False`: the plain grid search. Returns ({level: value}, {level: {"best",
    "psnr": {value: PSNR}, "at_edge"}})."""
    memo = {} if memo is None else memo
    best: dict[str, float] = {}
    scores: dict[str, dict[str, Any]] = {}
    for level, batch in batches.items():
        def score(lam: float, level: str = level, batch: LowFieldBatch = batch) -> float:
            if (level, lam) not in memo:
                memo[(level, lam)] = float(magnitude_psnr(make(lam)(batch, float(level)), batch.target).mean())
            return memo[(level, lam)]

        best[level], tried, edge = bracket_search(score, grid, **_search(refine))
        scores[level] = {"best": best[level], "psnr": tried, "at_edge": edge}
        log.info("%s, noise %s: %g (validation PSNR %.2f dB%s; tried %s)", label, level, best[level],
                 tried[_key(best[level])], ", AT THE EDGE of the widened range" if edge else "",
                 ", ".join(f"{k}: {v:.2f}" for k, v in tried.items()))
    return best, scores


def tune_one(make: Callable[[float], Callable[[LowFieldBatch, float], torch.Tensor]], grid: Sequence[float],
             batches: dict[str, LowFieldBatch], label: str, memo: dict[tuple[str, float], float] | None = None,
             refine: bool = True) -> tuple[float, dict[str, Any]]:
    """Bracketed search for the one value with the best PSNR averaged over every noise level."""
    memo = {} if memo is None else memo

    def score(lam: float) -> float:
        for level, batch in batches.items():
            if (level, lam) not in memo:
                memo[(level, lam)] = float(magnitude_psnr(make(lam)(batch, float(level)), batch.target).mean())
        return float(np.mean([memo[(level, lam)] for level in batches]))

    value, tried, edge = bracket_search(score, grid, **_search(refine))
    log.info("%s: %g (mean validation PSNR %.2f dB%s)", label, value, tried[_key(value)],
             ", AT THE EDGE of the widened range" if edge else "")
    return value, {"best": value, "mean_psnr": tried, "at_edge": edge}
