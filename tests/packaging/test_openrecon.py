"""The OpenRecon label (`adacsc package openrecon`) against the schema kept in the package, and the
FIRE parameter mapping: UI parameters <-> chain properties, one to one, both ways."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from adacsc import cli
from adacsc import resources
from adacsc.chain.config import ChainError, gadget_for
from adacsc.gadgets.properties import raw_properties
from adacsc.packaging import openrecon
from adacsc.server import fire
from support import REPO


@pytest.fixture(scope="module")
def label() -> dict:
    return openrecon.build_label(openrecon.LabelSettings(manufacture_date="2026/11/30"))


def chain_properties(parameters: dict[str, str]) -> dict[str, dict]:
    """What the server makes of JSON parameters: the typed properties per node target of the chain
    that `config` chooses, after the FIRE mapping."""
    folders = resources.folders(resources.CONFIG)
    chain = fire.load_named_chain(parameters[fire.CONFIG_PARAMETER], folders)
    rest = {key: value for key, value in parameters.items() if key != fire.CONFIG_PARAMETER}
    chain = chain.with_overrides(fire.chain_overrides(rest, chain))
    parsed = {}
    for node in chain.nodes:
        gadget = gadget_for(node)
        settings = gadget.parse(raw_properties(node.configuration))
        parsed[node.target] = {prop.name: getattr(settings, prop.attribute) for prop in gadget.properties()}
    return parsed


# ---- the label and its schema --------------------------------------------------------------------

def test_label_validates_against_the_schema(label: dict) -> None:
    import jsonschema

    jsonschema.Draft7Validator.check_schema(openrecon.label_schema())
    assert openrecon.validation_errors(label) == []


def test_label_says_what_an_openrecon_host_needs(label: dict) -> None:
    general, recon = label["general"], label["reconstruction"]
    assert general["name"] == {"en": "adacsc"} and general["id"] == "adacsc" and general["version"] == "0.1.0"
    assert general["regulatory_information"]["manufacture_date"] == "2026/11/30"
    assert recon["transfer_protocol"] == {"protocol": "ISMRMRD", "version": "1.4.1"} and recon["port"] == 9002
    assert recon["emitter"] == "raw" and recon["injector"] == "image"
    assert recon["content_qualification_type"] == "RESEARCH" and recon["can_use_gpu"] is False
    assert recon["min_required_memory"] >= 1024 and recon["min_count_required_cpu_cores"] >= 1
    first = label["parameters"][0]
    assert first["id"] == "config" and first["type"] == "choice" and first["default"] == fire.DEFAULT_CHAIN
    assert [v["id"] for v in first["values"]] == ["adacsc_lowfield", "adacsc_lowfield_maps"]
    assert len(label["parameters"]) <= openrecon.MAX_PARAMETERS


def test_injector_chooses_the_output_format() -> None:
    def output(injector: str) -> str:
        built = openrecon.build_label(openrecon.LabelSettings(injector=injector))
        return next(p["default"] for p in built["parameters"] if p["id"] == "output")

    assert output("image") == "int16" and output("compleximage") == "complex"
    with pytest.raises(openrecon.LabelError, match="injector 'raw'"):
        openrecon.build_label(openrecon.LabelSettings(injector="raw"))


@pytest.mark.parametrize("change, where, rule", [
    (lambda l: l["parameters"].extend(copy.deepcopy(l["parameters"][1:3])), "$.parameters: ", "[maxItems 14]"),
    (lambda l: l["parameters"][5].update(id="super_resolution"), "$.parameters[5]: ",
     "[oneOf]; closest alternative: $.parameters[5].id: 'super_resolution' does not match"),
    (lambda l: l["parameters"][4].update(unit={"en": "iter"}), "$.parameters[4]: ",
     "[oneOf]; closest alternative: $.parameters[4].unit.en: 'iter' is too long [maxLength]"),
    (lambda l: l["parameters"][4].update(default=0.05), "$.parameters[4]: ",
     "closest alternative: $.parameters[4].default: 0.05 is not a multiple of 0.1 [multipleOf]"),
    (lambda l: l["general"].update(version="1.0"), "$.general.version: '1.0' does not match", "[pattern"),
    (lambda l: l["general"].pop("regulatory_information"), "$.general: 'regulatory_information' is a required",
     "[required "),
    (lambda l: l["reconstruction"].update(injector="raw"), "$.reconstruction.injector: 'raw' is not one of",
     "[enum "),
    (lambda l: l["reconstruction"].update(port="9002"), "$.reconstruction.port: '9002' is not of type 'integer'",
     "[type \"integer\"]"),
    (lambda l: l.update(extra={}), "$: Additional properties are not allowed ('extra' was unexpected)",
     "[additionalProperties false]"),
])
def test_a_broken_label_is_refused_naming_path_and_rule(label: dict, change, where: str, rule: str) -> None:
    broken = copy.deepcopy(label)
    change(broken)
    problems = openrecon.validation_errors(broken)
    assert problems == sorted(problems)
    assert any(problem.startswith(where) and rule in problem for problem in problems), problems


def test_build_label_refuses_an_invalid_label_listing_every_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    schema = openrecon.label_schema()
    schema["properties"]["reconstruction"]["properties"]["port"] = {"type": "integer", "maximum": 9001}
    schema["properties"]["general"]["properties"]["vendor"] = {"type": "string", "maxLength": 2}
    monkeypatch.setattr(openrecon, "label_schema", lambda: schema)
    with pytest.raises(openrecon.LabelError) as caught:
        openrecon.build_label(openrecon.LabelSettings())
    lines = str(caught.value).splitlines()
    assert lines[0] == "the OpenRecon label does not validate:"
    assert [line.strip() for line in lines[1:]] == [
        "$.general.vendor: 'adacsc' is too long [maxLength 2]",
        "$.reconstruction.port: 9002 is greater than the maximum of 9001 [maximum 9001]"]


def test_help_imports_neither_jsonschema_nor_the_label_schema() -> None:
    code = ("import sys\nfrom adacsc import cli\ntry:\n    cli.main(['package', 'openrecon', '--help'])\n"
            "except SystemExit:\n    pass\nprint('jsonschema' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_double_and_unit_rules(label: dict) -> None:
    beta = next(p for p in label["parameters"] if p["id"] == "beta")
    assert beta["type"] == "double" and beta["minimum"] == 0 and beta["maximum"] == 100
    fine = next(p for p in label["parameters"] if p["id"] == "lambda")
    # text, so that values finer than the UI's 0.1 steps (e.g. 0.08) can be entered
    assert fine["type"] == "string" and fine["default"] == "0.0"
    ok = copy.deepcopy(label)
    next(p for p in ok["parameters"] if p["id"] == "iterations")["unit"] = {"en": "it"}
    assert openrecon.validation_errors(ok) == []


def test_base64_value_round_trips(label: dict) -> None:
    assert openrecon.decode(openrecon.encode(label)) == label
    assert openrecon.LABEL_KEY == "com.siemens-healthineers.magneticresonance.openrecon.metadata:1.1.0"


def test_package_command_writes_label_base64_build_arg_and_fire_json(tmp_path: Path) -> None:
    paths = {name: tmp_path / name for name in ("label.json", "label.b64", "label.arg", "adacsc_lowfield.json")}
    assert cli.main(["package", "openrecon", "--json", str(paths["label.json"]), "--base64", str(paths["label.b64"]),
                     "--build-arg", str(paths["label.arg"]), "--fire-json", str(paths["adacsc_lowfield.json"]),
                     "--version", "1.2.3", "--date", "2026/01/02"]) == 0
    written = json.loads(paths["label.json"].read_text())
    assert written["general"]["version"] == "1.2.3"
    assert openrecon.decode(paths["label.b64"].read_text().strip()) == written
    name, _, value = paths["label.arg"].read_text().strip().partition("=")
    assert name == "OPENRECON_LABEL" and openrecon.decode(value) == written
    fire_json = json.loads(paths["adacsc_lowfield.json"].read_text())
    assert fire_json["parameters"] == openrecon.ui_defaults(written)
    assert all(isinstance(v, str) for v in fire_json["parameters"].values())
    assert cli.main(["package", "openrecon", "--chain", "adacsc_frontend"]) == 2  # not a CSC chain
    assert cli.main(["package", "openrecon", "--version", "one"]) == 2  # not a semantic version


# ---- the parameter mapping -----------------------------------------------------------------------

def test_ui_parameters_map_one_to_one_onto_chain_properties() -> None:
    ids = [p.id for p in fire.UI_PARAMETERS]
    assert len(set(i.lower() for i in ids)) == len(ids) and fire.CONFIG_PARAMETER not in ids
    assert len({p.key for p in fire.UI_PARAMETERS}) == len(ids)
    for parameter in fire.UI_PARAMETERS:
        assert parameter.id.isalnum() and parameter.declaration.name == parameter.name
        assert parameter.id.lower() == parameter.name.replace("_", "")  # camel case of the name
    assert fire.UiParameter("csc", "super_resolution", "x").id == "superResolution"


def test_defaults_round_trip_through_the_server_mapping(label: dict) -> None:
    sent = openrecon.ui_defaults(label)
    parsed = chain_properties(sent)
    by_id = {p.id: p for p in fire.UI_PARAMETERS}
    for key, value in sent.items():
        if key == fire.CONFIG_PARAMETER:
            continue
        parameter = by_id[key]
        assert parameter.declaration.parse(value) == parsed[parameter.gadget][parameter.name], key


@pytest.mark.parametrize("parameter", fire.UI_PARAMETERS, ids=lambda p: p.id)
def test_every_ui_parameter_reaches_its_property(label: dict, parameter: fire.UiParameter) -> None:
    entry = next(p for p in label["parameters"] if p["id"] == parameter.id)
    value = {"choice": lambda: entry["values"][-1]["id"], "boolean": lambda: "false" if entry["default"] else "true",
             "int": lambda: str(entry["maximum"]), "double": lambda: "12.5",
             "string": lambda: "0.5" if parameter.as_text else {"device": "cpu"}.get(parameter.name, "other_name"),
             }[entry["type"]]()
    sent = openrecon.ui_defaults(label)
    del sent[parameter.id]
    sent[parameter.id.lower()] = value  # ids match without regard to case
    parsed = chain_properties(sent)[parameter.gadget][parameter.name]
    assert parsed == parameter.declaration.parse(value)


def test_ui_parameters_of_gadgets_the_chain_lacks_are_skipped() -> None:
    frontend = fire.load_named_chain("adacsc_frontend", resources.folders(resources.CONFIG))
    overrides = fire.chain_overrides({"iterations": "3", "coilMapMethod": "walsh", "image_series_index": "4"}, frontend)
    assert overrides == {"coil_combination.coil_map_method": "walsh", "image_series_index": "4"}


def test_stock_fire_configs_and_unknown_names_list_the_available_chains() -> None:
    with pytest.raises(ChainError, match="python-ismrmrd-server example.*adacsc_frontend, adacsc_lowfield"):
        fire.load_named_chain("invertcontrast", resources.folders(resources.CONFIG))
    with pytest.raises(ChainError, match="available chains: adacsc_frontend, adacsc_lowfield, adacsc_lowfield_maps"):
        fire.load_named_chain("no_such_chain", resources.folders(resources.CONFIG))
    assert fire.load_named_chain("adacsc_lowfield.xml", resources.folders(resources.CONFIG)).name == "adacsc_lowfield"


def test_deployment_docs_list_every_ui_parameter() -> None:
    section = (REPO / "docs" / "DEPLOYMENT.md").read_text().split("## 6. OpenRecon")[1]
    for parameter in fire.UI_PARAMETERS:
        assert f"`{parameter.id}`" in section and f"`{parameter.key}`" in section, parameter.id


def test_gpu_is_refused_with_the_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(openrecon.LabelError, match="CUDA is newer than 11.8.*torch 2.7"):
        openrecon.build_label(openrecon.LabelSettings(can_use_gpu=True))
    assert cli.main(["package", "openrecon", "--gpu", "--json", str(tmp_path / "label.json")]) == 2
    assert "a GPU OpenRecon image cannot be built" in caplog.text and not (tmp_path / "label.json").exists()
    assert "No GPU image" in (REPO / "docs" / "DEPLOYMENT.md").read_text()


def _cuda_guard() -> str:
    """The Dockerfile's check that the torch it installed is not a CUDA build."""
    text = (REPO / "docker" / "Dockerfile.openrecon").read_text().replace("\\\n", "")
    return text.split('/opt/adacsc/bin/python -c "', 1)[1].split('"\nWORKDIR', 1)[0]


def test_the_openrecon_image_build_stops_at_a_cuda_torch(tmp_path: Path) -> None:
    guard = _cuda_guard()
    assert subprocess.run([sys.executable, "-c", guard], capture_output=True).returncode == 0  # this CPU torch
    fake = tmp_path / "torch"
    (fake / "version").mkdir(parents=True)
    (fake / "__init__.py").write_text("from torch import version\n__version__ = '2.13.0+cu128'\n")
    (fake / "version" / "__init__.py").write_text("cuda = '12.8'\n")
    result = subprocess.run([sys.executable, "-c", guard], capture_output=True, text=True,
                            env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert "torch 2.13.0+cu128 is a CUDA 12.8 build: OpenRecon takes CUDA <= 11.8" in result.stderr
