"""Chain properties as typed gadget settings: each gadget declares a frozen `Settings` dataclass whose
fields (`setting`) are its properties; `parse_settings` fills one from a chain XML `<configuration>`
element's values, with errors that name the gadget and the property."""

import dataclasses
import functools
import typing
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from adacsc.limits import ScanLimits

S = TypeVar("S")


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
    """One chain property, as a gadget's typed settings declare it: its name in the chain XML, the
    settings field it fills, how to parse it, the default, allowed values and a description.
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
    attribute: str = ""
    """the settings field it fills"""

    def check_range(self, value: Any, limits: ScanLimits | None) -> None:
        """ValueError naming the bound when `value` is outside [minimum, maximum] or, with
        `limits`, the operator limit."""
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"must be >= {self.minimum:g}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"must be <= {self.maximum:g}")
        if self.operator_limit is not None and limits is not None:
            cap = getattr(limits, self.operator_limit)
            if value > cap:
                raise ValueError(f"exceeds the operator limit of {cap} (${limits.variable(self.operator_limit)})")

    def value(self, text: str, limits: ScanLimits | None) -> Any:
        """The typed value of `text` within its bounds; ValueError saying what is wrong with it."""
        value = self.parse(text)
        self.check_range(value, limits)
        return value


_DECLARATION = "adacsc.property"
_PARSERS: dict[Any, Callable[[str], Any]] = {bool: parse_bool, int: int, float: float, str: str}


def setting(default: Any, doc: str, *, parse: Callable[[str], Any] | None = None, choices: tuple[Any, ...] = (),
            minimum: float | None = None, maximum: float | None = None, operator_limit: str | None = None,
            name: str | None = None) -> Any:
    """A field of a gadget's frozen `Settings` dataclass that is also a chain property: parsed by
    `parse` (default: from the field's type: bool, int, float or str) and named `name` in the chain
    XML (default: the field's name)."""
    return field(default=default, metadata={_DECLARATION: dict(doc=doc, parse=parse, choices=choices,
                                                               minimum=minimum, maximum=maximum,
                                                               operator_limit=operator_limit, name=name)})


@functools.cache
def declarations(settings: type) -> tuple[Property, ...]:
    """The chain properties of a settings dataclass, in field order."""
    hints = typing.get_type_hints(settings)
    declared = []
    for item in dataclasses.fields(settings):
        spec = dict(item.metadata[_DECLARATION])
        parse = spec.pop("parse") or _PARSERS[hints[item.name]]
        declared.append(Property(spec.pop("name") or item.name, parse, item.default, attribute=item.name, **spec))
    return tuple(declared)


def parse_settings(settings: type[S], gadget: str, raw: Mapping[str, str], limits: ScanLimits | None = None) -> S:
    """Typed settings from raw property values (defaults for the others); PropertyError naming the
    gadget and the property for an unknown name or an invalid value. With `limits`, values are
    also held to the operator's limits."""
    properties = declarations(settings)
    names = {prop.name for prop in properties}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise PropertyError(
            f"{gadget}: unknown propert{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}"
            f" (accepted: {', '.join(sorted(names))})"
        )
    values = {}
    for prop in properties:
        if prop.name not in raw:
            continue
        try:
            value = prop.value(raw[prop.name], limits)
        except ValueError as err:
            raise PropertyError(f"{gadget}: property {prop.name}={raw[prop.name]!r}: {err}") from err
        if prop.choices and value not in prop.choices:
            raise PropertyError(
                f"{gadget}: property {prop.name}={value!r} must be one of {', '.join(map(str, prop.choices))}")
        values[prop.attribute] = value
    return settings(**values)


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
