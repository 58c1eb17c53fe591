"""The CPU and memory limits `adacsc serve` logs at start, read from fake cgroup trees."""

import logging
from pathlib import Path

import pytest

from adacsc.server.host import cgroup_limits, host_resources, log_host_resources


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    return root


@pytest.mark.parametrize("files, expected", [
    ({"cgroup.controllers": "cpu memory", "cpu.max": "200000 100000", "memory.max": "8589934592"},
     (2, 2.0, 8 << 30)),
    ({"cgroup.controllers": "cpu memory", "cpu.max": "max 100000", "memory.max": "max"}, (2, None, None)),
    ({"cpu/cpu.cfs_quota_us": "150000", "cpu/cpu.cfs_period_us": "100000",
      "memory/memory.limit_in_bytes": "4294967296"}, (1, 1.5, 4 << 30)),
    ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000",
      "memory/memory.limit_in_bytes": "9223372036854771712"}, (1, None, None)),
    ({}, (None, None, None)),
])
def test_cgroup_limits(tmp_path: Path, files: dict[str, str], expected: tuple) -> None:
    assert cgroup_limits(write(tmp_path, files)) == expected


def test_the_limits_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write(tmp_path, {"cgroup.controllers": "cpu", "cpu.max": "50000 100000", "memory.max": "1073741824"})
    with caplog.at_level(logging.INFO, logger="adacsc.server.host"):
        found = log_host_resources(root)
    assert found == host_resources(root) and 1 <= found.usable_cpus <= found.cpu_count
    assert "cgroup v2: 0.5 CPUs, 1024 MiB memory" in caplog.text
