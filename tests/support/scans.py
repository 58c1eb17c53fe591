"""Scans for the tests: simulated ones written by our own simulator, reading what a replay wrote."""

from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import pytest

from adacsc.io.dataset import InputScan
from adacsc.io.header import parse_header
from adacsc.simulation.brain import brain_available
from adacsc.simulation.scanner import SimulationConfig, simulate_scan

needs_brain = pytest.mark.skipif(
    not brain_available(), reason="needs the Colin27 brain template: Debian package mricron-data "
                                  "(apt-get install mricron-data) or $ADACSC_BRAIN_VOLUME")
"""For tests whose data or margins need the real brain volume (the phantom fallback differs)."""


def read_scan(path: Path) -> tuple[object, list[ismrmrd.Acquisition]]:
    """(parsed header, all acquisitions) of an ISMRMRD file."""
    with InputScan(path) as scan:
        return parse_header(scan.header_bytes()), list(scan.acquisitions())


def simulated(sim_dir: Path, name: str, **config: object) -> Path:
    """A simulated scan, written once per session."""
    path = sim_dir / f"{name}.h5"
    if not path.exists():
        simulate_scan(path, SimulationConfig(**config))
    return path


def read_images(path: Path, group: str | None = None) -> dict[str, list[ismrmrd.Image]]:
    """Every image series of `group` (default: the newest group) of an output file."""
    with h5py.File(path, "r") as f:
        group = group or sorted(f.keys())[-1]
        names = sorted(n for n in f[group] if n.startswith("image_"))
    dataset = ismrmrd.Dataset(str(path), group, create_if_needed=False)
    try:
        return {n: [dataset.read_image(n, i) for i in range(dataset.number_of_images(n))] for n in names}
    finally:
        dataset.close()


def image_stack(images: list[ismrmrd.Image]) -> np.ndarray:
    """[S, Y, X] in slice order."""
    ordered = sorted(images, key=lambda im: im.slice)
    return np.stack([im.data[0, 0] for im in ordered])
