"""Shared fixtures: simulated scans written by our own simulator, the bundled real scans, and an
isolated noise-covariance folder per test."""

from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import pytest
import torch

from adacsc.resources import bundled_scan
from adacsc.io.dataset import InputScan
from adacsc.io.header import parse_header
from adacsc.simulation.brain import brain_available
from adacsc.simulation.scanner import SimulationConfig, simulate_scan

needs_brain = pytest.mark.skipif(
    not brain_available(), reason="needs the Colin27 brain template: Debian package mricron-data "
                                  "(apt-get install mricron-data) or $ADACSC_BRAIN_VOLUME")
"""For tests whose data or margins need the real brain volume (the phantom fallback differs)."""


@pytest.fixture(autouse=True)
def one_torch_thread() -> None:
    """Test problems are small: one torch thread is as fast and avoids thread-pool stalls on a
    busy 2-core CPU (up to 10x here)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def read_scan(path: Path) -> tuple[object, list[ismrmrd.Acquisition]]:
    """(parsed header, all acquisitions) of an ISMRMRD file."""
    with InputScan(path) as scan:
        return parse_header(scan.header_bytes()), list(scan.acquisitions())


@pytest.fixture(scope="session", autouse=True)
def private_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Nothing a test does touches the user's home: $HOME, the caches and the operator noise
    folder point into the test's temporary folder from the start, before any module-scoped
    fixture runs (and in every subprocess a test starts)."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        patch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
        patch.setenv("ADACSC_NOISE_DIR", str(home / "noise"))
        yield home


@pytest.fixture(autouse=True)
def noise_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own operator noise folder, so stored covariances never leak."""
    folder = tmp_path / "noise"
    monkeypatch.setenv("ADACSC_NOISE_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sim")


def simulated(sim_dir: Path, name: str, **config: object) -> Path:
    """A simulated scan, written once per session."""
    path = sim_dir / f"{name}.h5"
    if not path.exists():
        simulate_scan(path, SimulationConfig(**config))
    return path


@pytest.fixture(scope="session")
def sim_scan(sim_dir: Path) -> Path:
    """4 coils, 64x64, 2 slices, brain (phantom without mricron-data), sigma 0.02."""
    return simulated(sim_dir, "sim4", matrix=64, coils=4, slices=2, noise=0.02, seed=3)


@pytest.fixture(scope="session")
def real_scan() -> Path:
    """The bundled real 0.055 T FSE scan (converted from the CC0 release)."""
    return bundled_scan()


def read_images(path: Path) -> dict[str, list[ismrmrd.Image]]:
    """Every image series of the newest group of an output file."""
    with h5py.File(path, "r") as f:
        group = sorted(f.keys())[-1]
        names = [n for n in f[group] if n.startswith("image_")]
    dataset = ismrmrd.Dataset(str(path), group, create_if_needed=False)
    try:
        return {n: [dataset.read_image(n, i) for i in range(dataset.number_of_images(n))] for n in names}
    finally:
        dataset.close()


def image_stack(images: list[ismrmrd.Image]) -> np.ndarray:
    """[S, Y, X] in slice order."""
    ordered = sorted(images, key=lambda im: im.slice)
    return np.stack([im.data[0, 0] for im in ordered])
