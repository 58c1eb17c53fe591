"""The reconstruction methods compared by `adacsc evaluate`, each a callable
(LowFieldBatch, noise level) -> complex images [N, H, W] on the CPU.

Methods with a regularisation weight (scalar CSC, BART) hold one weight per noise level, chosen
on validation data by `tune` (a grid search), as an operator would tune a protocol.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from adacsc.core.reconstruct import CSCResult, NoiseMultiple, TrainedSettings
from adacsc.core.scaling import robust_scale
from adacsc.training.lowfield import LowFieldBatch
from adacsc.metrics import magnitude_psnr

__all__ = ["Method", "ZeroFilled", "ScalarCSC", "NoiseScalarCSC", "MapCSC", "BlackBox", "BartPics",
           "tune"]

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
    """Shared set-up of the CSC methods: filters [K, h, w] and the settings. Every solve is told
    the true noise level of the data, as a noise scan tells the gadget."""

    filters: torch.Tensor
    settings: TrainedSettings
    device: torch.device = torch.device("cpu")

    def __post_init__(self) -> None:
        self.recon = self.settings.reconstructor(self.filters).to(self.device)

    def _solve(self, batch: LowFieldBatch, lam: object) -> CSCResult:
        with torch.inference_mode():
            return self.recon(batch.kspace.to(self.device), batch.grid_shape, lam,
                              noise_std=batch.noise_std.to(self.device))


@dataclass
class ScalarCSC(_CSC):
    """CSC with one lambda for the whole image, one value per noise level (`lambdas`)."""

    lambdas: dict[str, float] = field(default_factory=dict)
    name: str = "CSC, scalar lambda"

    def __call__(self, batch: LowFieldBatch, noise_level: float) -> torch.Tensor:
        key = _level_key(noise_level)
        if key not in self.lambdas:
            raise ValueError(f"{self.name}: no lambda tuned for noise level {key}")
        return self._solve(batch, self.lambdas[key]).image.cpu()

    def with_lambda(self, lam: float) -> Callable[[LowFieldBatch, float], torch.Tensor]:
        return lambda batch, level: self._solve(batch, float(lam)).image.cpu()


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
            self.filters = self.filters[torch.as_tensor(list(self.permutation))]
        super().__post_init__()
        self.network = self.network.to(self.device).eval()

    def solve(self, batch: LowFieldBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, Lambda maps [N, K, H, W]) on the CPU."""
        res = self._solve(batch, self.network)
        return res.image.cpu(), res.lam.cpu()

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


def tune(make: Callable[[float], Callable[[LowFieldBatch, float], torch.Tensor]], grid: Sequence[float],
         batches: dict[str, LowFieldBatch], label: str) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Grid search: for each noise level (key of `batches`, the validation data at that level), the
    lambda of `grid` with the best mean PSNR. Returns ({level: lambda}, {level: {lambda: PSNR}})."""
    best: dict[str, float] = {}
    scores: dict[str, dict[str, float]] = {}
    for level, batch in batches.items():
        scores[level] = {}
        for lam in grid:
            scores[level][f"{lam:g}"] = float(magnitude_psnr(make(lam)(batch, float(level)), batch.target).mean())
        best[level] = float(max(scores[level], key=scores[level].get))
        log.info("%s, noise %s: lambda %g (validation PSNR %.2f dB; grid %s)", label, level, best[level],
                 scores[level][f"{best[level]:g}"],
                 ", ".join(f"{k}: {v:.2f}" for k, v in scores[level].items()))
    return best, scores
