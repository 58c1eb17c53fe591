"""The per-pixel TV weight a map network may set (`NetworkConfig.tv_map`).

The TV low-pass part smooths with mu = tv_weight * sigma everywhere. A network with tv_map also
predicts a multiplier map w [B, H, W] from x0 alone, per image (so it is the same for any
dictionary, and the filters' order cannot matter):

    inputs = [Re, Im] of compress_snr(avg_pool(x0 / sigma)),  c_b = log(sigma_b / scale_b)
    w = r ** tanh(UNet([Re, Im, c_b])),   r = tv_map_range

in (1/r, r). The U-Net's 1x1 head starts at zero, so an untrained map is 1 everywhere: the trained
constant weight, which lets a fine-tuned network start exactly where its source ended.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adacsc.core.network.config import NetworkConfig
from adacsc.core.network.features import compress_snr, pad_to_multiple
from adacsc.core.network.unet import UNet


def tv_weight_unet(config: NetworkConfig) -> UNet:
    """The U-Net of the TV weight map (3 inputs, 1 output), its head zero: maps start at 1."""
    unet = UNet(3, 1, config.base_channels, config.depth, config.convs_per_stage, config.negative_slope)
    with torch.no_grad():
        unet.head.weight.zero_()
        unet.head.bias.zero_()
    return unet


def tv_weight_inputs(x0: torch.Tensor, sigma: torch.Tensor, scale: torch.Tensor, factor: int) -> torch.Tensor:
    """[B, 3, ceil(H/f), ceil(W/f)]: x0 in noise units, pooled by `factor` and compressed, and the
    noise level relative to the image intensity as a constant channel."""
    batch = x0.shape[0]
    parts = torch.view_as_real(x0 / sigma.view(batch, 1, 1)).permute(0, 3, 1, 2)
    if factor > 1:
        parts = F.avg_pool2d(pad_to_multiple(parts, factor), factor)
    pooled = torch.view_as_complex(parts.permute(0, 2, 3, 1).contiguous())
    parts = torch.view_as_real(compress_snr(pooled)).permute(0, 3, 1, 2)
    level = torch.log(sigma / scale).view(batch, 1, 1, 1).expand(batch, 1, *parts.shape[-2:])
    return torch.cat([parts, level], dim=1)


def bound_tv_weights(logits: torch.Tensor, config: NetworkConfig) -> torch.Tensor:
    """The multiplier r ** tanh(u) in (1/r, r), exactly 1 where u = 0."""
    return config.tv_map_range ** torch.tanh(logits)
