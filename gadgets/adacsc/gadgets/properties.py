"""Typed gadget properties read from a chain XML `<configuration>` element, with clear errors."""

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from adacsc.limits import ScanLimits


class PropertyError(ValueError):
    """A chain property is unknown or its value is invalid."""


def parse_bool(text: str) -> bool:
    """'true'/'false' (and 1/0, yes/no), as Gadgetron writes booleans."""
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false)")


@dataclass(frozen=True)
class Property:
    """One property: its name, how to parse it, the default, allowed values and a description.
    Numbers may have a `minimum`, a `maximum` and an `operator_limit`: the ScanLimits field that
    caps the value on this installation (e.g. "max_iterations")."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    doc: str
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    operator_limit: str | None = None

    def check_range(self, value: Any) -> None:
        """ValueError naming the bound when `value` is outside [minimum, maximum] or the operator limit."""
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"must be >= {self.minimum:g}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"must be <= {self.maximum:g}")
        if self.operator_limit is not None:
            limits = ScanLimits.from_environment()
            cap = getattr(limits, self.operator_limit)
            if value > cap:
                raise ValueError(f"exceeds the operator limit of {cap} (${limits.variable(self.operator_limit)})")


@dataclass(frozen=True)
class PropertySpec:
    """The properties a gadget accepts."""

    gadget: str
    properties: tuple[Property, ...] = field(default_factory=tuple)

    def names(self) -> set[str]:
        """The accepted property names."""
        return {p.name for p in self.properties}

    def parse(self, raw: dict[str, str]) -> dict[str, Any]:
        """Typed values for all properties: defaults, overridden by `raw`; unknown names rejected."""
        unknown = sorted(set(raw) - self.names())
        if unknown:
            raise PropertyError(
                f"{self.gadget}: unknown propert{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}"
                f" (accepted: {', '.join(sorted(self.names()))})"
            )
        values = {}
        for prop in self.properties:
            if prop.name not in raw:
                values[prop.name] = prop.default
                continue
            try:
                value = prop.parse(raw[prop.name])
                prop.check_range(value)
            except ValueError as err:
                raise PropertyError(f"{self.gadget}: property {prop.name}={raw[prop.name]!r}: {err}") from err
            if prop.choices and value not in prop.choices:
                raise PropertyError(
                    f"{self.gadget}: property {prop.name}={value!r} must be one of {', '.join(map(str, prop.choices))}"
                )
            values[prop.name] = value
        return values


def format_value(value: object) -> str:
    """A property value as it would be written in a chain XML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def raw_properties(config: ET.Element | None) -> dict[str, str]:
    """Name -> value of every <property> in a configuration element; both the attribute form
    `<property name=".." value=".."/>` and the child form `<property><name/><value/></property>`."""
    if config is None:
        return {}
    values = {}
    for prop in config.iter("property"):
        name = prop.get("name")
        value = prop.get("value")
        if name is None:
            name = (prop.findtext("name") or "").strip()
            value = prop.findtext("value")
        if not name:
            raise PropertyError("a <property> in the chain configuration has no name")
        values[name] = "" if value is None else value.strip()
    return values


def read_properties(connection: Any, spec: PropertySpec) -> dict[str, Any]:
    """The typed properties of the connection's configuration."""
    return spec.parse(raw_properties(getattr(connection, "config", None)))
