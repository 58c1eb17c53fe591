"""Shared fixtures: simulated scans written by our own simulator, the bundled real scans, and an
isolated noise-covariance folder per test."""

from pathlib import Path

import pytest
import torch

from adacsc.resources import bundled_scan
from adacsc.runtime import configure_process
from support.scans import simulated

configure_process()  # the test session is an entry point, as the command line is (adacsc.runtime)


@pytest.fixture(autouse=True)
def one_torch_thread() -> None:
    """Test problems are small: one torch thread is as fast and avoids thread-pool stalls on a
    busy 2-core CPU (up to 10x here)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


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


@pytest.fixture(scope="session")
def sim_scan(sim_dir: Path) -> Path:
    """4 coils, 64x64, 2 slices, brain (phantom without mricron-data), sigma 0.02."""
    return simulated(sim_dir, "sim4", matrix=64, coils=4, slices=2, noise=0.02, seed=3)


@pytest.fixture(scope="session")
def real_scan() -> Path:
    """The bundled real 0.055 T FSE scan (converted from the CC0 release)."""
    return bundled_scan()
