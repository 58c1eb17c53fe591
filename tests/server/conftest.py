"""Fixtures of the server tests."""

from pathlib import Path

import pytest

from adacsc.simulation.small_scan import write_small_scan


@pytest.fixture(scope="module")
def small_scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-slice, 16-line scan: quick through any chain."""
    return write_small_scan(tmp_path_factory.mktemp("scans") / "small.h5", lines=16, slices=2)
