"""python-ismrmrd-server (FIRE, OpenRecon) conventions: the config a scan names, and the UI
parameters a scanner sends as JSON (every value a string) mapped onto chain properties.

A FIRE client names a config in the CONFIG message and may replace it by the JSON's `config` (or
`customconfig`) parameter; the names are adacsc chain names. python-ismrmrd-server's own example
configs (invertcontrast, simplefft, ...) are not adacsc chains: a client naming one is told which
chains there are.

The UI parameters (UI_PARAMETERS) are the chain properties an OpenRecon image declares in its
label (`adacsc package openrecon`), one to one: the id is the property name in camel case
(super_resolution -> superResolution), matched without regard to case so that a hand-written JSON
need not follow the label's capitalisation. A property name (or `target.name`) is accepted as well.
A UI parameter whose gadget is not in the chosen chain is skipped: the scanner sends every UI
parameter whichever config is chosen.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

from adacsc.chain.config import ChainConfig, ChainError, load_chain, parse_chain
from adacsc.gadgets import registry
from adacsc.gadgets.properties import Property

log = logging.getLogger(__name__)

STOCK_CONFIGS = frozenset({"invertcontrast", "simplefft", "analyzeflow", "bartfire", "spectroscopy", "report",
                           "filter", "null", "savedataonly"})
"""Config names of python-ismrmrd-server's own example modules."""
CONFIG_PARAMETER = "config"
DEFAULT_CHAIN = "adacsc_lowfield"


@dataclass(frozen=True)
class UiParameter:
    """A chain property offered in the scanner's UI, with what the label needs beyond its spec."""

    gadget: str
    """the gadget's name in adacsc.gadgets.registry (also its target)"""
    name: str
    label: str
    minimum: float | None = None
    maximum: float | None = None
    as_text: bool = False
    """a float offered as a string (its values need more precision than the UI's 0.1 steps)"""

    @property
    def id(self) -> str:
        """The UI id: the property name in camel case (letters and digits only)."""
        head, *rest = self.name.split("_")
        return head + "".join(part.capitalize() for part in rest)

    @property
    def declaration(self) -> Property:
        """The property's declaration in its gadget's settings."""
        return next(p for p in registry.gadget(self.gadget).properties() if p.name == self.name)

    @property
    def key(self) -> str:
        """The override key that sets it on the gadget's nodes (`target.name`)."""
        return f"{self.gadget}.{self.name}"


UI_PARAMETERS = (
    UiParameter("csc", "output", "Pixel format"),
    UiParameter("csc", "mode", "Sparsity maps or one lambda"),
    UiParameter("csc", "lambda", "Scalar-mode lambda (0: follows the noise)", as_text=True),
    UiParameter("csc", "beta", "Low-pass weight (0: trained)", minimum=0, maximum=100),
    UiParameter("csc", "iterations", "FISTA iterations (0: trained)", minimum=0, maximum=1000),
    UiParameter("csc", "lowpass", "Low-pass part"),
    UiParameter("csc", "super_resolution", "Super-resolution factor"),
    UiParameter("csc", "dictionary", "Dictionary"),
    UiParameter("csc", "weights", "NET_Theta weights"),
    UiParameter("csc", "send_zero_filled", "Send the zero-filled images"),
    UiParameter("csc", "send_maps", "Send the sparsity maps"),
    UiParameter("csc", "device", "Device (auto, cpu, cuda)"),
    UiParameter("coil_combination", "coil_map_method", "Coil sensitivity estimation"),
)
"""The UI parameters after `config`, in the order the UI shows them (at most 13: the label's limit is 14)."""


def available_chains(folders: list[Path]) -> list[str]:
    """Names of the chains in `folders` that run in adacsc itself (first folder wins on a name)."""
    names: dict[str, None] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.xml")):
            if path.stem in names:
                continue
            try:
                parse_chain(path.read_text(), path.stem)
            except (ChainError, OSError):
                continue
            names[path.stem] = None
    return list(names)


def load_named_chain(name: str, folders: list[Path]) -> ChainConfig:
    """The chain a client names; when it cannot run, a ChainError that lists the available chains
    (and says so when the name is one of python-ismrmrd-server's examples)."""
    try:
        return load_chain(name, folders, allow_paths=False)
    except ChainError as err:
        available = ", ".join(available_chains(folders)) or "none"
        if name.removesuffix(".xml") in STOCK_CONFIGS:
            raise ChainError(f"config {name!r} is a python-ismrmrd-server example, not an adacsc chain; name one of "
                             f"the available chains ({available}) in the CONFIG message or in the JSON "
                             f"parameter '{CONFIG_PARAMETER}'") from err
        raise ChainError(f"{err}; available chains: {available}") from err


def _by_id() -> dict[str, UiParameter]:
    return {parameter.id.lower(): parameter for parameter in UI_PARAMETERS}


def chain_overrides(parameters: dict[str, str], chain: ChainConfig) -> dict[str, str]:
    """Override keys for `chain` from JSON parameters: UI ids become `target.name`, UI
    parameters of gadgets the chain lacks are skipped, anything else is passed on as given."""
    ui = _by_id()
    targets = {node.target for node in chain.nodes}
    overrides = {}
    for key, value in parameters.items():
        parameter = ui.get(key.lower())
        if parameter is None:
            overrides[key] = value
        elif parameter.gadget in targets:
            overrides[parameter.key] = value
        else:
            log.info("UI parameter %s is not used by chain %s (no %s node)", key, chain.name, parameter.gadget)
    return overrides
