"""The site config of `adacsc serve`: one YAML file an operator keeps under version control.

Each setting has one key in the file (`limits.max_matrix`), one command-line flag and, for some,
one environment variable. The effective value of a setting is the first of:

  1. the command-line flag (`--max-matrix 512`);
  2. the environment variable (`ADACSC_MAX_MATRIX=512`), where the setting has one;
  3. the site config (`adacsc serve --config site.yaml`);
  4. the built-in default.

The file is checked against a JSON schema (jsonschema) before anything starts: an unknown key, a
key given twice or a value of the wrong type or range fails with the file, the line and the key.
Relative folders in the file are relative to the file's own folder.
`adacsc serve --print-config` prints every effective setting as YAML, each with where it came from,
so its output is itself a complete site config.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["SiteConfigError", "Key", "KEYS", "prepare_parser", "resolve", "render", "schema"]


class SiteConfigError(ValueError):
    """The site config (or an environment variable) holds something unusable; names where."""


_POSITIVE = {"type": "number", "exclusiveMinimum": 0}
_SECONDS = {"type": "number", "exclusiveMinimum": 0}
_COUNT = {"type": "integer", "minimum": 1}
_PORT = {"type": "integer", "minimum": 0, "maximum": 65535}
_FOLDER = {"type": "string", "minLength": 1}
_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


@dataclass(frozen=True)
class Key:
    """One setting: its dotted key in the file, the `serve` option it sets, its schema and its
    environment variable (None: none)."""

    key: str
    dest: str
    schema: dict[str, Any]
    environment: str | None = None
    invert: bool = False
    """the file says `preload: true` where the flag is `--no-preload`"""

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.key.split("."))


KEYS: tuple[Key, ...] = (
    Key("server.host", "host", {"type": "string", "minLength": 1}),
    Key("server.port", "port", _PORT),
    Key("server.workers", "workers", _COUNT),
    Key("server.max_waiting", "max_waiting", {"type": ["integer", "null"], "minimum": 0}),
    Key("server.wait_s", "wait", {"type": "number", "minimum": 0}),
    Key("server.grace_s", "grace", {"type": "number", "minimum": 0}),
    Key("server.strict", "strict", {"type": "boolean"}),
    Key("server.error_format", "error_format", {"enum": ["text", "error"]}),
    Key("server.allow_modules", "allow_module", {"type": "array", "items": {"type": "string", "minLength": 1}}),
    Key("server.preload", "no_preload", {"type": "boolean"}, invert=True),
    Key("server.warm_up", "no_warm_up", {"type": "boolean"}, invert=True),
    Key("server.slice_workers", "slice_workers", {"type": ["integer", "null"], "minimum": 1},
        "ADACSC_SLICE_WORKERS"),
    Key("timeouts.io_s", "timeout", _SECONDS),
    Key("timeouts.header_s", "header_timeout", _SECONDS),
    Key("timeouts.message_s", "message_timeout", _SECONDS),
    Key("timeouts.write_stall_s", "write_stall", _SECONDS),
    Key("timeouts.scan_s", "scan_timeout", _SECONDS),
    Key("limits.max_text_mb", "max_text_mb", _POSITIVE),
    Key("limits.max_readout_mb", "max_readout_mb", _POSITIVE),
    Key("limits.max_scan_gb", "max_scan_gb", _POSITIVE, "ADACSC_MAX_SCAN_GB"),
    Key("limits.max_matrix", "max_matrix", _COUNT, "ADACSC_MAX_MATRIX"),
    Key("limits.max_channels", "max_channels", _COUNT, "ADACSC_MAX_CHANNELS"),
    Key("limits.max_iterations", "max_iterations", _COUNT, "ADACSC_MAX_ITERATIONS"),
    Key("folders.configs", "config_dir", {"type": "array", "items": _FOLDER}),
    Key("folders.dictionaries", "dictionary_dir", {"type": ["string", "null"], "minLength": 1},
        "ADACSC_DICTIONARY_DIR"),
    Key("folders.weights", "weights_dir", {"type": ["string", "null"], "minLength": 1}, "ADACSC_WEIGHTS_DIR"),
    Key("folders.noise", "noise_dir", {"type": ["string", "null"], "minLength": 1}, "ADACSC_NOISE_DIR"),
    Key("logging.level", "log_level", {"enum": _LEVELS}, "ADACSC_LOG_LEVEL"),
    Key("metrics.host", "metrics_host", {"type": "string", "minLength": 1}),
    Key("metrics.port", "metrics_port", {"type": ["integer", "null"], "minimum": 0, "maximum": 65535}),
    Key("health.port", "health_port", {"type": ["integer", "null"], "minimum": 0, "maximum": 65535}),
)


def schema() -> dict[str, Any]:
    """The JSON schema of a site config: nested objects of the KEYS, nothing else allowed."""
    root: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
    for key in KEYS:
        node = root
        for part in key.path[:-1]:
            node = node["properties"].setdefault(
                part, {"type": "object", "properties": {}, "additionalProperties": False})
        node["properties"][key.path[-1]] = key.schema
    return root


def prepare_parser(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Make every option's default None, so that a value given on the command line can be told
    from the default; returns the built-in defaults by option name."""
    defaults = {}
    for action in parser._actions:
        if action.dest in ("help", "func") or action.default is argparse.SUPPRESS:
            continue
        defaults[action.dest] = action.default
        action.default = None
    return defaults


# ---- reading the file ------------------------------------------------------------------------

def _lines(node: yaml.Node, source: Path, path: tuple[str, ...], found: dict[tuple[str, ...], int]) -> None:
    """The line (1-based) of every key and value under `node`, by key path; SiteConfigError for a
    key given twice (plain YAML keeps the last one silently)."""
    found[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            name = str(key_node.value)
            line = key_node.start_mark.line + 1
            if name in seen:
                raise SiteConfigError(f"{source}:{line}: key {'.'.join(path + (name,))!r} is given twice "
                                      f"(first on line {seen[name]})")
            seen[name] = line
            _lines(value_node, source, path + (name,), found)
            found[path + (name,)] = line


def load(source: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """The site config as a dict and the line of each key; SiteConfigError when it cannot be read,
    is not YAML or does not fit the schema (the first problem in file order, with its line)."""
    import jsonschema

    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SiteConfigError(f"site config {source}: cannot read it ({err})") from err
    try:
        document = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else str(source)
        raise SiteConfigError(f"{where}: not valid YAML ({getattr(err, 'problem', None) or err})") from err
    if document is None:
        return {}, {}
    lines: dict[tuple[str, ...], int] = {}
    _lines(node, source, (), lines)
    problems = []
    for error in jsonschema.Draft202012Validator(schema()).iter_errors(document):
        path = tuple(str(part) for part in error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = set(error.schema.get("properties", {}))
            for name in sorted(set(error.instance) - allowed):
                key = ".".join(path + (name,))
                known = ", ".join(sorted(allowed))
                problems.append((lines.get(path + (name,), 0),
                                 f"unknown key {key!r} (known here: {known})"))
            continue
        key = ".".join(path) or "(top level)"
        problems.append((lines.get(path, 0), f"{key}: {error.message}"))
    if problems:
        line, message = min(problems)
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise SiteConfigError(f"{source}:{line}: {message}{more}")
    return document, lines


def _lookup(document: dict[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    node: Any = document
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


# ---- layering ---------------------------------------------------------------------------------

def _from_environment(key: Key, text: str) -> Any:
    """An environment variable's text as the setting's value (checked against its schema)."""
    import jsonschema

    kinds = key.schema.get("type", "string")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    value: Any = text.strip()
    try:
        if "integer" in kinds:
            value = int(value)
        elif "number" in kinds:
            value = float(value)
    except ValueError:
        raise SiteConfigError(f"${key.environment}={text!r}: {key.key} must be a number") from None
    if key.dest == "log_level":
        value = value.upper()
    try:
        jsonschema.validate(value, key.schema)
    except jsonschema.ValidationError as err:
        raise SiteConfigError(f"${key.environment}={text!r}: {key.key}: {err.message}") from None
    return value


@dataclass(frozen=True)
class Setting:
    """One effective setting and where it came from."""

    key: str
    value: Any
    source: str


def resolve(args: argparse.Namespace, defaults: dict[str, Any],
            environ: Callable[[str], str | None] = os.environ.get) -> list[Setting]:
    """Fill `args` (parsed with `prepare_parser`'s None defaults) with the effective value of every
    option: flag, then environment, then `args.config` (the site config), then the default.
    Returns the KEYS' settings with their sources, in KEYS order."""
    document, lines = load(args.config) if getattr(args, "config", None) is not None else ({}, {})
    settings: dict[str, Setting] = {}
    keyed = {key.dest: key for key in KEYS}
    for dest, default in defaults.items():
        key = keyed.get(dest)
        given = getattr(args, dest, None)
        if given is not None:
            flag = dest.replace("_", "-")
            value, source = given, f"--{flag}"
        elif key is not None and key.environment and environ(key.environment):
            value, source = _from_environment(key, environ(key.environment)), f"${key.environment}"
        elif key is not None and _lookup(document, key.path)[0]:
            value = _lookup(document, key.path)[1]
            value = (not value) if key.invert else value
            if key.path[0] == "folders" and value is not None:  # relative to the site config's folder
                base = Path(args.config).parent
                value = [base / folder for folder in value] if isinstance(value, list) else base / value
            source = f"{args.config}:{lines.get(key.path, 0)}"
        else:
            value, source = default, "default"
        setattr(args, dest, value)
        if key is not None:
            shown = getattr(args, dest)
            shown = (not shown) if key.invert else shown
            settings[key.key] = Setting(key.key, shown, source)
    return [settings[key.key] for key in KEYS if key.key in settings]


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def render(settings: list[Setting]) -> str:
    """The effective settings as a YAML site config, each line saying where its value came from."""
    lines = ["# adacsc serve: effective settings (flag > environment > site config > default)"]
    group = None
    for setting in settings:
        parts = setting.key.split(".")
        if len(parts) == 2 and parts[0] != group:
            group = parts[0]
            lines.append(f"{group}:")
        indent = "  " * (len(parts) - 1)
        value = yaml.safe_dump(_plain(setting.value), default_flow_style=True, width=10_000).strip()
        value = value.removesuffix("\n...").strip()
        lines.append(f"{indent}{parts[-1]}: {value}  # {setting.source}")
    return "\n".join(lines) + "\n"
