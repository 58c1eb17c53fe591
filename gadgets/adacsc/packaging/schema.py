"""A small JSON Schema (draft-07) validator: the keywords the OpenRecon label schema uses, so the
label is checked without an extra dependency.

Supported: type, enum, const, required, properties, additionalProperties (false or a schema),
items (one schema), minItems, maxItems, uniqueItems, minLength, maxLength, pattern, minimum,
maximum, multipleOf, oneOf, and $ref to a local JSON pointer ('#/definitions/...'). Anything else
in a schema is annotation and ignored.
"""

import json
import math
import re
from typing import Any

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "null": lambda v: v is None,
}


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise ValueError(f"only local $ref are supported, got {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _multiple_of(value: float, step: float) -> bool:
    quotient = value / step
    return math.isclose(quotient, round(quotient), rel_tol=0, abs_tol=1e-9)


def errors(instance: Any, schema: dict[str, Any], root: dict[str, Any] | None = None, path: str = "$") -> list[str]:
    """Every way `instance` fails `schema`, as 'path: problem' lines (empty when it validates)."""
    root = schema if root is None else root
    if "$ref" in schema:
        return errors(instance, _resolve(root, schema["$ref"]), root, path)
    found: list[str] = []
    kind = schema.get("type")
    if kind is not None and not _TYPES[kind](instance):
        return [f"{path}: {json.dumps(instance)[:60]} is not of type {kind}"]
    if "const" in schema and instance != schema["const"]:
        found.append(f"{path}: must be {schema['const']!r}")
    if "enum" in schema and instance not in schema["enum"]:
        found.append(f"{path}: {instance!r} is not one of {schema['enum']}")
    if isinstance(instance, dict):
        found += [f"{path}: missing required property {name!r}" for name in schema.get("required", ())
                  if name not in instance]
        properties = schema.get("properties", {})
        for name, value in instance.items():
            if name in properties:
                found += errors(value, properties[name], root, f"{path}.{name}")
            elif schema.get("additionalProperties") is False:
                found.append(f"{path}: property {name!r} is not allowed")
            elif isinstance(schema.get("additionalProperties"), dict):
                found += errors(value, schema["additionalProperties"], root, f"{path}.{name}")
    if isinstance(instance, list):
        if len(instance) > schema.get("maxItems", math.inf):
            found.append(f"{path}: {len(instance)} items, at most {schema['maxItems']} allowed")
        if len(instance) < schema.get("minItems", 0):
            found.append(f"{path}: {len(instance)} items, at least {schema['minItems']} required")
        if schema.get("uniqueItems") and len({json.dumps(v, sort_keys=True) for v in instance}) < len(instance):
            found.append(f"{path}: items are not unique")
        if "items" in schema:
            for index, item in enumerate(instance):
                found += errors(item, schema["items"], root, f"{path}[{index}]")
    if isinstance(instance, str):
        if len(instance) > schema.get("maxLength", math.inf) or len(instance) < schema.get("minLength", 0):
            found.append(f"{path}: length {len(instance)} outside [{schema.get('minLength', 0)}, "
                         f"{schema.get('maxLength', 'any')}]")
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            found.append(f"{path}: {instance!r} does not match {schema['pattern']}")
    if _TYPES["number"](instance):
        if instance < schema.get("minimum", -math.inf) or instance > schema.get("maximum", math.inf):
            found.append(f"{path}: {instance} outside [{schema.get('minimum')}, {schema.get('maximum')}]")
        if "multipleOf" in schema and not _multiple_of(instance, schema["multipleOf"]):
            found.append(f"{path}: {instance} is not a multiple of {schema['multipleOf']}")
    if "oneOf" in schema:
        failures = [errors(instance, option, root, path) for option in schema["oneOf"]]
        matches = sum(not failure for failure in failures)
        if matches != 1:
            found.append(f"{path}: matches {matches} of the oneOf alternatives, exactly one required")
        if not matches:  # the closest alternative says what is wrong
            found += min(failures, key=len)
    return found
