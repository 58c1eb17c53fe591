"""The adacsc gadgets and their property specs, found from a chain node's module."""

import importlib
from typing import Any

from adacsc.gadgets.properties import PropertySpec

GADGET_MODULES = (
    "adacsc.gadgets.noise_adjust",
    "adacsc.gadgets.readout_buffer",
    "adacsc.gadgets.coil_combination",
    "adacsc.gadgets.csc",
)
"""Every gadget module; each defines SPEC and a function of the same name as its target."""


def spec_for(node: Any) -> PropertySpec:
    """The PropertySpec of the gadget a chain node runs (its module's SPEC)."""
    from adacsc.chain.config import ChainError

    if node.module not in GADGET_MODULES:
        raise ChainError(f"{node.module!r} is not an adacsc gadget module ({', '.join(GADGET_MODULES)})")
    module = importlib.import_module(node.module)
    if not callable(getattr(module, node.target, None)):
        raise ChainError(f"gadget module {node.module!r} has no target {node.target!r}")
    return module.SPEC
