"""BART `pics` baseline (adacsc.evaluation.bart) against the real `bart` (CI installs the Debian package)."""

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from adacsc.evaluation.bart import REGULARISERS, BartError, bart_version, find_bart, pics
from adacsc.metrics import psnr
from adacsc.simulation.phantom import phantom_slices
from adacsc.training.lowfield import fixed_lowfield

try:
    find_bart()
except BartError:
    pytest.skip("BART (`bart`) is not installed", allow_module_level=True)


def smooth_images() -> torch.Tensor:
    """Two smooth complex 64x64 images (a Gaussian blob with a phase ramp, and a shifted copy)."""
    v, u = np.mgrid[:64, :64] / 64 - 0.5
    blob = np.exp(-((v - 0.05) ** 2 + (u + 0.1) ** 2) / 0.05) * np.exp(1j * (2 * u + v))
    return torch.from_numpy(np.stack([blob, np.roll(blob, (5, -3), axis=(0, 1))]).astype(np.complex64))


def test_version() -> None:
    assert bart_version().startswith("v")


@pytest.mark.parametrize("regulariser", sorted(REGULARISERS))
def test_full_sampling_reproduces_image(regulariser: str) -> None:
    """Same FFT convention and units: full k-space, no noise, tiny lambda -> the image itself."""
    batch = fixed_lowfield(smooth_images(), 0.0, block_fraction=1.0)
    x = batch.target.numpy()
    out = pics(batch.kspace.numpy(), batch.grid_shape, regulariser, 1e-6, iterations=30)
    assert out.shape == x.shape and out.dtype == np.complex64
    assert np.linalg.norm(out - x) / np.linalg.norm(x) < 1e-2
    single = pics(batch.kspace.numpy()[1], batch.grid_shape, regulariser, 1e-6, iterations=30)
    assert single.shape == x.shape[1:]
    np.testing.assert_array_equal(single, out[1])  # one call per image: batching changes nothing


@pytest.mark.parametrize(("regulariser", "lam"), [("wavelet", 0.01), ("tv", 0.01)])
def test_super_resolution_beats_zero_filled(regulariser: str, lam: float) -> None:
    """50% block, noise 0.1, on a Shepp-Logan slice: pics beats the zero-filled image, reproducibly."""
    x = torch.from_numpy(phantom_slices(64, np.array([0.0]), rng=np.random.default_rng(0)))
    batch = fixed_lowfield(x, 0.1)
    assert batch.kspace.shape[-2:] == (32, 32)
    out = pics(batch.kspace.numpy(), batch.grid_shape, regulariser, lam)
    again = pics(batch.kspace.numpy(), batch.grid_shape, regulariser, lam)
    np.testing.assert_array_equal(out, again)
    truth = np.abs(x[0].numpy())
    zero_filled = psnr(np.abs(batch.zero_filled()[0].numpy()), truth)
    assert psnr(np.abs(out[0]), truth) > zero_filled + 0.5


def test_missing_bart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("BART_TOOLBOX_PATH", raising=False)
    with pytest.raises(BartError, match="not found on PATH or in \\$BART_TOOLBOX_PATH"):
        find_bart()
    with pytest.raises(BartError, match="Debian package `bart`"):
        pics(np.ones((4, 4), np.complex64), (8, 8), "tv", 0.01)


def test_bart_toolbox_path(monkeypatch: pytest.MonkeyPatch) -> None:
    real = find_bart()
    monkeypatch.setenv("PATH", "")
    monkeypatch.setenv("BART_TOOLBOX_PATH", str(Path(real).parent))
    assert find_bart() == str(Path(real).parent / "bart")


def test_failing_command_reports_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bart"
    fake.write_text("#!/bin/sh\necho 'pics: something broke' >&2\nexit 3\n")
    fake.chmod(0o755)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.raises(BartError, match="exit status 3: pics: something broke"):
        pics(np.ones((4, 4), np.complex64), (8, 8), "tv", 0.01, bart=str(fake))
    assert not any(scratch.iterdir())  # the .cfl/.hdr files are gone


def test_bad_arguments() -> None:
    k = np.ones((4, 4), np.complex64)
    with pytest.raises(ValueError, match="unknown regulariser"):
        pics(k, (8, 8), "l2", 0.01)
    with pytest.raises(ValueError, match="does not fit"):
        pics(k, (2, 8), "tv", 0.01)
    with pytest.raises(ValueError, match="lam"):
        pics(k, (8, 8), "tv", -1.0)
