"""Architecture and output bounds of a map network (`NetworkConfig`) and the named presets.

Cost. The published U-Net (32 base channels, full resolution) runs K times per slice and dominates
the CPU time. The default "light" configuration uses 8 base channels and runs the U-Net on the
responses average-pooled by 2; the logits are bilinearly up-sampled to the full grid before the
sigmoid. `NetworkConfig.preset("published")` selects the published configuration.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any


_INPUT_NORMALIZATIONS = ("percentile", "rms", "none")
_OUTPUT_SCALINGS = ("absolute", "relative")


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture and output bounds of a map network; serialisable to JSON.

    base_channels: channels of the first U-Net stage (doubled at every max-pool).
    depth: number of max-pool steps (published: 1, i.e. two encoder stages of widths 32 and 64).
    convs_per_stage: 3x3 conv + LeakyReLU pairs per stage (published: 2).
    downsample: the U-Net runs on the filter responses average-pooled by this factor (1 = full
        resolution); the logits are bilinearly up-sampled back to the full grid.
    lambda_max: upper bound of Lambda (Lambda = lambda_max * sigmoid(u)).
    initial_lambda: if given, the bias of the last 1x1 conv is initialised so that an untrained
        network outputs about this value (training starts from a sensible threshold).
    negative_slope: slope of the LeakyReLU.
    input_normalization: "percentile" (divide by the per-slice 99th percentile of |x0|, as
        adacsc.core.scaling), "rms" (by the RMS of |x0|) or "none".
    output_scaling: "absolute" or "relative" (see the module docstring); ignored when noise_aware.
    noise_aware: the network takes the noise level and its maps are in units of it (see the
        module docstring); lambda_max and initial_lambda are then multiples of sigma.
    max_chunk_mb: bound on the activation memory of one U-Net call; the (B*K) maps are processed
        in chunks of equal size (only the last may be smaller) to respect it.
    lowpass_input: the U-Net also sees the filter's response to the low-pass image x_low (two more
        input channels, the same features as those of x0); noise-aware networks only.
    tv_map: the network also sets the TV low-pass weight per pixel (adacsc.core.network.tv_weights:
        a second, per-image U-Net on x0; a multiplier of the trained TV weight in
        (1/tv_map_range, tv_map_range)); noise-aware networks only, for the TV low-pass.
    """

    base_channels: int = 8
    depth: int = 2
    convs_per_stage: int = 2
    downsample: int = 2
    lambda_max: float = 2.0
    initial_lambda: float | None = 0.1
    negative_slope: float = 0.01
    input_normalization: str = "percentile"
    output_scaling: str = "absolute"
    noise_aware: bool = False
    max_chunk_mb: float = 256.0
    lowpass_input: bool = False
    tv_map: bool = False
    tv_map_range: float = 4.0

    def __post_init__(self) -> None:
        def _int(name: str, minimum: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"NetworkConfig.{name} must be an integer >= {minimum}, got {value!r}")

        _int("base_channels", 1)
        _int("depth", 0)
        _int("convs_per_stage", 1)
        _int("downsample", 1)
        for name in ("lambda_max", "negative_slope", "max_chunk_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"NetworkConfig.{name} must be a finite number, got {value!r}")
        if self.lambda_max <= 0:
            raise ValueError(f"NetworkConfig.lambda_max must be > 0, got {self.lambda_max!r}")
        if self.negative_slope < 0:
            raise ValueError(f"NetworkConfig.negative_slope must be >= 0, got {self.negative_slope!r}")
        if self.max_chunk_mb <= 0:
            raise ValueError(f"NetworkConfig.max_chunk_mb must be > 0, got {self.max_chunk_mb!r}")
        if self.initial_lambda is not None:
            value = self.initial_lambda
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < self.lambda_max):
                raise ValueError(
                    f"NetworkConfig.initial_lambda must lie in (0, lambda_max={self.lambda_max}), got {value!r}"
                )
        if self.input_normalization not in _INPUT_NORMALIZATIONS:
            raise ValueError(
                f"NetworkConfig.input_normalization must be one of {_INPUT_NORMALIZATIONS}, "
                f"got {self.input_normalization!r}"
            )
        if not isinstance(self.noise_aware, bool):
            raise ValueError(f"NetworkConfig.noise_aware must be a boolean, got {self.noise_aware!r}")
        for name in ("lowpass_input", "tv_map"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"NetworkConfig.{name} must be a boolean, got {getattr(self, name)!r}")
            if getattr(self, name) and not self.noise_aware:
                raise ValueError(f"NetworkConfig.{name} needs a noise-aware network (noise_aware=True)")
        value = self.tv_map_range
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (1 < value < math.inf):
            raise ValueError(f"NetworkConfig.tv_map_range must be a finite number > 1, got {value!r}")
        if self.output_scaling not in _OUTPUT_SCALINGS:
            raise ValueError(
                f"NetworkConfig.output_scaling must be one of {_OUTPUT_SCALINGS}, got {self.output_scaling!r}"
            )

    # -- presets and serialisation -------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "NetworkConfig":
        """A named configuration ("light" or "published"), optionally with fields overridden."""
        try:
            base = PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown network preset {name!r}; known: {sorted(PRESETS)}") from None
        return dataclasses.replace(base, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NetworkConfig":
        if not isinstance(data, dict):
            raise ValueError(f"network config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown network config keys {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "NetworkConfig":
        return cls.from_dict(json.loads(text))


PRESETS: dict[str, NetworkConfig] = {
    # Default: about 60x fewer multiply-adds per map than the published network.
    "light": NetworkConfig(
        base_channels=8, depth=2, convs_per_stage=2, downsample=2, lambda_max=2.0, initial_lambda=0.1
    ),
    # The configuration of the published code: two encoder stages (widths 32 and 64, one max-pool
    # level), full resolution, bounds (0, 10).
    "published": NetworkConfig(
        base_channels=32, depth=1, convs_per_stage=2, downsample=1, lambda_max=10.0, initial_lambda=None
    ),
    # The light network told the noise level: maps in units of the k-space noise std.
    "noise": NetworkConfig(
        base_channels=8, depth=2, convs_per_stage=2, downsample=2, lambda_max=8.0, initial_lambda=1.5,
        noise_aware=True,
    ),
    # The noise network that also sees the low-pass image's responses and sets the TV weight per
    # pixel (fine-tuned from the "noise" weights: the new parts start as no-ops).
    "noise-tv": NetworkConfig(
        base_channels=8, depth=2, convs_per_stage=2, downsample=2, lambda_max=8.0, initial_lambda=1.5,
        noise_aware=True, lowpass_input=True, tv_map=True,
    ),
}
