"""Process-wide CPU settings: made by the entry points (the command line, the gadget package that
Gadgetron's `<execute>` imports), never by importing adacsc or adacsc.core, without environment
variables from the user, never overriding the user's own choice, and the OpenMP spin only where
torch is not loaded yet."""

import os
import subprocess
import sys

import pytest

from adacsc import runtime
from support import REPO

GADGETS = str(REPO / "gadgets")


def _fresh(code: str, **env: str) -> str:
    """stdout of `code` run in a new interpreter that imports adacsc from this tree."""
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    clean.update(PYTHONPATH=GADGETS, **env)
    return subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True,
                          check=True, timeout=120).stdout.strip()


def test_importing_adacsc_core_changes_nothing_in_the_process():
    code = ("import os, adacsc, adacsc.core.app, adacsc.core.fista, adacsc.runtime as r; "
            "print(os.environ.get('GOMP_SPINCOUNT', '-'), r._allocator_tuned)")
    assert _fresh(code) == "- None"


def test_the_command_line_shortens_the_openmp_spin_before_torch_loads():
    code = ("import os, sys, adacsc.cli, adacsc.runtime as r\n"
            "try:\n    adacsc.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(os.environ['GOMP_SPINCOUNT'], r._allocator_tuned)")
    assert _fresh(code).splitlines()[-1] == f"{runtime.OPENMP_SPIN_COUNT} {sys.platform.startswith('linux')}"


def test_a_gadget_module_gadgetron_executes_configures_its_process_before_torch_loads():
    code = ("import os, sys, adacsc.gadgets.csc, adacsc.runtime as r; "
            "print(os.environ['GOMP_SPINCOUNT'], 'torch' in sys.modules, r._allocator_tuned)")
    assert _fresh(code) == f"{runtime.OPENMP_SPIN_COUNT} True {sys.platform.startswith('linux')}"


@pytest.mark.parametrize("name", ["GOMP_SPINCOUNT", "OMP_WAIT_POLICY"])
def test_the_users_openmp_choice_is_kept(name):
    code = "import adacsc.gadgets, os; print(os.environ.get('GOMP_SPINCOUNT', '-'))"
    assert _fresh(code, **{name: "ACTIVE" if name == "OMP_WAIT_POLICY" else "123"}) == (
        "123" if name == "GOMP_SPINCOUNT" else "-")


def test_no_spin_setting_once_torch_is_loaded(monkeypatch):
    env: dict[str, str] = {}
    assert "torch" in sys.modules  # the test session has imported it
    assert runtime.set_openmp_spin(env) is False and env == {}
    monkeypatch.delitem(sys.modules, "torch")
    assert runtime.set_openmp_spin(env) is True and env == {"GOMP_SPINCOUNT": str(runtime.OPENMP_SPIN_COUNT)}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_allocator_thresholds_are_fixed_once():
    assert runtime.tune_allocator() is True
    assert runtime.tune_allocator() is True
