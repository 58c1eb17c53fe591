"""The OpenRecon label: the JSON an OpenRecon image carries, base64-encoded, in the Docker LABEL
LABEL_KEY, generated from the gadgets' typed settings.

- `general`: name, semantic version, vendor, information, id and regulatory information;
- `reconstruction`: ISMRMRD 1.4.1 on port 9002, raw data in, images out (`image`: int16
  magnitude; `compleximage`: complex), GPU use, minimum memory and cores, RESEARCH content;
- `parameters`: first `config` (a choice of the chains that run in adacsc itself and end in the
  CSC gadget), then the chain properties of adacsc.server.fire.UI_PARAMETERS, one to one, with
  the default chain's values as defaults (and `output` matching the injector).

The label is checked against the schema kept in the package (data/openrecon) with the
`jsonschema` library (draft-07) before it is used; jsonschema is imported there, not at import time.
"""

import base64
import importlib.metadata
import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from adacsc import resources
from adacsc.chain.config import ChainError, load_chain
from adacsc.gadgets.properties import format_value, parse_bool
from adacsc.server import fire

LABEL_KEY = "com.siemens-healthineers.magneticresonance.openrecon.metadata:1.1.0"
SCHEMA_NAME = "label_schema_1.1.0.json"
INJECTOR_OUTPUT = {"image": "int16", "compleximage": "complex"}
"""The csc `output` each OpenRecon injector takes."""
MAX_PARAMETERS = 14
NO_GPU = ("a GPU OpenRecon image cannot be built: OpenRecon rejects images whose CUDA is newer than 11.8, "
          "PyTorch's last CUDA 11.8 builds are torch 2.7.x, and adacsc is built and tested with torch 2.13 "
          "(no torch 2.7 run of it is tested). Package the CPU image (without --gpu); docs/DEPLOYMENT.md, "
          "section OpenRecon, 'No GPU image'")
"""Why `can_use_gpu` is refused (docker/Dockerfile.openrecon refuses a CUDA torch for the same reason)."""


class LabelError(ValueError):
    """The label cannot be built or does not validate."""


def _package_version() -> str:
    try:
        return importlib.metadata.version("adacsc")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


@dataclass(frozen=True)
class LabelSettings:
    """What the label says beyond the property specs (command-line options of `adacsc package openrecon`)."""

    name: str = "adacsc"
    version: str = field(default_factory=_package_version)
    vendor: str = "adacsc"
    information: str = ("Low-field MRI reconstruction by convolutional sparse coding with learned sparsity maps "
                        "(adacsc). Research use only, not for diagnostic use.")
    injector: str = "image"
    default_chain: str = fire.DEFAULT_CHAIN
    can_use_gpu: bool = False
    min_gpu_memory_mb: int = 0
    min_memory_mb: int = 4096
    min_cpu_cores: int = 2
    manufacturer_address: str = "not a medical device"
    made_in: str = "n/a"
    manufacture_date: str = field(default_factory=lambda: date.today().strftime("%Y/%m/%d"))

    @property
    def image_name(self) -> str:
        """The Docker image name OpenRecon's file naming expects (lower case)."""
        return f"openrecon_{self.vendor}_{self.name}:v{self.version}".lower()

    @property
    def package_name(self) -> str:
        """The base name of the .tar, .pdf and .zip files uploaded to the scanner."""
        return f"OpenRecon_{self.vendor}_{self.name}_V{self.version}"


def label_schema() -> dict[str, Any]:
    """The label's JSON schema kept in the package."""
    return json.loads(resources.package_data("data", "openrecon", SCHEMA_NAME).read_text())


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else f"{text[:limit - 60]} ... {text[-50:]}"


def _describe(error: Any) -> str:
    """One line per jsonschema error: the JSON path of the offending value, what is wrong, and the
    rule (keyword and, when short, its value); for oneOf/anyOf also the errors of the alternative
    that came closest (fewest errors)."""
    value = json.dumps(error.validator_value)
    rule = f"{error.validator} {value}" if len(value) <= 80 and not isinstance(error.validator_value, dict) \
        else str(error.validator)
    line = f"{error.json_path}: {_short(error.message)} [{rule}]"
    if error.context:
        alternatives: dict[Any, list[Any]] = {}
        for sub in error.context:
            alternatives.setdefault(sub.schema_path[0], []).append(sub)
        closest = min(alternatives.values(), key=lambda subs: (len(subs), -max(len(s.path) for s in subs)))
        line += "; closest alternative: " + "; ".join(
            sorted(f"{sub.json_path}: {_short(sub.message)} [{sub.validator}]" for sub in closest))
    return line


def validation_errors(label: dict[str, Any], schema: dict[str, Any] | None = None) -> list[str]:
    """Every way `label` fails the label schema (jsonschema, draft-07), one sorted line each: JSON
    path, problem, rule. Empty when the label validates."""
    import jsonschema

    schema = label_schema() if schema is None else schema
    validator = jsonschema.Draft7Validator(schema)
    return sorted(_describe(error) for error in validator.iter_errors(label))


def scanner_chains(folders: list[Path]) -> list[str]:
    """The chains the label offers: those that run in adacsc itself and end in the CSC gadget,
    whose series follow the `output` parameter (and so the injector)."""
    return [name for name in fire.available_chains(folders)
            if load_chain(name, folders, allow_paths=False).nodes[-1].target == "csc"]


def _chain_defaults(chain_name: str, folders: list[Path]) -> dict[str, str]:
    """`target.name` -> value as set in the chain's XML."""
    chain = load_chain(chain_name, folders, allow_paths=False)
    return {f"{node.target}.{name}": value for node in chain.nodes for name, value in node.properties.items()}


def ui_parameter(parameter: fire.UiParameter, default: str) -> dict[str, Any]:
    """The label entry of one UI parameter, its default given as a chain would write it."""
    prop = parameter.declaration
    entry: dict[str, Any] = {"id": parameter.id, "label": {"en": parameter.label}, "information": {"en": prop.doc}}
    if prop.choices:
        values = [format_value(choice) for choice in prop.choices]
        return {**entry, "type": "choice", "values": [{"id": v, "name": {"en": v}} for v in values], "default": default}
    if prop.parse is parse_bool:
        return {**entry, "type": "boolean", "default": parse_bool(default)}
    if prop.parse not in (int, float) or parameter.as_text:
        return {**entry, "type": "string", "default": default}
    minimum = parameter.minimum if parameter.minimum is not None else prop.minimum
    maximum = parameter.maximum if parameter.maximum is not None else prop.maximum
    if minimum is None or maximum is None:
        raise LabelError(f"UI parameter {parameter.id}: a number needs a minimum and a maximum")
    number = int if prop.parse is int else float
    return {**entry, "type": "int" if number is int else "double", "minimum": number(minimum),
            "maximum": number(maximum), "default": number(prop.parse(default))}


def build_label(settings: LabelSettings, folders: list[Path] | None = None) -> dict[str, Any]:
    """The label as a JSON object; LabelError when it does not validate against the schema."""
    folders = folders if folders is not None else resources.folders(resources.CONFIG)
    if settings.can_use_gpu or settings.min_gpu_memory_mb:
        raise LabelError(NO_GPU)
    if settings.injector not in INJECTOR_OUTPUT:
        raise LabelError(f"injector {settings.injector!r} is not one of {', '.join(INJECTOR_OUTPUT)}")
    chains = scanner_chains(folders)
    if settings.default_chain not in chains:
        raise LabelError(f"default chain {settings.default_chain!r} is not one of the chains that end in the "
                         f"CSC gadget and run in adacsc itself ({', '.join(chains)})")
    try:
        chain_values = _chain_defaults(settings.default_chain, folders)
    except ChainError as err:
        raise LabelError(str(err)) from err
    parameters = [{"id": fire.CONFIG_PARAMETER, "label": {"en": "Chain"}, "type": "choice",
                   "values": [{"id": name, "name": {"en": name}} for name in chains],
                   "default": settings.default_chain,
                   "information": {"en": "the adacsc chain that reconstructs the scan (docs/PROPERTIES.md)"}}]
    for parameter in fire.UI_PARAMETERS:
        default = chain_values.get(parameter.key, format_value(parameter.declaration.default))
        if parameter.name == "output":
            default = INJECTOR_OUTPUT[settings.injector]
        parameters.append(ui_parameter(parameter, default))
    label = {
        "general": {
            "name": {"en": settings.name}, "version": settings.version, "vendor": settings.vendor,
            "information": {"en": settings.information}, "id": settings.name.lower(),
            "regulatory_information": {
                "device_trade_name": settings.name, "production_identifier": settings.version,
                "manufacturer_address": settings.manufacturer_address, "made_in": settings.made_in,
                "manufacture_date": settings.manufacture_date,
                "material_number": f"{settings.name}_{settings.version}", "gtin": "", "udi": "",
                "safety_advices": "Research use only. Not for diagnostic use.",
                "special_operating_instructions": "Raw data in; the chain and its properties are the UI parameters.",
                "additional_relevant_information": "adacsc docs/DEPLOYMENT.md, section OpenRecon"},
        },
        "reconstruction": {
            "transfer_protocol": {"protocol": "ISMRMRD", "version": "1.4.1"},
            "port": 9002, "emitter": "raw", "injector": settings.injector,
            "can_process_adjustment_data": False, "can_use_gpu": settings.can_use_gpu,
            "min_count_required_gpus": 0, "min_required_gpu_memory": settings.min_gpu_memory_mb,
            "min_required_memory": settings.min_memory_mb, "min_count_required_cpu_cores": settings.min_cpu_cores,
            "content_qualification_type": "RESEARCH",
        },
        "parameters": parameters,
    }
    problems = validation_errors(label)
    if problems:
        raise LabelError("the OpenRecon label does not validate:\n  " + "\n  ".join(problems))
    return label


def encode(label: dict[str, Any]) -> str:
    """The LABEL value: the label's JSON, base64-encoded."""
    return base64.b64encode(json.dumps(label, indent=2).encode()).decode("ascii")


def decode(value: str) -> dict[str, Any]:
    """The label JSON from a LABEL value."""
    return json.loads(base64.b64decode(value))


def ui_defaults(label: dict[str, Any]) -> dict[str, str]:
    """The JSON parameters a scanner sends when nobody changes the UI: every value a string."""
    values = {}
    for parameter in label["parameters"]:
        default = parameter["default"]
        values[parameter["id"]] = format_value(default) if isinstance(default, bool) else str(default)
    return values
