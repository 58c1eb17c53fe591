"""The CSC reconstruction of a scan's slices as one typed object, built once per scan.

    trained = TrainedSettings.from_scalars(weights_info.scalars)   # what the weights were trained with
    recon = CSCRecon.from_trained(dictionary, SparsityMaps(network), trained, super_resolution=2,
                                  device=torch.device("cpu"))
    images = recon(kspace, sampled_lines, noise_std)      # one slice, as the gadget calls it
    result = recon.solve(y, grid, noise_std)              # a batch of slices, as the evaluation calls it

`from_trained` is the one way the gadget, the evaluation and the training's validation build it, so
the evaluation measures the deployed path; `with_sparsity` gives the same reconstruction with
another Lambda strategy (sharing its solver and operator cache), e.g. for tuning a scalar lambda.

Data consistency. Every call also measures how far the image is from the data it came from:
the data residual chi2 = ||A x* - y||^2 / (M sigma^2) and the trust index (adacsc.core.trust), about
1 in distribution, and the code atypicality (how unlike validation slices the filter usage and code
density are for the data's SNR and grid). It costs one FFT on the grid. `ReconImages.residual_map` is
|A^H (A x* - y)| / sigma on the grid when asked for.

It owns the solver (adacsc.core.reconstruct.CSCReconstructor, which caches the operator and its
step size per grid and mask) and says how Lambda is chosen (adacsc.core.lambdas): maps from a
network (NET_Theta), a fixed value, or a multiple of the noise level. Everything is validated when it is built; a call
only takes one slice's acquired k-space block. It knows nothing of files, names or messages: the
gadget (adacsc.gadgets.csc) maps chain properties to it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from adacsc.core.dictionary import Dictionary
from adacsc.core.filter_bank import FilterBank
from adacsc.core.fista import FISTA_ITERATIONS
from adacsc.core.fourier import SampledFourier
from adacsc.core.lambdas import FixedLambda, LambdaStrategy, NoiseMultiple, SparsityMaps
from adacsc.core.reconstruct import DEFAULT_BETA, DEFAULT_TV_WEIGHT, LOWPASS_KINDS, CSCReconstructor, CSCResult
from adacsc.core.trust import measure

__all__ = ["CSCRecon", "SparsityMaps", "FixedLambda", "NoiseMultiple", "LowPass", "ReconImages", "TrainedSettings"]


@dataclass(frozen=True)
class LowPass:
    """The low-pass part x_low: "tikhonov" (weight beta, the published one) or "tv" (weight
    tv_weight times the noise level, edge-preserving)."""

    kind: str = "tikhonov"
    beta: float = DEFAULT_BETA
    tv_weight: float = DEFAULT_TV_WEIGHT

    def __post_init__(self) -> None:
        if self.kind not in LOWPASS_KINDS:
            raise ValueError(f"low-pass must be one of {LOWPASS_KINDS}, got {self.kind!r}")

    def describe(self) -> str:
        return f"beta {self.beta:.4g}" if self.kind == "tikhonov" else f"TV weight {self.tv_weight:g} x noise"


@dataclass(frozen=True)
class TrainedSettings:
    """The reconstruction settings a set of weights was trained with, read from their scalars
    (written by adacsc.training.trainer.Trainer.scalars), with the published values where they say
    nothing: the Tikhonov low-pass and FISTA_ITERATIONS iterations. `overridden` applies what an
    operator chose instead."""

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

    def overridden(self, *, beta: float | None = None, iterations: int | None = None, lowpass: str | None = None,
                   tv_weight: float | None = None) -> "TrainedSettings":
        """These settings with the given values in place of the trained ones (None keeps a value)."""
        chosen = {"beta": beta, "iterations": iterations, "lowpass": lowpass, "tv_weight": tv_weight}
        return replace(self, **{key: value for key, value in chosen.items() if value is not None})

    def low_pass(self) -> LowPass:
        return LowPass(self.lowpass, beta=self.beta, tv_weight=self.tv_weight)


@dataclass(frozen=True)
class ReconImages:
    """The magnitude images of one slice on the reconstruction grid (float32 [H, W])."""

    reconstruction: np.ndarray
    zero_filled: np.ndarray
    mean_map: np.ndarray
    """the mean Lambda over the filters (normalised units; constant in scalar modes)"""
    data_residual: float = float("nan")
    """chi2 = ||A x* - y||^2 / (M sigma^2)"""
    trust_index: float = float("nan")
    """chi2 over its in-distribution expectation (adacsc.core.trust): about 1 on good data"""
    active_per_sample: float = float("nan")
    """non-zero code coefficients (real and imaginary parts counted apart) per acquired sample"""
    usage_entropy: float = float("nan")
    """the entropy of the share of non-zero code coefficients per filter (adacsc.core.trust)"""
    atypicality: float = float("nan")
    """the code atypicality (adacsc.core.trust): how unlike validation slices the solve's code figures are"""
    residual_map: np.ndarray | None = None
    """|A^H (A x* - y)| / sigma on the grid, when asked for"""


class CSCRecon:
    """CSC reconstruction with one dictionary, one way of choosing Lambda and fixed settings."""

    def __init__(self, dictionary: Dictionary, sparsity: LambdaStrategy, *, iterations: int, super_resolution: int,
                 device: torch.device, lowpass: LowPass = LowPass()) -> None:
        _check_sparsity(sparsity)
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
        if super_resolution < 1:
            raise ValueError(f"super_resolution must be >= 1, got {super_resolution}")
        self.dictionary = dictionary
        self.sparsity = sparsity
        self.iterations = iterations
        self.super_resolution = int(super_resolution)
        self.device = device
        self.lowpass = lowpass
        self.solver = CSCReconstructor(FilterBank(dictionary.filters), beta=lowpass.beta, lowpass=lowpass.kind,
                                       tv_weight=lowpass.tv_weight).to(device)

    @classmethod
    def from_trained(cls, dictionary: Dictionary, sparsity: LambdaStrategy, trained: TrainedSettings, *,
                     super_resolution: int, device: torch.device) -> "CSCRecon":
        """The reconstruction with the settings weights were trained with (`trained`, after any
        operator overrides): the one constructor the gadget, the evaluation and the training's
        validation use."""
        return cls(dictionary, sparsity, iterations=trained.iterations, super_resolution=super_resolution,
                   device=device, lowpass=trained.low_pass())

    def with_sparsity(self, sparsity: LambdaStrategy) -> "CSCRecon":
        """The same reconstruction (sharing the solver and its operator cache) with another way of
        choosing Lambda."""
        _check_sparsity(sparsity)
        other = copy.copy(self)
        other.sparsity = sparsity
        return other

    @property
    def mode(self) -> str:
        """"maps" (NET_Theta) or "scalar" (one Lambda)."""
        return "maps" if isinstance(self.sparsity, SparsityMaps) else "scalar"

    def grid(self, acquired: tuple[int, int]) -> tuple[int, int]:
        """The reconstruction grid of an acquired block."""
        return acquired[0] * self.super_resolution, acquired[1] * self.super_resolution

    def peak_bytes(self, acquired: tuple[int, int]) -> int:
        """Host memory one slice's reconstruction of an acquired block [E1, RO] needs at its peak:
        ten complex64 arrays of filters x grid (measured on CPU with 32 filters at 256x256 and
        512x512, 2x and 4x: 9.6 to 10.0), for the solver state, its workspace and the maps."""
        grid_y, grid_x = self.grid(acquired)
        return 10 * 8 * self.dictionary.num_filters * grid_y * grid_x

    def solve(self, y: torch.Tensor, grid: Sequence[int], noise_std: "torch.Tensor | float",
              mask: "torch.Tensor | np.ndarray | None" = None) -> CSCResult:
        """Reconstruct a batch of slices: centred k-space blocks y [B, M1, M2] (complex64, in SNR
        units) on `grid`, with their k-space noise std (one value or [B]); without autograd."""
        if isinstance(noise_std, torch.Tensor):
            noise_std = noise_std.to(self.device)
        return self.solver.infer(y.to(self.device), grid, self.sparsity, self.iterations, mask=mask,
                                 noise_std=noise_std)

    def __call__(self, kspace: np.ndarray, lines: np.ndarray, noise_std: float,
                 residual_map: bool = False) -> ReconImages:
        """Reconstruct one slice from its centred k-space block [E1, RO] (complex64), the acquired
        phase-encode lines (bool [E1]) and its k-space noise std; with `residual_map`, also the
        residual image."""
        if kspace.ndim != 2 or lines.shape != kspace.shape[:1]:
            raise ValueError(f"a k-space block [E1, RO] with one flag per line is needed, got {kspace.shape} "
                             f"and {lines.shape}")
        mask = None if lines.all() else np.broadcast_to(lines[:, None], kspace.shape).astype(np.float32)
        grid = self.grid(kspace.shape)
        y = torch.from_numpy(np.ascontiguousarray(kspace)).to(self.device)[None]
        result = self.solve(y, grid, noise_std, mask)
        if isinstance(result.lam, torch.Tensor):  # maps, or one value per slice (noise multiple)
            mean_map = result.lam.mean(dim=1)[0].expand(grid).contiguous().cpu().numpy()
        else:
            mean_map = np.full(grid, result.lam, np.float32)
        consistency = measure(SampledFourier(kspace.shape, grid, mask), result.image, y, result.codes,
                              int(lines.sum()) * kspace.shape[1], noise_std, residual_map)
        residual = consistency.residual_map
        return ReconImages(reconstruction=result.image[0].abs().cpu().numpy(),
                           zero_filled=result.x0[0].abs().cpu().numpy(), mean_map=mean_map,
                           data_residual=consistency.data_residual, trust_index=consistency.trust_index,
                           active_per_sample=consistency.active_per_sample,
                           usage_entropy=consistency.usage_entropy, atypicality=consistency.atypicality,
                           residual_map=None if residual is None else residual.cpu().numpy())

    def describe(self) -> str:
        """One line for the log: dictionary, mode, iterations, grid factor, low-pass, device."""
        k, (h, w) = self.dictionary.num_filters, self.dictionary.filter_shape
        return (f"dictionary {self.dictionary.name} (K={k}, {h}x{w}), mode {self.mode}, {self.iterations} "
                f"iterations, super-resolution {self.super_resolution}x, {self.lowpass.kind} low-pass, "
                f"{self.lowpass.describe()}, {self.device}")


def _check_sparsity(sparsity: object) -> None:
    if not isinstance(sparsity, LambdaStrategy):
        raise TypeError(f"sparsity must be a LambdaStrategy (SparsityMaps, FixedLambda, NoiseMultiple, ...), got "
                        f"{type(sparsity).__name__}")
