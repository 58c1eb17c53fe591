"""What both map networks share: the bounded output head, the logits' up-sampling and the chunking
of U-Net calls within a memory bound.

Output scale. With `output_scaling == "absolute"` (default) Lambda lies in (0, lambda_max) in the
units of the data handed to the solver, i.e. normalised units (bright tissue about 1). Sensible
thresholds there are about twice the image noise std, e.g. 0.02-0.5 for SNR 100-4; the light
default lambda_max = 2 leaves headroom for background suppression at low SNR while keeping the
sigmoid out of saturation (the published bound 10 referred to k-space standardised to unit std).
With `output_scaling == "relative"` Lambda is multiplied by the same per-image statistic, which
makes the whole reconstruction equivariant to the scale of the data.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from adacsc.core.network.config import NetworkConfig


class BoundedMapMixin:
    """The bounded output head, the logits' up-sampling and the chunking that MapNetwork and
    V1MapNetwork share (both hold a NetworkConfig as `config`)."""

    config: NetworkConfig

    @property
    def uses_noise(self) -> bool:
        """Whether forward needs the noise level (the reconstructor passes it when True)."""
        return self.config.noise_aware

    @property
    def uses_lowpass(self) -> bool:
        """Whether forward needs the low-pass image x_low (SparsityMaps passes it when True)."""
        return self.config.lowpass_input

    @property
    def sets_lowpass_weight(self) -> bool:
        """Whether the network sets the TV low-pass weight per pixel (`lowpass_weights`)."""
        return self.config.tv_map

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
