"""How Lambda is chosen for one solve: strategies with one method, `thresholds`.

The reconstructor (adacsc.core.reconstruct) hands every strategy the same inputs (`LambdaInputs`):
the normalised zero-filled image x0_n, the synthesis operator D of the solve's grid (whose adjoint
gives D^H x0_n, what a map network looks at) and the noise level sigma_n in normalised units (None
when the caller gave none). A strategy returns Lambda in normalised units, a float or a real tensor
broadcastable to the codes [B, K, H, W]:

  FixedLambda(c)     one value for every coefficient;
  NoiseMultiple(c)   c * sigma_n per slice (follows the noise);
  LambdaMaps(maps)   given maps (e.g. a network's maps rescaled, or maps being optimised);
  SparsityMaps(net)  the maps a NET_Theta network predicts from x0_n and D (told sigma_n when it
                     is noise-aware, and the low-pass part x_low when it reads it).

A strategy may also set the TV low-pass weight per pixel (`lowpass_weights`, asked before the
low-pass part is solved, so its inputs carry no x_low yet): a multiplier map [B, H, W] or None for
the constant weight; only a map network with NetworkConfig.tv_map sets one.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from adacsc.core.convolution import Synthesis
from adacsc.core.network.bounded import BoundedMapMixin

__all__ = ["LambdaInputs", "LambdaStrategy", "FixedLambda", "NoiseMultiple", "LambdaMaps", "SparsityMaps"]


@dataclass(frozen=True)
class LambdaInputs:
    """What a strategy may look at: x0 the normalised zero-filled image (complex [B, H, W]),
    synthesis D on the same grid, device and precision, noise sigma_n [B] or None, and x_low the
    normalised low-pass part (None before it is solved)."""

    x0: torch.Tensor
    synthesis: Synthesis
    noise: torch.Tensor | None
    x_low: torch.Tensor | None = None

    def required_noise(self) -> torch.Tensor:
        """sigma_n, or a clear error for a strategy that follows the noise level."""
        if self.noise is None:
            raise ValueError("this lambda follows the noise level: pass noise_std (k-space noise std per slice)")
        return self.noise


class LambdaStrategy(ABC):
    """A way of choosing Lambda for a solve."""

    @abstractmethod
    def thresholds(self, inputs: LambdaInputs) -> "float | torch.Tensor":
        """Lambda in normalised units: a float or a real tensor broadcastable to [B, K, H, W]."""

    def lowpass_weights(self, inputs: LambdaInputs) -> torch.Tensor | None:
        """The per-pixel multiplier [B, H, W] of the TV low-pass weight, or None (constant weight)."""
        return None


def _non_negative(value: float, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class FixedLambda(LambdaStrategy):
    """One Lambda for every coefficient, in normalised units (bright tissue about 1)."""

    value: float

    def __post_init__(self) -> None:
        _non_negative(self.value, "lambda")

    def thresholds(self, inputs: LambdaInputs) -> float:
        return float(self.value)


@dataclass(frozen=True)
class NoiseMultiple(LambdaStrategy):
    """A scalar lambda that follows the noise: Lambda = value * sigma_n (per slice)."""

    value: float

    def __post_init__(self) -> None:
        _non_negative(self.value, "a noise-relative lambda")

    def thresholds(self, inputs: LambdaInputs) -> torch.Tensor:
        return (self.value * inputs.required_noise()).to(inputs.x0.real.dtype).view(-1, 1, 1, 1)


@dataclass(frozen=True, eq=False)
class LambdaMaps(LambdaStrategy):
    """Given Lambda maps, a real tensor broadcastable to [B, K, H, W] in normalised units (gradients
    flow through them)."""

    maps: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.maps, torch.Tensor) or self.maps.is_complex():
            raise ValueError(f"Lambda maps must be a real tensor, got {type(self.maps).__name__}"
                             + (" (complex)" if isinstance(self.maps, torch.Tensor) else ""))

    def thresholds(self, inputs: LambdaInputs) -> torch.Tensor:
        return self.maps.to(device=inputs.x0.device, dtype=inputs.x0.real.dtype)


@dataclass(frozen=True, eq=False)
class SparsityMaps(LambdaStrategy):
    """Lambda maps predicted per slice by a map network (NET_Theta, adacsc.core.network), on the
    solver's device."""

    network: BoundedMapMixin

    def __post_init__(self) -> None:
        if not isinstance(self.network, BoundedMapMixin):
            raise TypeError(f"SparsityMaps needs a map network (adacsc.core.network), got "
                            f"{type(self.network).__name__}")

    def lowpass_weights(self, inputs: LambdaInputs) -> torch.Tensor | None:
        if not self.network.sets_lowpass_weight:
            return None
        return self.network.lowpass_weights(inputs.x0, inputs.required_noise())

    def thresholds(self, inputs: LambdaInputs) -> torch.Tensor:
        if self.network.uses_lowpass:
            if inputs.x_low is None:
                raise ValueError("this map network reads the low-pass part: x_low is needed")
            maps = self.network(inputs.x0, inputs.synthesis, inputs.required_noise(), x_low=inputs.x_low)
        elif self.network.uses_noise:
            maps = self.network(inputs.x0, inputs.synthesis, inputs.required_noise())
        else:
            maps = self.network(inputs.x0, inputs.synthesis)
        want = (inputs.x0.shape[0], inputs.synthesis.num_filters) + tuple(inputs.x0.shape[-2:])
        if not isinstance(maps, torch.Tensor) or tuple(maps.shape) != want:
            got = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
            raise ValueError(f"the map network must return Lambda maps of shape {want}, got {got}")
        if maps.is_complex():
            raise ValueError("the map network must return real Lambda maps")
        return maps.to(inputs.x0.real.dtype)
