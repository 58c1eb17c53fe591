"""The CSC gadget in the chain: reconstruction beats zero-filling on simulated data with ground
truth, the inspection series are sent, a per-scan dictionary is a property change, and the
reconstruction does not depend on the order of the dictionary's filters."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from adacsc.chain.config import load_chain
from adacsc.core.network import MapNetwork
from adacsc.core.app import CSCRecon
from adacsc.core.lambdas import FixedLambda, NoiseMultiple
from adacsc.core.reconstruct import DEFAULT_NOISE_LAMBDA
from adacsc.io.dictionary_file import load_named_dictionary, save_dictionary
from adacsc.io.weights_file import save_model
from adacsc.gadgets.csc import GADGET, ReconSettings, Settings, build_recon
from adacsc.metrics import psnr, ssim
from adacsc.replay import replay
from adacsc.simulation.ground_truth import ideal_combined_magnitude, read_ground_truth
from support.scans import image_stack, needs_brain, read_images, simulated

FAST = {"iterations": "24"}


@pytest.fixture(scope="module")
def noisy_scan(sim_dir: Path) -> Path:
    return simulated(sim_dir, "noisy", matrix=64, coils=4, slices=2, noise=0.05, seed=21)


@pytest.fixture()
def model_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Operator folders holding an (untrained, seeded) V3 network and a permuted dictionary."""
    weights, dictionaries = tmp_path / "weights", tmp_path / "dictionaries"
    weights.mkdir()
    dictionaries.mkdir()
    torch.manual_seed(0)
    save_model(MapNetwork(), weights / "seeded.safetensors", scalars={"beta": 4.0})
    base = load_named_dictionary("gabor9x9_k32")
    order = np.random.default_rng(0).permutation(base.num_filters)
    save_dictionary(base, dictionaries / "same.npz")
    save_dictionary(base.permuted(order), dictionaries / "permuted.npz")
    monkeypatch.setenv("ADACSC_WEIGHTS_DIR", str(weights))
    monkeypatch.setenv("ADACSC_DICTIONARY_DIR", str(dictionaries))
    return weights, dictionaries


def build(settings: Settings, **changes: object) -> CSCRecon:
    """The reconstruction the gadget builds for these settings."""
    return build_recon(ReconSettings.of(dataclasses.replace(settings, **changes)))


@needs_brain
def test_scalar_csc_beats_zero_filled(noisy_scan: Path, tmp_path: Path) -> None:
    chain = load_chain("adacsc_lowfield").with_overrides(
        {**FAST, "mode": "scalar", "lambda": "0.3", "beta": "4", "super_resolution": "1"})
    result = replay(noisy_scan, tmp_path / "out.h5", chain)
    assert result.images == {"image_1": 2, "image_2": 2, "image_3": 2}
    series = read_images(tmp_path / "out.h5")
    recon, zero_filled = image_stack(series["image_1"]), image_stack(series["image_2"])
    reference = ideal_combined_magnitude(read_ground_truth(noisy_scan))
    for s in range(2):
        assert psnr(recon[s], reference[s]) > psnr(zero_filled[s], reference[s]) + 3
        assert ssim(recon[s], reference[s]) > ssim(zero_filled[s], reference[s]) + 0.05
    assert all(im.meta["DataRole"] == "CSC" and im.meta["Mode"] == "scalar" for im in series["image_1"])
    assert np.allclose(image_stack(series["image_3"]), 0.3)


def test_super_resolution_grid_and_series(sim_scan: Path, tmp_path: Path, model_folders: tuple[Path, Path]) -> None:
    chain = load_chain("adacsc_lowfield").with_overrides(
        {**FAST, "weights": "seeded", "dictionary": "same.npz"})
    replay(sim_scan, tmp_path / "out.h5", chain)
    series = read_images(tmp_path / "out.h5")
    for name in ("image_1", "image_2", "image_3"):
        assert [list(im.getHead().matrix_size) for im in series[name]] == [[128, 128, 1]] * 2
        assert all(np.isfinite(im.data).all() for im in series[name])
    recon = series["image_1"][0]
    assert recon.meta["Dictionary"] == "gabor9x9_k32" and recon.meta["Filters"] == "32"
    assert float(recon.field_of_view[0]) > 0
    maps = image_stack(series["image_3"])
    assert (maps > 0).all() and (maps < MapNetwork().lambda_max).all()


def test_filter_permutation_leaves_the_reconstruction_unchanged(
        sim_scan: Path, tmp_path: Path, model_folders: tuple[Path, Path]) -> None:
    outputs = {}
    for name in ("same.npz", "permuted.npz"):
        chain = load_chain("adacsc_lowfield").with_overrides({**FAST, "weights": "seeded", "dictionary": name})
        replay(sim_scan, tmp_path / f"{name}.h5", chain)
        outputs[name] = image_stack(read_images(tmp_path / f"{name}.h5")["image_1"])
    scale = np.abs(outputs["same.npz"]).max()
    assert np.abs(outputs["same.npz"] - outputs["permuted.npz"]).max() < 1e-4 * scale


def test_dictionary_names_are_not_paths(sim_scan: Path, tmp_path: Path, model_folders: tuple[Path, Path]) -> None:
    for hostile in ("../weights/seeded.safetensors", "/etc/passwd", "..%2Fx.npz"):
        chain = load_chain("adacsc_lowfield").with_overrides({**FAST, "dictionary": hostile})
        with pytest.raises(RuntimeError, match="dictionary"):
            replay(sim_scan, tmp_path / "out.h5", chain)
    chain = load_chain("adacsc_lowfield").with_overrides({**FAST, "weights": "../x"})
    with pytest.raises(RuntimeError, match="weights"):
        replay(sim_scan, tmp_path / "out.h5", chain)


def test_scalar_mode_takes_the_trained_beta_unless_set(model_folders: tuple[Path, Path]) -> None:
    defaults = GADGET.parse({"mode": "scalar", "weights": "seeded", "iterations": "2"})
    recon = build(defaults)
    # beta from the weights' metadata; the default lambda follows the noise
    assert recon.lowpass.beta == 4.0 and recon.sparsity == NoiseMultiple(DEFAULT_NOISE_LAMBDA)
    assert recon.mode == "scalar"
    assert build(defaults, beta=1.5).lowpass.beta == 1.5
    assert build(defaults, lam=0.08).sparsity == FixedLambda(0.08)
    with pytest.raises(ValueError, match="no weights named"):
        build(defaults, weights="missing")


def test_settings_follow_the_weights_unless_set(model_folders: tuple[Path, Path]) -> None:
    weights, _ = model_folders
    save_model(MapNetwork(), weights / "tv.safetensors", scalars={"beta": 2.0, "iterations": 12, "tv_weight": 0.5})
    defaults = GADGET.parse({"weights": "tv", "dictionary": "same.npz"})
    recon = build(defaults)
    assert (recon.iterations, recon.lowpass.kind, recon.lowpass.tv_weight, recon.mode) == (12, "tv", 0.5, "maps")
    assert recon.solver.lowpass == "tv" and recon.solver.tv_weight == 0.5
    recon = build(defaults, iterations=5, lowpass="tikhonov")
    assert (recon.iterations, recon.lowpass.kind, recon.lowpass.beta) == (5, "tikhonov", 2.0)
    old = build(defaults, weights="seeded")  # weights without these settings: the published ones
    assert (old.iterations, old.lowpass.kind) == (64, "tikhonov")


def test_noise_level_from_the_noise_scan_or_estimated(noisy_scan: Path, tmp_path: Path) -> None:
    base = {**FAST, "mode": "scalar", "super_resolution": "1", "send_zero_filled": "false", "send_maps": "false"}
    replay(noisy_scan, tmp_path / "scan.h5", load_chain("adacsc_lowfield").with_overrides(base))
    images = read_images(tmp_path / "scan.h5")["image_1"]
    assert {(im.meta["NoiseSource"], im.meta["NoiseLevel"]) for im in images} == {("noise scan", "1")}
    chain = load_chain("adacsc_lowfield").with_overrides({**base, "perform_noise_adjust": "false"})
    replay(noisy_scan, tmp_path / "estimated.h5", chain)
    images = read_images(tmp_path / "estimated.h5")["image_1"]
    assert {im.meta["NoiseSource"] for im in images} == {"estimated from the image"}
    assert all(float(im.meta["NoiseLevel"]) > 0 for im in images)
