"""Gadgets: one module per gadget, each a descriptor (adacsc.gadgets.contract.Gadget) in
adacsc.gadgets.registry and a `name(connection)` function that Gadgetron `<external><execute>`
nodes run.

This package is an entry point: Gadgetron's `<execute>` starts a fresh Python process that imports
a gadget module, so the process settings (adacsc.runtime) are made here, before the gadget
modules import torch."""

from adacsc.runtime import configure_process

configure_process()
