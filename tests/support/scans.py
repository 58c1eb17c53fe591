"""Scans for the tests: simulated ones written by our own simulator, reading what a replay wrote."""

from pathlib import Path

import ismrmrd
import numpy as np
import pytest

from adacsc.chain.config import parse_chain
from adacsc.chain.runner import Chain
from adacsc.io.dataset import InputScan, read_images  # noqa: F401 (read_images: re-exported for the tests)
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


NOISE_ONLY = """<configuration><version>2</version><stream><external>
<execute name="adacsc.gadgets.noise_adjust" target="noise_adjust" type="python"/><configuration/>
</external></stream></configuration>"""
"""A chain of the noise adjustment alone: what it sends on is what prewhitening made."""


def run_chain_on_file(path: Path, chain_text: str) -> list[object]:
    """Everything a chain sends out for a file's acquisitions."""
    outputs: list[object] = []
    with InputScan(path) as scan:
        chain = Chain(parse_chain(chain_text), scan.header_bytes(), outputs.append).start()
        for acquisition in scan.acquisitions():
            chain.push(acquisition)
        chain.close()
    return outputs


def simulated(sim_dir: Path, name: str, **config: object) -> Path:
    """A simulated scan, written once per session."""
    path = sim_dir / f"{name}.h5"
    if not path.exists():
        simulate_scan(path, SimulationConfig(**config))
    return path


def image_stack(images: list[ismrmrd.Image]) -> np.ndarray:
    """[S, Y, X] in slice order."""
    ordered = sorted(images, key=lambda im: im.slice)
    return np.stack([im.data[0, 0] for im in ordered])
