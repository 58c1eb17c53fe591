"""Noise-free input (issue 19, item 9): a noise floor and a warning instead of a solver scaled by
a rounding-level noise estimate, and the same images from `adacsc recon` and `adacsc send`."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from adacsc.chain.config import load_chain
from adacsc.client import send_scan
from adacsc.replay import replay
from adacsc.simulation.small_scan import write_small_scan
from support.scans import read_images
from support.server import threaded_server

pytestmark = pytest.mark.timeout(300)
CHAIN = "adacsc_lowfield"


def _stack(images: list) -> np.ndarray:
    return np.stack([image.data for image in sorted(images, key=lambda i: i.slice)]).astype(np.float64)


def _recon_and_send(scan: Path, tmp_path: Path) -> tuple[dict, dict, list[str]]:
    replay(scan, tmp_path / "recon.h5", load_chain(CHAIN, allow_paths=False), "g")
    with threaded_server(workers=1) as running:
        result = send_scan(scan, tmp_path / "send.h5", port=running.port, config_name=CHAIN, group="g", timeout=240)
    assert result.ok, result.errors
    return read_images(tmp_path / "recon.h5", "g"), read_images(tmp_path / "send.h5", "g"), result.texts


def _check(recon: dict, sent: dict, texts: list[str]) -> None:
    assert any("no measurable noise" in text and "noise floor" in text for text in texts), texts
    csc, zero_filled = _stack(recon["image_1"]), _stack(recon["image_2"])
    assert np.abs(csc).max() < 3 * np.abs(zero_filled).max()  # stable, not rounding amplified
    for series in recon:
        a, b = _stack(recon[series]), _stack(sent[series])
        assert np.linalg.norm(a - b) <= 1e-3 * np.linalg.norm(a), series
    assert recon["image_1"][0].meta["NoiseSource"] == "floor (the image has no measurable noise)"


def test_noise_free_scan_gets_a_floor_and_both_routes_agree(tmp_path):
    scan = write_small_scan(tmp_path / "clean.h5", coils=4, lines=32, slices=1, noise=0, kspace_noise=0.0)
    _check(*_recon_and_send(scan, tmp_path))


def test_noise_free_shepp_logan_from_ismrmrd_tools(tmp_path):
    tool = shutil.which("ismrmrd_generate_cartesian_shepp_logan")
    if tool is None:
        pytest.skip("ismrmrd_generate_cartesian_shepp_logan not installed (Debian package ismrmrd-tools)")
    scan = tmp_path / "shepp_logan.h5"
    subprocess.run([tool, "-m", "64", "-c", "4", "-n", "0", "-o", str(scan)], check=True, capture_output=True,
                   cwd=tmp_path, timeout=60)
    _check(*_recon_and_send(scan, tmp_path))
