"""A first run on a fresh machine: the README's commands, tests without the optional Debian
data, and a command line that answers --help without importing torch."""

import os
import re
import subprocess
import sys

from support import REPO

BRAIN_TESTS = ["tests/gadgets/test_csc.py::test_scalar_csc_beats_zero_filled",
               "tests/evaluation/test_evaluate.py::test_evaluate_end_to_end",
               "tests/evaluation/test_evaluate.py::test_shipped_blackbox_resolves_by_name_and_loads"]


def test_tests_that_need_mricron_data_skip_with_a_reason_without_it():
    env = {k: v for k, v in os.environ.items() if k != "ADACSC_BRAIN_VOLUME"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "support.without_mricron", "-rs", "-q", *BRAIN_TESTS],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "3 skipped" in run.stdout and "mricron-data" in run.stdout


def test_readme_installs_the_cpu_build_of_torch():
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"python3 -m pip install torch==[\d.]+[^&\n]*", readme)
    assert len(commands) >= 2
    assert all("--index-url https://download.pytorch.org/whl/cpu" in c for c in commands), commands
    assert "CUDA" in readme and "mricron-data" in readme


def test_help_does_not_import_torch():
    code = ("import sys; from adacsc.cli import build_parser; build_parser().format_help(); "
            "print('torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "False", run.stderr[-2000:]


def test_docs_match_the_defaults_and_the_output_layout():
    from adacsc.gadgets import csc

    assert csc.Settings().beta == 0
    model_card = (REPO / "docs" / "MODEL_CARD.md").read_text()
    assert "default beta = 1" not in model_card and "default beta = 0 means the trained value" in model_card
    readme = (REPO / "README.md").read_text()
    assert 'ismrmrd.Dataset("recon.h5", "GROUP", create_if_needed=False)' in readme
    deployment = (REPO / "docs" / "DEPLOYMENT.md").read_text()
    assert "python-ismrmrd-server's client does not know id 8" in deployment
