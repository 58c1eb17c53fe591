"""The gadget contract (adacsc.gadgets.contract) and the registry: every gadget is a descriptor with
frozen typed settings that round-trip through chain XML properties, errors name the property, and
the Gadgetron `<execute>` entry of each module runs the registered gadget."""

import dataclasses
import importlib
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from adacsc.chain.config import ChainError, Node, gadget_for
from adacsc.gadgets import registry
from adacsc.gadgets.contract import Gadget
from adacsc.gadgets.properties import Property, PropertyError, format_value, raw_properties
from adacsc.limits import ScanLimits
from adacsc.scan_context import ScanContext

GADGETS = registry.gadgets()


def _xml(values: dict[str, str]) -> ET.Element:
    """A node's <configuration> as a chain XML writes it."""
    body = "".join(f'<property name="{name}" value="{value}"/>' for name, value in values.items())
    return ET.fromstring(f"<configuration>{body}</configuration>")


def _other_value(prop: Property) -> Any:
    """A valid value of `prop` other than its default."""
    if prop.choices:
        return next(choice for choice in prop.choices if choice != prop.default)
    if prop.parse is str:
        return "other_name"
    if isinstance(prop.default, bool):
        return not prop.default
    if isinstance(prop.default, str):  # a string with its own parser (the device)
        return "cpu"
    for step in (1, 2, -1, -2, 0.5):
        candidate = type(prop.default)(prop.default + step)
        try:
            prop.value(format_value(candidate), ScanLimits())
        except ValueError:
            continue
        return candidate
    raise AssertionError(f"no other valid value for {prop.name}")


def test_the_registry_lists_every_gadget_module_by_name_in_stream_order():
    assert [gadget.name for gadget in GADGETS] == ["noise_adjust", "readout_buffer", "coil_combination", "csc"]
    for name, module in registry.MODULES.items():
        gadget = registry.gadget(name)
        assert isinstance(gadget, Gadget) and gadget.module == module and registry.by_module(module) is gadget
    assert registry.by_module("adacsc.gadgets.slice_pool") is None


def test_an_unknown_gadget_is_refused_naming_the_known_ones():
    with pytest.raises(registry.UnknownGadget, match="unknown gadget 'fft' .*coil_combination, csc"):
        registry.gadget("fft")


@pytest.mark.parametrize("gadget", GADGETS, ids=lambda g: g.name)
def test_settings_are_frozen_dataclasses_whose_defaults_are_the_declared_ones(gadget):
    settings = gadget.settings()
    assert dataclasses.is_dataclass(settings)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(settings, gadget.properties()[0].attribute, None)
    assert gadget.parse({}) == settings
    assert [prop.attribute for prop in gadget.properties()] == [f.name for f in dataclasses.fields(settings)]


@pytest.mark.parametrize("gadget", GADGETS, ids=lambda g: g.name)
def test_settings_round_trip_through_chain_xml_properties(gadget):
    defaults = gadget.settings()
    changed = dataclasses.replace(defaults, **{p.attribute: _other_value(p) for p in gadget.properties()})
    assert changed != defaults
    for settings in (defaults, changed):
        written = {prop.name: format_value(getattr(settings, prop.attribute)) for prop in gadget.properties()}
        assert gadget.parse(raw_properties(_xml(written)), ScanLimits()) == settings


@pytest.mark.parametrize("gadget", GADGETS, ids=lambda g: g.name)
def test_an_invalid_value_is_refused_naming_the_gadget_and_the_property(gadget):
    checked = 0
    for prop in gadget.properties():
        if prop.parse is str and not prop.choices:
            continue  # any text is a valid name here; it is resolved when used
        with pytest.raises(PropertyError, match=rf"^{gadget.name}: property {prop.name}='not valid'"):
            gadget.parse(raw_properties(_xml({prop.name: "not valid"})))
        checked += 1
    assert checked
    with pytest.raises(PropertyError, match=rf"^{gadget.name}: unknown property no_such_property \(accepted: "):
        gadget.parse({"no_such_property": "1"})


def test_a_property_name_may_differ_from_its_field():
    csc = registry.gadget("csc")
    assert csc.parse({"lambda": "0.25"}).lam == 0.25
    with pytest.raises(PropertyError, match="unknown property lam "):
        csc.parse({"lam": "0.25"})


@pytest.mark.parametrize("name", list(registry.MODULES))
def test_each_modules_gadgetron_entry_runs_its_registered_gadget_with_the_environments_limits(name, monkeypatch):
    """Gadgetron's `<execute name="adacsc.gadgets.X" target="X">` calls X(connection)."""
    module = importlib.import_module(registry.MODULES[name])
    seen: list[tuple[Any, ScanContext]] = []
    gadget = registry.gadget(name)
    monkeypatch.setattr(module, "GADGET", dataclasses.replace(gadget, run=lambda c, s, scan: seen.append((s, scan))))
    monkeypatch.setenv("ADACSC_MAX_ITERATIONS", "3")

    class Connection:
        header = None
        config = _xml({})

    getattr(module, name)(Connection())
    [(settings, scan)] = seen
    assert settings == gadget.settings() and scan.limits.max_iterations == 3


def test_a_chain_node_finds_its_gadget_by_module_and_target():
    node = Node("adacsc.gadgets.csc", "csc", _xml({}))
    assert gadget_for(node) is registry.gadget("csc")
    with pytest.raises(ChainError, match="has no target 'recon'"):
        gadget_for(Node("adacsc.gadgets.csc", "recon", _xml({})))
    with pytest.raises(ChainError, match="'my.module' is not an adacsc gadget module"):
        gadget_for(Node("my.module", "csc", _xml({})))
