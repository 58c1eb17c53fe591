"""What a client asks of a session besides its data: the JSON parameters of a TEXT message and
the chain they, the CONFIG message or a client-sent chain XML select, with property overrides.

Pure functions of the received messages (no sockets), so the session only frames and dispatches.
JSON parameters follow python-ismrmrd-server: `config` or `customconfig` (at the top level or
inside `parameters`) names a chain and replaces the CONFIG message's; every other entry of
`parameters` is a property override (adacsc.server.fire maps the scanner's UI ids onto them).
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from adacsc.chain.config import AmbiguousProperty, ChainConfig, ChainError, parse_chain
from adacsc.server import fire

__all__ = ["ParameterError", "JsonParameters", "looks_like_json", "parse_json_parameters", "ChainRequest",
           "select_chain", "apply_overrides"]

_CONFIG_KEYS = ("config", "customconfig")


class ParameterError(ValueError):
    """A TEXT message that looks like JSON parameters but cannot be used (the session ignores it)."""


@dataclass(frozen=True)
class JsonParameters:
    """One TEXT message's JSON parameters."""

    config: str | None
    """the chain named by `config` / `customconfig`, or None"""
    properties: dict[str, str]
    """property overrides, every value as text ("true"/"false" for booleans)"""
    unusable: tuple[str, ...]
    """parameters whose value is not a string, number or boolean (ignored)"""


MAX_DEPTH = 32
"""deepest nesting of objects and arrays accepted in JSON parameters"""
MAX_NUMBER_DIGITS = 64
"""longest number literal accepted in JSON parameters"""
_BOM = "\ufeff"


class _Number(str):
    """A JSON number literal, kept as text until its parameter is known (long ones are refused
    with the parameter's name, instead of Python's int-conversion limit deep inside json)."""


def looks_like_json(text: str) -> bool:
    """Whether a TEXT message is meant as JSON parameters (else it is only logged); a leading
    UTF-8 byte-order mark is allowed."""
    return text.strip().lstrip(_BOM).lstrip().startswith("{")


def _too_deep(text: str) -> str | None:
    """The path (e.g. 'parameters.x') of the first place nested deeper than MAX_DEPTH, or None;
    a scan of the text, so that no recursive parser runs out of stack."""
    keys: list[str | None] = []
    last_string: str | None = None
    in_string = escaped = False
    start = 0
    for position, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
                last_string = text[start:position]
        elif char == '"':
            in_string, start = True, position + 1
        elif char in "{[":
            keys.append(None)
            if len(keys) > MAX_DEPTH:
                return ".".join(k for k in keys if k) or "(top level)"
        elif char in "}]":
            if keys:
                keys.pop()
        elif char == ":" and keys:
            keys[-1] = last_string
    return None


def _value(key: str, value: object) -> str:
    """A parameter's value as property text; ParameterError naming `key` when it cannot be one."""
    if isinstance(value, _Number):
        if len(value) > MAX_NUMBER_DIGITS:
            raise ParameterError(f"JSON parameter {key!r}: a number of {len(value)} characters (at most "
                                 f"{MAX_NUMBER_DIGITS})")
        number = float(value) if any(c in value for c in ".eE") else int(value)
        return str(number)
    text = str(value)
    bad = next((c for c in text if (ord(c) < 32 and c not in "\t\n\r") or c in "\ufffe\uffff"), None)
    if bad is not None:
        raise ParameterError(f"JSON parameter {key!r}: its value holds the control character U+{ord(bad):04X}")
    return text


def parse_json_parameters(text: str) -> JsonParameters:
    """The parameters of one JSON TEXT message (a leading byte-order mark allowed);
    ParameterError, naming the parameter where there is one, when it does not parse, nests
    deeper than MAX_DEPTH, holds a number longer than MAX_NUMBER_DIGITS or a control character,
    or is not shaped as {"parameters": {...}, ...}."""
    text = text.strip().lstrip(_BOM)
    deep = _too_deep(text)
    if deep is not None:
        raise ParameterError(f"JSON parameters nest deeper than {MAX_DEPTH} levels at {deep!r}")
    try:
        document = json.loads(text, parse_int=_Number, parse_float=_Number)
    except json.JSONDecodeError as err:
        raise ParameterError(f"TEXT looks like JSON but does not parse ({err})") from err
    if not isinstance(document, dict):
        raise ParameterError("JSON parameters must be an object")
    parameters = document.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ParameterError("JSON 'parameters' must be an object")
    config = None
    for key in _CONFIG_KEYS:
        for source in (document, parameters):
            value = source.get(key)
            if isinstance(value, str) and not isinstance(value, _Number) and value.strip():
                config = value.strip()
    properties: dict[str, str] = {}
    unusable = []
    for key, value in parameters.items():
        if key in _CONFIG_KEYS:
            continue
        if isinstance(value, bool):
            properties[str(key)] = "true" if value else "false"
        elif isinstance(value, str):
            properties[_value("(name)", key)] = _value(key, value)
        else:
            unusable.append(str(key))
    return JsonParameters(config, properties, tuple(unusable))


@dataclass(frozen=True)
class ChainRequest:
    """The configs a client sent: a name in CONFIG_FILE, a chain XML in CONFIG_TEXT, a name in
    the JSON parameters (which wins over the CONFIG message)."""

    config_name: str | None = None
    config_text: str | None = None
    json_config: str | None = None


def select_chain(request: ChainRequest, folders: list[Path], trusts: Callable[[str], bool]) -> ChainConfig:
    """The chain a client asked for: by name from `folders`, or its own XML when every module it
    runs is trusted; ChainError otherwise."""
    if request.json_config is not None:
        return fire.load_named_chain(request.json_config, folders)
    if request.config_name is not None:
        return fire.load_named_chain(request.config_name, folders)
    if request.config_text is not None:
        chain = parse_chain(request.config_text, "client-config")
        untrusted = sorted({n.module for n in chain.nodes if not trusts(n.module)})
        if untrusted:
            raise ChainError(f"the config sent by the client runs module(s) {', '.join(untrusted)}, "
                             "which this server does not allow")
        return chain
    raise ChainError("data arrived before the config: send CONFIG (id 1 or 2) first")


def apply_overrides(chain: ChainConfig, overrides: dict[str, str]) -> tuple[ChainConfig, list[str]]:
    """`chain` with every override some node accepts, and the keys no node accepts (ignored);
    AmbiguousProperty for a bare name several nodes accept with a value that does not suit all."""
    applied: dict[str, str] = {}
    ignored = []
    for key, value in fire.chain_overrides(overrides, chain).items():
        try:
            chain.with_overrides({key: value})
        except AmbiguousProperty:
            raise
        except ChainError:
            ignored.append(key)
            continue
        applied[key] = value
    return (chain.with_overrides(applied) if applied else chain), ignored
