"""Start a map network from trained weights of a smaller configuration (fine-tuning).

A network that adds parts to a trained one (NetworkConfig.lowpass_input: two more input channels;
NetworkConfig.tv_map: a TV-weight U-Net whose head starts at zero) begins as an exact copy of the
trained network: every shared tensor is copied, the new input channels of the first convolution
get zero weights, and the new parts keep their no-op initialisation. Training then moves only as
far from the trained model as the data asks.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from adacsc.core.network import MapNetwork

__all__ = ["ADDED_FIELDS", "ADDED_PARTS", "start_from"]

log = logging.getLogger(__name__)

#: the NetworkConfig fields a fine-tuned network may add to its source's configuration
ADDED_FIELDS = ("lowpass_input", "tv_map", "tv_map_range")
#: the sub-networks a fine-tuned network may add (parameter name prefixes; Schedule.lr_new trains them)
ADDED_PARTS = ("tv_unet.",)


def start_from(network: MapNetwork, source: MapNetwork) -> list[str]:
    """Copy `source`'s weights into `network` (in place); returns the names of the tensors that
    kept their initialisation. Refuses configurations that differ in anything but ADDED_FIELDS,
    and tensors whose shapes differ other than by added input channels."""
    if not isinstance(network, MapNetwork) or not isinstance(source, MapNetwork):
        raise TypeError("fine-tuning starts a V3 MapNetwork from another V3 MapNetwork")
    base = dataclasses.replace(network.config, **{name: getattr(source.config, name) for name in ADDED_FIELDS})
    if base != source.config:
        raise ValueError("the weights to start from have another network configuration than this run's "
                         f"(apart from {list(ADDED_FIELDS)}): {source.config} vs {network.config}")
    target = network.state_dict()
    kept = sorted(set(target) - set(source.state_dict()))
    with torch.no_grad():
        for name, tensor in source.state_dict().items():
            if name not in target:
                raise ValueError(f"tensor {name!r} of the weights to start from has no place in this network")
            into = target[name]
            if into.shape == tensor.shape:
                into.copy_(tensor)
            elif into.ndim == 4 and into.shape[0] == tensor.shape[0] and into.shape[2:] == tensor.shape[2:] \
                    and into.shape[1] > tensor.shape[1]:
                # a convolution with added input channels (appended after the trained ones)
                into.zero_()
                into[:, :tensor.shape[1]].copy_(tensor)
            else:
                raise ValueError(f"tensor {name!r}: shape {list(tensor.shape)} cannot start {list(into.shape)}")
    log.info("started from trained weights; %d new tensors keep their initialisation", len(kept))
    return kept
