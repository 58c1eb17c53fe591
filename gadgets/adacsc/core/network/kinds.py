"""The network kinds by name and the one place that builds a network of a kind."""

from __future__ import annotations

from torch import nn

from adacsc.core.network.config import NetworkConfig
from adacsc.core.network.map_network import MapNetwork
from adacsc.core.network.v1 import V1MapNetwork


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
