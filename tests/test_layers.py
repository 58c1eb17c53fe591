"""The package's shape (docs/DESIGN.md): which part of adacsc may import which, and the parts
that never touch Gadgetron, ISMRMRD or sockets."""

import ast
from pathlib import Path

import pytest

import adacsc

PACKAGE = Path(adacsc.__file__).parent

MAY_IMPORT = {
    "core": set(),
    "mr": set(),
    "metrics": set(),
    "settings": set(),
    "resources": set(),
    "io": {"core", "resources"},
    "limits": {"io"},
    "scan_context": {"limits"},
    "simulation": {"io", "mr"},
    "conversion": {"io"},
    "training": {"core", "io", "metrics", "resources", "simulation"},
    "evaluation": {"core", "io", "metrics", "resources", "training"},
    "gadgets": {"core", "io", "mr", "resources", "settings", "limits", "scan_context", "runtime"},
    "chain": {"core", "gadgets", "io", "limits", "resources", "scan_context"},
    "replay": {"chain", "io"},
    "batch": {"chain", "core", "io", "replay"},
    "server": {"chain", "core", "gadgets", "io", "limits", "resources", "scan_context"},
    "client": {"io", "server"},
    "packaging": {"chain", "gadgets", "resources", "server"},
    "runtime": set(),
}
"""adacsc parts each part may import (besides itself); commands and cli may import anything"""
NO_STREAMING = {"core", "mr", "metrics", "training", "evaluation", "simulation"}
"""parts that know nothing of Gadgetron, ISMRMRD files or sockets (simulation writes ISMRMRD files)"""


def part_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imports(path: Path) -> set[str]:
    """Top-level names of every module `path` imports (adacsc.x counts as 'adacsc.x')."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + ([f"{node.module}.{alias.name}" for alias in node.names]
                                     if node.module == "adacsc" else [])
        for name in names:
            parts = name.split(".")
            found.add(".".join(parts[:2]) if parts[0] == "adacsc" and len(parts) > 1 else parts[0])
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if part_of(p) not in {"commands", "cli", "__init__", "__main__"})


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_part_imports_only_the_parts_below_it(path: Path) -> None:
    part = part_of(path)
    assert part in MAY_IMPORT, f"{part} is not in docs/DESIGN.md's table"
    used = {name.split(".")[1] for name in imports(path) if name.startswith("adacsc.")} - {part}
    assert used <= MAY_IMPORT[part], f"{path.name} ({part}) imports {sorted(used - MAY_IMPORT[part])}"
    if part in NO_STREAMING:
        streaming = imports(path) & {"gadgetron", "socket", "socketserver"} | (
            imports(path) & {"ismrmrd"} if part != "simulation" else set())
        assert not streaming, f"{path.name} ({part}) imports {sorted(streaming)}"


def test_only_the_server_telemetry_module_imports_prometheus_client() -> None:
    """The metrics stay in one module: the core, the gadgets and the chain report through plain
    callbacks (adacsc.chain.timing.ChainObserver)."""
    users = {str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py") if "prometheus_client" in imports(path)}
    assert users == {"server/telemetry.py"}


def _environment_reads(path: Path) -> set[str]:
    """Functions of a module (module level: '<module>') that read the environment: os.environ,
    os.getenv or an object's from_environment."""
    tree = ast.parse(path.read_text(), str(path))
    owner = {}
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                owner.setdefault(node, function.name)
    return {owner.get(node, "<module>") for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv", "from_environment"}}


def test_no_gadget_reads_the_environment() -> None:
    """Gadgets get their limits, budget, stop test and warnings' reader from the scan context their
    host builds (adacsc.scan_context); only the Gadgetron `<execute>` entry builds it from the
    environment."""
    readers = {f"{path.name}:{function}" for path in sorted((PACKAGE / "gadgets").glob("*.py"))
               for function in _environment_reads(path)}
    assert readers == {"contract.py:gadgetron_entry"}


@pytest.mark.parametrize("name", ["noise_adjust", "readout_buffer", "coil_combination", "csc"])
def test_every_gadget_takes_the_scan_context(name: str) -> None:
    assert "adacsc.scan_context" in imports(PACKAGE / "gadgets" / f"{name}.py")
