"""The adacsc gadget modules. Data only: the chain (adacsc.chain.config.spec_for) finds a node's
gadget and property spec here; gadgets never import the chain."""

GADGET_MODULES = (
    "adacsc.gadgets.noise_adjust",
    "adacsc.gadgets.readout_buffer",
    "adacsc.gadgets.coil_combination",
    "adacsc.gadgets.csc",
)
"""Every gadget module; each defines SPEC and a function of the same name as its target."""
