"""Gadgetron chain XMLs (version 2): the Python `<external>` nodes in stream order with their
`<configuration>` elements, name resolution inside configured folders, and property overrides.

The chain depends on the gadgets (their descriptors in adacsc.gadgets.registry), never the other way
round."""

import copy
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from adacsc import resources
from adacsc.gadgets import registry
from adacsc.gadgets.contract import Gadget
from adacsc.gadgets.properties import PropertyError, raw_properties


class ChainError(ValueError):
    """A chain XML is missing, malformed or asks for something that cannot run."""


@dataclass(frozen=True)
class Node:
    """One `<external>` Python node: module, target and its `<configuration>` element."""

    module: str
    target: str
    configuration: ET.Element

    @property
    def properties(self) -> dict[str, str]:
        """The node's raw property values."""
        return raw_properties(self.configuration)

    def configuration_bytes(self) -> bytes:
        """The configuration element as Gadgetron sends it (the CONFIG message)."""
        return ET.tostring(self.configuration)


def gadget_for(node: Node) -> Gadget:
    """The registered gadget a chain node runs (adacsc.gadgets.registry); ChainError otherwise."""
    gadget = registry.by_module(node.module)
    if gadget is None:
        raise ChainError(f"{node.module!r} is not an adacsc gadget module ({', '.join(registry.MODULES.values())})")
    if node.target != gadget.name:
        raise ChainError(f"gadget module {node.module!r} has no target {node.target!r}")
    return gadget


@dataclass(frozen=True)
class ChainConfig:
    """A parsed chain: its name and its Python nodes in order."""

    name: str
    nodes: tuple[Node, ...]

    def with_overrides(self, overrides: dict[str, str]) -> "ChainConfig":
        """A copy with properties set: `name=value` applies to every node whose gadget accepts
        `name`; `target.name=value` to the nodes with that target. Unknown names are errors."""
        nodes = [replace(n, configuration=copy.deepcopy(n.configuration)) for n in self.nodes]
        for key, value in overrides.items():
            target, _, name = key.rpartition(".")
            matched = [n for n in nodes if (not target or n.target == target)
                       and name in {prop.name for prop in gadget_for(n).properties()}]
            if not matched:
                raise ChainError(f"no node of chain {self.name!r} accepts property {key!r}")
            if not target and len(matched) > 1:
                _check_bare_name(name, value, matched)
            for node in matched:
                _set_property(node.configuration, name, value)
        return ChainConfig(self.name, tuple(nodes))


class AmbiguousProperty(ChainError):
    """A bare property name that several nodes accept, with a value that does not suit them all."""


def _check_bare_name(name: str, value: str, matched: list[Node]) -> None:
    """A bare `name=value` that several nodes accept must suit them all; otherwise say which
    nodes match and which of them the value suits (ChainError)."""
    rejected = []
    for node in matched:
        try:
            gadget_for(node).parse({name: value})
        except PropertyError:
            rejected.append(node.target)
    if rejected:
        suited = [node.target for node in matched if node.target not in rejected]
        hint = (f"; set it on one node, e.g. {suited[0]}.{name}={value}" if suited
                else f"; set it per node ({', '.join(f'{node.target}.{name}' for node in matched)})")
        raise AmbiguousProperty(f"property {name!r} is accepted by {len(matched)} nodes "
                         f"({', '.join(node.target for node in matched)}) and {value!r} is not valid for "
                         f"{', '.join(rejected)}{hint}")


def _set_property(configuration: ET.Element, name: str, value: str) -> None:
    for prop in configuration.iter("property"):
        if prop.get("name") == name:
            prop.set("value", value)
            return
        if prop.get("name") is None and (prop.findtext("name") or "").strip() == name:
            prop.find("value").text = value
            return
    ET.SubElement(configuration, "property", {"name": name, "value": value})


def parse_chain(text: str | bytes, name: str = "<text>") -> ChainConfig:
    """Parse chain XML text; only `<external>` Python nodes can run in adacsc itself."""
    if isinstance(text, bytes):
        text = text.rstrip(b"\0").decode("utf-8", errors="replace")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise ChainError(f"chain {name!r} is not valid XML: {err}") from err
    stream = root.find("stream")
    if root.tag != "configuration" or stream is None:
        raise ChainError(f"chain {name!r} is not a Gadgetron chain (<configuration> with a <stream>)")
    nodes = []
    for element in stream:
        if element.tag != "external":
            label = element.get("name") or element.findtext("classname") or element.tag
            raise ChainError(
                f"chain {name!r}: node {label!r} is a native Gadgetron node; it runs only inside Gadgetron")
        execute = element.find("execute")
        if execute is None or execute.get("type", "python") != "python" or element.find("connect") is not None:
            raise ChainError(f"chain {name!r}: only <external><execute type=\"python\"> nodes run in process")
        module, target = execute.get("name"), execute.get("target")
        if not module or not target:
            raise ChainError(f"chain {name!r}: an <execute> lacks name or target")
        configuration = element.find("configuration")
        nodes.append(Node(module, target, configuration if configuration is not None else ET.Element("configuration")))
    if not nodes:
        raise ChainError(f"chain {name!r} has no nodes")
    return ChainConfig(name, tuple(nodes))


def load_chain(name_or_path: str, extra_dirs: Sequence[Path] = (), allow_paths: bool = True) -> ChainConfig:
    """Load a chain by name (adacsc.resources: `extra_dirs`, $ADACSC_CONFIG_DIR, the shipped
    configs) or, where allowed (the local command line), by path. The server loads a chain by name
    per scan: that path stays text (see adacsc.resources.locate)."""
    if allow_paths:
        candidate = Path(name_or_path)
        if (candidate.suffix == ".xml" or os.sep in name_or_path) and candidate.is_file():
            return parse_chain(candidate.read_text(), candidate.stem)
    try:
        path = resources.locate(resources.CONFIG, name_or_path, extra_dirs)
    except resources.ResourceError as err:
        raise ChainError(str(err)) from None
    with open(path, encoding="utf-8") as stream:
        return parse_chain(stream.read(), resources.split_name(os.path.basename(path))[0])
