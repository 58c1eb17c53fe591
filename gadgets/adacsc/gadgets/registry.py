"""Every adacsc gadget by name: the one place the chain, both servers and the docs find a gadget's
descriptor (adacsc.gadgets.contract.Gadget, each module's `GADGET`). A module is imported when its
gadget is first asked for, so listing names costs no import of torch."""

import importlib

from adacsc.gadgets.contract import Gadget

MODULES = {
    "noise_adjust": "adacsc.gadgets.noise_adjust",
    "readout_buffer": "adacsc.gadgets.readout_buffer",
    "coil_combination": "adacsc.gadgets.coil_combination",
    "csc": "adacsc.gadgets.csc",
}
"""gadget name (also its `<execute>` target) -> module, in stream order"""


class UnknownGadget(ValueError):
    """A name or module that is not a registered gadget."""


def gadget(name: str) -> Gadget:
    """The descriptor of the gadget called `name`."""
    if name not in MODULES:
        raise UnknownGadget(f"unknown gadget {name!r} (one of {', '.join(sorted(MODULES))})")
    descriptor = importlib.import_module(MODULES[name]).GADGET
    assert isinstance(descriptor, Gadget) and descriptor.name == name, f"{MODULES[name]}.GADGET is not {name!r}"
    return descriptor


def by_module(module: str) -> Gadget | None:
    """The gadget a module defines, or None when the module is not a registered gadget's."""
    names = [name for name, path in MODULES.items() if path == module]
    return gadget(names[0]) if names else None


def gadgets() -> list[Gadget]:
    """Every gadget, in stream order."""
    return [gadget(name) for name in MODULES]
