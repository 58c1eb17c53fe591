"""NET_Theta V1 (`V1MapNetwork`), the ordering-dependent baseline.

`V1MapNetwork` is the ordering-dependent baseline (x0 -> K maps through one U-Net with K output
channels); it exists for the permutation experiment and the evaluation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adacsc.core.convolution import Synthesis
from adacsc.core.network.bounded import BoundedMapMixin
from adacsc.core.network.config import NetworkConfig
from adacsc.core.network.features import check_image, image_scale, pad_to_multiple
from adacsc.core.network.unet import UNet


class V1MapNetwork(BoundedMapMixin, nn.Module):
    """NET_Theta V1: x0 -> K maps with one U-Net (2 input channels, K output channels).

    Tied to the number of filters and to their order: output channel k is the map of whatever
    filter sits at position k. `filters` (the synthesis operator) is accepted for interface
    compatibility with MapNetwork (only its number of filters is checked).
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

    def forward(self, x0: torch.Tensor, filters: Synthesis | None = None) -> torch.Tensor:
        x0 = check_image(x0)
        batch, height, width = x0.shape
        if filters is not None and filters.num_filters != self.num_filters:
            raise ValueError(f"V1 network was built for {self.num_filters} filters, got {filters.num_filters}")
        self._check_size(height, width)
        scale = image_scale(x0, self.config.input_normalization)
        normalised = x0 / scale.view(batch, 1, 1)
        inputs = torch.view_as_real(normalised).permute(0, 3, 1, 2)  # [B, 2, H, W]
        factor = self.config.downsample
        if factor > 1:
            inputs = F.avg_pool2d(pad_to_multiple(inputs, factor), factor)
        chunk = self._chunk_size(2 + self.num_filters, height, width)
        logits = [
            self._full_resolution(self.unet(inputs[start : start + chunk]), height, width)
            for start in range(0, batch, chunk)
        ]
        u = logits[0] if len(logits) == 1 else torch.cat(logits, dim=0)
        return self._bound(u, scale)
