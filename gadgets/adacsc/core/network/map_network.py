"""NET_Theta V3 (`MapNetwork`): one shared U-Net applied to every filter response.

`MapNetwork` is NET_Theta V3, the dictionary-agnostic network. For every filter d_k it forms the
filter response r_k = d_k (circular correlation) x0, with the filter centre at the origin, which is
also channel k of D^T x0, which the network asks the synthesis operator for (`Synthesis.adjoint`). Its real and imaginary parts are the two input channels of one shared
U-Net; the filter index is folded into the batch, so

    Lambda[b, k] = lambda_max * sigmoid(UNet([Re r_k, Im r_k] / scale_b))

depends on filter k alone. Permuting the filters permutes the maps identically, and any number of
filters of any odd size can be used with the same weights.

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

Adaptive low-pass (`NetworkConfig.lowpass_input`, `NetworkConfig.tv_map`, the "noise-tv" preset).
The codes model what the low-pass part leaves, so the network may also read the low-pass image:
the filter responses of x_low get the same features as those of x0 (two more input channels, after
the three above), and a second, per-image U-Net may set the TV weight per pixel
(adacsc.core.network.tv_weights; adacsc.core.lambdas.SparsityMaps asks for `lowpass_weights`
before the TV solve and passes x_low to forward). Both keep the promises above: x_low and the
weight map are per image, and each filter's map still depends on that filter alone.
"""

from __future__ import annotations

import torch
from torch import nn

from adacsc.core.convolution import Synthesis
from adacsc.core.network.bounded import BoundedMapMixin
from adacsc.core.network.config import NetworkConfig
from adacsc.core.network.features import check_image, compress_snr, image_scale, pooled_filter_responses
from adacsc.core.network.tv_weights import bound_tv_weights, tv_weight_inputs, tv_weight_unet
from adacsc.core.network.unet import UNet
from adacsc.core.scaling import noise_levels


class MapNetwork(BoundedMapMixin, nn.Module):
    """NET_Theta V3: one shared 2-in/1-out U-Net applied to every filter response.

    forward(x0 [B, H, W] complex64, filters: the synthesis operator D of the K filters (its adjoint
    gives the responses), noise [B] (noise-aware networks only), x_low [B, H, W] (lowpass_input
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
        self.tv_unet: UNet | None = tv_weight_unet(cfg) if cfg.tv_map else None

    @property
    def lambda_max(self) -> float:
        return self.config.lambda_max

    def lowpass_weights(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The per-pixel multiplier [B, H, W] of the TV low-pass weight (adacsc.core.network.tv_weights)."""
        if self.tv_unet is None:
            raise ValueError("this network does not set the TV weight (NetworkConfig.tv_map is off)")
        x0 = check_image(x0)
        batch, height, width = x0.shape
        self._check_size(height, width)
        scale = image_scale(x0, self.config.input_normalization)
        sigma = noise_levels(noise, batch, x0.device)
        logits = self.tv_unet(tv_weight_inputs(x0, sigma, scale, self.config.downsample))
        return bound_tv_weights(self._full_resolution(logits, height, width)[:, 0], self.config)

    def forward(self, x0: torch.Tensor, filters: Synthesis, noise: torch.Tensor | None = None,
                x_low: torch.Tensor | None = None) -> torch.Tensor:
        x0 = check_image(x0)
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
            responses = compress_snr(responses)
        # fold K into the batch; [Re, Im] as channels: [B*K, 2, h, w] (a channels-last view)
        inputs = torch.view_as_real(responses).reshape(batch * k, low_h, low_w, 2).permute(0, 3, 1, 2)
        if sigma is not None:
            level = torch.log(sigma / scale).repeat_interleave(k).view(batch * k, 1, 1, 1)
            inputs = torch.cat([inputs, level.expand(batch * k, 1, low_h, low_w)], dim=1)
        if self.config.lowpass_input:
            if x_low is None:
                raise ValueError("this network also reads the low-pass part: pass x_low")
            x_low = check_image(x_low)
            if x_low.shape != x0.shape:
                raise ValueError(f"x_low must have the shape of x0 {tuple(x0.shape)}, got {tuple(x_low.shape)}")
            low = pooled_filter_responses(x_low / sigma.view(batch, 1, 1), filters, self.config.downsample)
            low = torch.view_as_real(compress_snr(low)).reshape(batch * k, low_h, low_w, 2).permute(0, 3, 1, 2)
            inputs = torch.cat([inputs, low], dim=1)
        chunk = self._chunk_size(inputs.shape[1], height, width)
        logits = [
            self._full_resolution(self.unet(inputs[start : start + chunk]), height, width)
            for start in range(0, batch * k, chunk)
        ]
        u = logits[0] if len(logits) == 1 else torch.cat(logits, dim=0)
        maps = self._bound(u.reshape(batch, k, height, width), scale)
        return maps if sigma is None else maps * sigma.view(batch, 1, 1, 1)
