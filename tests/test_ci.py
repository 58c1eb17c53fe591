"""`.ci/run` proves what the README tells users to run: the same install line (PyTorch's CPU index)
and the same test command, the Debian packages the tests use, and the second ismrmrd."""

import re

from support import REPO

CI = (REPO / ".ci" / "run").read_text()


def readme_command(step: str) -> str:
    """The command under the README's `# <step>.` comment in its first code block."""
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S).group(1)
    lines = block.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(f"# {step}."))
    return lines[index + 1]


def test_ci_installs_and_tests_with_the_readme_line_exactly():
    command = readme_command("2")
    assert "--index-url https://download.pytorch.org/whl/cpu" in command and command.endswith("python3 -m pytest")
    assert command in CI.splitlines()
    assert readme_command("1").startswith(command.split(" && ")[0] + " && ")  # both steps install torch alike


def test_ci_installs_the_debian_packages_the_tests_use():
    apt = next(line for line in CI.splitlines() if "apt-get install" in line)
    assert {"mricron-data", "bart", "prometheus", "ismrmrd-tools"} <= set(apt.split())


def test_ci_runs_the_server_and_replay_tests_under_ismrmrd_1_14():
    assert '--target .ci-ismrmrd-1.14 "ismrmrd==1.14.*"' in CI
    run = re.search(r'PYTHONPATH="\$PWD/\.ci-ismrmrd-1\.14" python3 -m pytest -q (.*?)\n(?!  )', CI, flags=re.S)
    paths = run.group(1).replace("\\\n", " ").split()
    assert {"tests/server", "tests/chain", "tests/test_batch.py"} <= set(paths)
    assert all((REPO / path).exists() for path in paths)
