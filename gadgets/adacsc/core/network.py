"""NET_Theta: the networks that predict one sparsity level map per dictionary filter.

`MapNetwork` is NET_Theta V3, the dictionary-agnostic network. For every filter d_k it forms the
filter response r_k = d_k (circular correlation) x0, with the filter centre at the origin, which is
also channel k of D^T x0. Its real and imaginary parts are the two input channels of one shared
U-Net; the filter index is folded into the batch, so

    Lambda[b, k] = lambda_max * sigmoid(UNet([Re r_k, Im r_k] / scale_b))

depends on filter k alone. Permuting the filters permutes the maps identically, and any number of
filters of any odd size can be used with the same weights.

`V1MapNetwork` is the ordering-dependent baseline (x0 -> K maps through one U-Net with K output
channels); it exists for the permutation experiment and the evaluation.

Input scale. Both networks divide x0 by a per-image statistic that does not depend on the filters
(`NetworkConfig.input_normalization`): by default "percentile", the 99th percentile of |x0| over the
slice, the statistic adacsc.core.scaling.robust_scale uses to normalise the solver's data. The
reconstructor already hands over x0_n with that percentile = 1, so there the normalisation is a
no-op and the network sees exactly the solver's units; called on raw data it makes the logits u
invariant to the scale of x0. (If the reconstructor normalises a whole volume with one scale,
per_slice_scale=False, use input_normalization="none" so that input and Lambda share units.)

Output scale. With `output_scaling == "absolute"` (default) Lambda lies in (0, lambda_max) in the
units of the data handed to the solver, i.e. normalised units (bright tissue about 1). Sensible
thresholds there are about twice the image noise std, e.g. 0.02-0.5 for SNR 100-4; the light
default lambda_max = 2 leaves headroom for background suppression at low SNR while keeping the
sigmoid out of saturation (the published bound 10 referred to k-space standardised to unit std).
With `output_scaling == "relative"` Lambda is multiplied by the same per-image statistic, which
makes the whole reconstruction equivariant to the scale of the data.

Noise-aware maps (`NetworkConfig.noise_aware`). The threshold that separates signal from noise
scales with the noise level, so a noise-aware network is told sigma_b, the k-space noise std of
slice b in the units of x0 (the reconstructor passes it in normalised units), and works in noise
units throughout:

    z_k = r_k / sigma_b,   features = z_k * asinh(|z_k|) / |z_k|  (Re, Im),   c_b = log(sigma_b / scale_b)
    Lambda[b, k] = sigma_b * lambda_max * sigmoid(UNet([Re, Im, c_b]))

The features are the responses' SNR, compressed logarithmically above 1 (phase kept); the constant
third channel is the noise level relative to the image intensity. Lambda is in units of sigma, so
doubling the noise doubles the maps unless the network decides otherwise. Permutation
equivariance, any K and any odd filter size are kept (sigma is per image, shared by all filters),
and the maps scale with the data (every input is a ratio of quantities in the same units).

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

import torch
import torch.nn.functional as F
from torch import nn

from adacsc.core.convolution import as_filter_tensor, filter_spectra
from adacsc.core.scaling import SCALE_PERCENTILE, noise_levels, robust_scale

__all__ = [
    "NetworkConfig",
    "PRESETS",
    "UNet",
    "MapNetwork",
    "V1MapNetwork",
    "filter_responses",
    "pooled_filter_responses",
    "image_scale",
    "build_network",
    "NETWORK_KINDS",
]

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
        input channels, same features as those of x0); noise-aware networks only.
    tv_map: the network also sets the TV low-pass weight per pixel (a second, per-image U-Net on
        x0; a multiplier of the trained TV weight in (1/tv_map_range, tv_map_range)); noise-aware
        networks only, for the TV low-pass.
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


# ---------------------------------------------------------------------------------------------
# U-Net
# ---------------------------------------------------------------------------------------------
class _Stage(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, n_convs: int, slope: float) -> None:
        layers: list[nn.Module] = []
        for i in range(n_convs):
            layers.append(nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, kernel_size=3, padding=1))
            layers.append(nn.LeakyReLU(slope, inplace=True))
        super().__init__(*layers)


class UNet(nn.Module):
    """Plain 2-D U-Net: stages of 3x3 conv + LeakyReLU, max-pool down, bilinear up, skip
    connections by concatenation, final 1x1 conv. No normalisation layers, so every batch element
    is processed independently of the others. Any input size >= 2**depth works (the up-sampled
    features are resized to the size of their skip connection)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        base_channels: int = 32,
        depth: int = 2,
        convs_per_stage: int = 2,
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        self.depth = depth
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.encoder = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.encoder.append(_Stage(previous, width, convs_per_stage, negative_slope))
            previous = width
        self.decoder = nn.ModuleList()
        for level in reversed(range(depth)):
            in_channels_up = widths[level + 1] + widths[level]  # up-sampled features + skip
            self.decoder.append(_Stage(in_channels_up, widths[level], convs_per_stage, negative_slope))
        self.head = nn.Conv2d(widths[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last runs the small-channel convolutions about twice as fast on CPU (oneDNN)
        x = x.contiguous(memory_format=torch.channels_last)
        skips = []
        for level, stage in enumerate(self.encoder):
            if level > 0:
                x = F.max_pool2d(x, 2)
            x = stage(x)
            skips.append(x)
        skips.pop()  # the bottleneck output is x itself
        for stage in self.decoder:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            # stage(cat([x, skip])) with the first convolution split over the two inputs: the
            # same result without materialising the concatenation (faster on CPU)
            first = stage[0]
            up_channels = x.shape[1]
            x = F.conv2d(x, first.weight[:, :up_channels], None, padding=1).add_(
                F.conv2d(skip, first.weight[:, up_channels:], first.bias, padding=1)
            )
            for layer in list(stage)[1:]:
                x = layer(x)
        return self.head(x)


# ---------------------------------------------------------------------------------------------
# helpers shared by both networks
# ---------------------------------------------------------------------------------------------
def _check_image(x0: torch.Tensor) -> torch.Tensor:
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f"x0 must be a torch.Tensor, got {type(x0).__name__}")
    if x0.ndim != 3:
        raise ValueError(f"x0 must have shape [B, H, W], got {tuple(x0.shape)}")
    return x0.to(torch.complex64)


def image_scale(x0: torch.Tensor, mode: str = "percentile") -> torch.Tensor:
    """Per-image scale [B] of x0 [B, H, W], a constant (no gradient): the 99th percentile of |x0|
    ("percentile", adacsc.core.scaling.robust_scale; 1 for an all-zero slice), the RMS of |x0|
    ("rms") or ones ("none")."""
    if mode == "none":
        return torch.ones(x0.shape[0], dtype=torch.float32, device=x0.device)
    if mode == "percentile":
        return robust_scale(x0.detach(), SCALE_PERCENTILE, per_slice=True).to(torch.float32)
    if mode != "rms":
        raise ValueError(f"unknown input normalisation {mode!r}")
    power = (x0.real.detach().float() ** 2 + x0.imag.detach().float() ** 2).mean(dim=(-2, -1))
    return torch.where(power > 0, power.sqrt(), torch.ones_like(power))


def filter_responses(x0: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """r[b, k] = d_k (circular correlation) x0[b], the filter centre at the origin.

    r[b, k, y, x] = sum_{i, j} d_k[c_y + i, c_x + j] * x0[b, y + i, x + j] (indices modulo H, W),
    i.e. channel k of D^T x0 for D s = sum_k d_k * s_k (circular convolution). Computed with one
    FFT of x0, K filter FFTs and one batched inverse FFT. x0 [B, H, W] complex, filters [K, h, w]
    real; returns [B, K, H, W] complex64.
    """
    x0 = _check_image(x0)
    _, height, width = x0.shape
    transfer = _correlation_transfer(filters, height, width, x0.device)
    return torch.fft.ifft2(torch.fft.fft2(x0)[:, None] * transfer[None])


def _correlation_transfer(filters: torch.Tensor, height: int, width: int, device: torch.device) -> torch.Tensor:
    """[K, H, W] complex: the DFT transfer functions of correlation with each filter (centre at
    the origin). Correlation with a real filter = multiplication by its conjugate spectrum."""
    return filter_spectra(as_filter_tensor(filters).to(device=device, dtype=torch.float32), (height, width)).conj()


def pooled_filter_responses(x0: torch.Tensor, filters: torch.Tensor, factor: int) -> torch.Tensor:
    """filter_responses(x0, filters) average-pooled by `factor`: [B, K, ceil(H/f), ceil(W/f)].

    Pooling windows start at pixel 0 (as F.avg_pool2d); where H or W is not a multiple of the
    factor the responses are first padded circularly. When both are multiples the pooling is done
    in the Fourier domain (box transfer function, spectrum folded onto the coarse grid, one small
    inverse FFT), which avoids the full-size inverse FFT.
    """
    if factor == 1:
        return filter_responses(x0, filters)
    x0 = _check_image(x0)
    batch, height, width = x0.shape
    if height % factor or width % factor:
        full = filter_responses(x0, filters)
        k = full.shape[1]
        parts = torch.view_as_real(full).reshape(batch * k, height, width, 2).permute(0, 3, 1, 2)
        pooled = F.avg_pool2d(_pad_to_multiple(parts, factor), factor)
        pooled = pooled.permute(0, 2, 3, 1).contiguous()
        return torch.view_as_complex(pooled).reshape(batch, k, *pooled.shape[1:3])

    def box(n: int) -> torch.Tensor:
        # transfer function of y[i] = (1/f) sum_{a<f} x[i + a]
        freqs = torch.arange(n, device=x0.device, dtype=torch.float64)
        offsets = torch.arange(factor, device=x0.device, dtype=torch.float64)
        phase = 2 * math.pi * freqs[:, None] * offsets[None, :] / n
        return torch.polar(torch.ones_like(phase), phase).mean(dim=1).to(torch.complex64)

    transfer = _correlation_transfer(filters, height, width, x0.device)
    transfer = transfer * (box(height)[:, None] * box(width)[None, :])
    spectra = torch.fft.fft2(x0)[:, None] * transfer[None]  # [B, K, H, W]
    low_h, low_w = height // factor, width // factor
    # fold the spectrum onto the coarse grid: Z[i] = sum_j S[i + j * H/f] (per axis); slice
    # additions are much faster than a strided reduction
    rows = spectra[..., :low_h, :]
    for j in range(1, factor):
        rows = rows + spectra[..., j * low_h : (j + 1) * low_h, :]
    folded = rows[..., :low_w]
    for j in range(1, factor):
        folded = folded + rows[..., j * low_w : (j + 1) * low_w]
    return torch.fft.ifft2(folded) / (factor * factor)


def _pad_to_multiple(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Circularly pad the last two axes up to a multiple of `factor` (the images are periodic)."""
    height, width = x.shape[-2:]
    pad_h = (-height) % factor
    pad_w = (-width) % factor
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="circular")


def _compress(z: torch.Tensor) -> torch.Tensor:
    """z * asinh(|z|) / |z|: a complex SNR map compressed logarithmically above 1, phase kept."""
    magnitude = z.abs()
    return z * (torch.asinh(magnitude) / magnitude.clamp_min(1e-12))


class _BoundedMapMixin:
    config: NetworkConfig

    def _init_head(self, head: nn.Conv2d) -> None:
        if self.config.initial_lambda is not None:
            p = self.config.initial_lambda / self.config.lambda_max
            with torch.no_grad():
                head.bias.fill_(math.log(p / (1.0 - p)))

    def _check_size(self, height: int, width: int) -> None:
        factor = self.config.downsample
        minimum = factor * 2**self.config.depth
        if height < minimum or width < minimum:
            raise ValueError(
                f"image {(height, width)} too small for downsample={factor} and depth="
                f"{self.config.depth} (needs at least {minimum} pixels per axis)"
            )

    def _full_resolution(self, logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
        factor = self.config.downsample
        if factor == 1:
            return logits
        padded_h = height + (-height) % factor
        padded_w = width + (-width) % factor
        logits = F.interpolate(logits, size=(padded_h, padded_w), mode="bilinear", align_corners=False)
        return logits[..., :height, :width]

    def _bound(self, logits: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        maps = self.config.lambda_max * torch.sigmoid(logits)
        if self.config.output_scaling == "relative" and not self.config.noise_aware:
            maps = maps * scale.view(-1, *([1] * (maps.ndim - 1)))
        return maps

    def _chunk_size(self, channels_in: int, height: int, width: int) -> int:
        """Maps per U-Net call such that the activations stay within max_chunk_mb (estimate)."""
        cfg = self.config
        low_h = -(-height // cfg.downsample)
        low_w = -(-width // cfg.downsample)
        # the widest activations live at the first stage (base channels, full U-Net resolution);
        # about eight such tensors are alive at once (skip, two decoder partial sums, ...)
        per_map = 4 * low_h * low_w * (channels_in + 8 * cfg.base_channels)
        return max(1, int(cfg.max_chunk_mb * 2**20 // per_map))


# ---------------------------------------------------------------------------------------------
# NET_Theta V3
# ---------------------------------------------------------------------------------------------
class MapNetwork(_BoundedMapMixin, nn.Module):
    """NET_Theta V3: one shared 2-in/1-out U-Net applied to every filter response.

    forward(x0 [B, H, W] complex64, filters [K, h, w] float32, noise [B] (noise-aware networks
    only)) -> Lambda [B, K, H, W] float32 in (0, lambda_max) (times the input scale for
    output_scaling="relative", times noise for noise-aware networks). Any K, any odd filter size.
    """

    kind = "v3"

    def __init__(self, config: NetworkConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else NetworkConfig()
        cfg = self.config
        channels = (3 if cfg.noise_aware else 2) + (2 if cfg.lowpass_input else 0)
        self.unet = UNet(channels, 1, cfg.base_channels, cfg.depth, cfg.convs_per_stage, cfg.negative_slope)
        self._init_head(self.unet.head)
        self.tv_unet: UNet | None = None
        if cfg.tv_map:
            self.tv_unet = UNet(3, 1, cfg.base_channels, cfg.depth, cfg.convs_per_stage, cfg.negative_slope)
            with torch.no_grad():  # an untrained TV map is 1 everywhere: the trained constant weight
                self.tv_unet.head.weight.zero_()
                self.tv_unet.head.bias.zero_()

    @property
    def lambda_max(self) -> float:
        return self.config.lambda_max

    @property
    def uses_noise(self) -> bool:
        """Whether forward needs the noise level (the reconstructor passes it when True)."""
        return self.config.noise_aware

    @property
    def uses_lowpass(self) -> bool:
        """Whether forward needs the low-pass image x_low (the reconstructor passes it when True)."""
        return self.config.lowpass_input

    @property
    def sets_lowpass_weight(self) -> bool:
        """Whether the network sets the TV low-pass weight per pixel (`lowpass_weights`)."""
        return self.config.tv_map

    def lowpass_weights(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The per-pixel multiplier [B, H, W] of the TV low-pass weight, in (1/r, r) for
        r = tv_map_range, from x0 alone (per image: the same for any dictionary).

        Input: x0 in noise units, average-pooled, compressed as the filter responses, and the
        noise level relative to the image intensity; output r ** tanh(u), 1 where u = 0."""
        if self.tv_unet is None:
            raise ValueError("this network does not set the TV weight (NetworkConfig.tv_map is off)")
        x0 = _check_image(x0)
        batch, height, width = x0.shape
        self._check_size(height, width)
        scale = image_scale(x0, self.config.input_normalization)
        sigma = noise_levels(noise, batch, x0.device)
        inputs = torch.view_as_real(x0 / sigma.view(batch, 1, 1)).permute(0, 3, 1, 2)
        factor = self.config.downsample
        if factor > 1:
            inputs = F.avg_pool2d(_pad_to_multiple(inputs, factor), factor)
        inputs = torch.view_as_real(_compress(torch.view_as_complex(inputs.permute(0, 2, 3, 1).contiguous())))
        inputs = inputs.permute(0, 3, 1, 2)
        level = torch.log(sigma / scale).view(batch, 1, 1, 1).expand(batch, 1, *inputs.shape[-2:])
        u = self._full_resolution(self.tv_unet(torch.cat([inputs, level], dim=1)), height, width)[:, 0]
        return self.config.tv_map_range ** torch.tanh(u)

    def forward(self, x0: torch.Tensor, filters: torch.Tensor, noise: torch.Tensor | None = None,
                x_low: torch.Tensor | None = None) -> torch.Tensor:
        x0 = _check_image(x0)
        batch, height, width = x0.shape
        self._check_size(height, width)
        scale = image_scale(x0, self.config.input_normalization)  # [B]
        sigma = None
        if self.config.noise_aware:
            if noise is None:
                raise ValueError("this network is noise-aware: pass the noise level (k-space noise std per image)")
            sigma = noise_levels(noise, batch, x0.device)
        divisor = scale if sigma is None else sigma
        # responses in the network's input units, pooled to the U-Net resolution: [B, K, h, w]
        responses = pooled_filter_responses(x0 / divisor.view(batch, 1, 1), filters, self.config.downsample)
        k, low_h, low_w = responses.shape[1:]
        if sigma is not None:  # SNR, compressed above 1 with its phase kept
            responses = _compress(responses)
        # fold K into the batch; [Re, Im] as channels: [B*K, 2, h, w] (a channels-last view)
        inputs = torch.view_as_real(responses).reshape(batch * k, low_h, low_w, 2).permute(0, 3, 1, 2)
        if sigma is not None:
            level = torch.log(sigma / scale).repeat_interleave(k).view(batch * k, 1, 1, 1)
            inputs = torch.cat([inputs, level.expand(batch * k, 1, low_h, low_w)], dim=1)
        if self.config.lowpass_input:
            if x_low is None:
                raise ValueError("this network also reads the low-pass part: pass x_low")
            x_low = _check_image(x_low)
            if x_low.shape != x0.shape:
                raise ValueError(f"x_low must have the shape of x0 {tuple(x0.shape)}, got {tuple(x_low.shape)}")
            low = _compress(pooled_filter_responses(x_low / sigma.view(batch, 1, 1), filters, self.config.downsample))
            low = torch.view_as_real(low).reshape(batch * k, low_h, low_w, 2).permute(0, 3, 1, 2)
            inputs = torch.cat([inputs, low], dim=1)
        chunk = self._chunk_size(inputs.shape[1], height, width)
        logits = [
            self._full_resolution(self.unet(inputs[start : start + chunk]), height, width)
            for start in range(0, batch * k, chunk)
        ]
        u = logits[0] if len(logits) == 1 else torch.cat(logits, dim=0)
        maps = self._bound(u.reshape(batch, k, height, width), scale)
        return maps if sigma is None else maps * sigma.view(batch, 1, 1, 1)


# ---------------------------------------------------------------------------------------------
# NET_Theta V1 (ordering-dependent baseline)
# ---------------------------------------------------------------------------------------------
class V1MapNetwork(_BoundedMapMixin, nn.Module):
    """NET_Theta V1: x0 -> K maps with one U-Net (2 input channels, K output channels).

    Tied to the number of filters and to their order: output channel k is the map of whatever
    filter sits at position k. `filters` is accepted for interface compatibility with MapNetwork
    (only its length is checked).
    """

    kind = "v1"

    def __init__(self, num_filters: int, config: NetworkConfig | None = None) -> None:
        super().__init__()
        if isinstance(num_filters, bool) or not isinstance(num_filters, int) or num_filters < 1:
            raise ValueError(f"num_filters must be a positive integer, got {num_filters!r}")
        self.num_filters = num_filters
        self.config = config if config is not None else NetworkConfig()
        if self.config.noise_aware:
            raise ValueError("the V1 baseline network has no noise-aware variant")
        cfg = self.config
        self.unet = UNet(2, num_filters, cfg.base_channels, cfg.depth, cfg.convs_per_stage, cfg.negative_slope)
        self._init_head(self.unet.head)

    @property
    def lambda_max(self) -> float:
        return self.config.lambda_max

    def forward(self, x0: torch.Tensor, filters: torch.Tensor | None = None) -> torch.Tensor:
        x0 = _check_image(x0)
        batch, height, width = x0.shape
        if filters is not None:
            if filters.ndim != 3 or filters.shape[0] != self.num_filters:
                raise ValueError(
                    f"V1 network was built for {self.num_filters} filters, got filters of shape "
                    f"{tuple(filters.shape)}"
                )
        self._check_size(height, width)
        scale = image_scale(x0, self.config.input_normalization)
        normalised = x0 / scale.view(batch, 1, 1)
        inputs = torch.view_as_real(normalised).permute(0, 3, 1, 2)  # [B, 2, H, W]
        factor = self.config.downsample
        if factor > 1:
            inputs = F.avg_pool2d(_pad_to_multiple(inputs, factor), factor)
        chunk = self._chunk_size(2 + self.num_filters, height, width)
        logits = [
            self._full_resolution(self.unet(inputs[start : start + chunk]), height, width)
            for start in range(0, batch, chunk)
        ]
        u = logits[0] if len(logits) == 1 else torch.cat(logits, dim=0)
        return self._bound(u, scale)


NETWORK_KINDS = ("v3", "v1")


def build_network(kind: str, config: NetworkConfig, num_filters: int | None = None) -> nn.Module:
    """Instantiate a network of `kind` ("v3" or "v1"; v1 needs num_filters)."""
    if kind == "v3":
        return MapNetwork(config)
    if kind == "v1":
        if num_filters is None:
            raise ValueError("a V1 network needs num_filters")
        return V1MapNetwork(num_filters, config)
    raise ValueError(f"unknown network kind {kind!r}; known: {list(NETWORK_KINDS)}")
