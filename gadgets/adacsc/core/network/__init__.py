"""NET_Theta: the networks that predict one sparsity level map per dictionary filter.

One concept per module: `config` (NetworkConfig, presets), `unet` (the U-Net), `features` (input
scale, filter responses), `bounded` (the output head both networks share), `map_network` (V3, the
deployed dictionary-agnostic network), `tv_weights` (the per-pixel TV weight V3 may set), `v1`
(the ordering-dependent baseline), `kinds` (networks by name). The names below are the public
interface.
"""

from adacsc.core.network.config import PRESETS, NetworkConfig
from adacsc.core.network.features import filter_responses, image_scale, pooled_filter_responses
from adacsc.core.network.kinds import NETWORK_KINDS, build_network
from adacsc.core.network.map_network import MapNetwork
from adacsc.core.network.unet import UNet
from adacsc.core.network.v1 import V1MapNetwork

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
