"""The typed reconstruction app (adacsc.core.app.CSCRecon): one slice's k-space block in, its
images on the super-resolved grid out, with Lambda chosen one of three typed ways; built from the
trained settings, and giving exactly what the reconstructor it wraps gives."""

import numpy as np
import pytest
import torch

from adacsc.core.app import CSCRecon, LowPass, TrainedSettings
from adacsc.core.dictionary import random_dictionary
from adacsc.core.filter_bank import FilterBank
from adacsc.core.lambdas import FixedLambda, NoiseMultiple, SparsityMaps
from adacsc.core.network import MapNetwork, NetworkConfig
from adacsc.core.reconstruct import CSCReconstructor

CPU = torch.device("cpu")


def kspace(seed: int = 0, shape: tuple[int, int] = (12, 10)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


@pytest.mark.parametrize("sparsity", [FixedLambda(0.1), NoiseMultiple(2.0)], ids=["fixed", "noise multiple"])
def test_scalar_modes_give_images_and_a_constant_map_on_the_grid(sparsity) -> None:
    recon = CSCRecon(random_dictionary(4, 3), sparsity, iterations=3, super_resolution=2, device=CPU,
                     lowpass=LowPass("tv", tv_weight=0.7))
    lines = np.ones(12, bool)
    lines[::3] = False
    images = recon(kspace(), lines, noise_std=0.05)
    assert recon.mode == "scalar" and recon.iterations == 3
    for image in (images.reconstruction, images.zero_filled, images.mean_map):
        assert image.shape == (24, 20) and image.dtype == np.float32
    assert np.ptp(images.mean_map) == 0 and images.mean_map[0, 0] > 0


def test_maps_mode_runs_the_network_and_says_so() -> None:
    torch.manual_seed(0)
    recon = CSCRecon(random_dictionary(4, 3), SparsityMaps(MapNetwork(NetworkConfig())), iterations=2,
                     super_resolution=1, device=CPU)
    images = recon(kspace(1), np.ones(12, bool), noise_std=0.05)
    assert recon.mode == "maps" and images.mean_map.shape == (12, 10)
    assert "mode maps" in recon.describe() and "tikhonov low-pass" in recon.describe()


def test_bad_settings_and_inputs_are_named() -> None:
    with pytest.raises(TypeError, match="sparsity must be"):
        CSCRecon(random_dictionary(4, 3), 0.1, iterations=2, super_resolution=1, device=CPU)
    with pytest.raises(ValueError, match="lambda must be a finite number"):
        FixedLambda(float("nan"))
    with pytest.raises(ValueError, match="low-pass must be one of"):
        LowPass("median")
    recon = CSCRecon(random_dictionary(4, 3), FixedLambda(0.1), iterations=2, super_resolution=1, device=CPU)
    with pytest.raises(ValueError, match="one flag per line"):
        recon(kspace(), np.ones(5, bool), noise_std=0.05)


@pytest.mark.parametrize("sparsity", ["maps", "noise maps", FixedLambda(0.1), NoiseMultiple(2.0)])
@pytest.mark.parametrize("lowpass", ["tikhonov", "tv"])
def test_the_app_gives_exactly_what_the_reconstructor_gives(sparsity, lowpass) -> None:
    """CSCRecon (the gadget's, the evaluation's and the training validation's front door) adds
    nothing to the numbers: the reconstructor built and called by hand, with the same filters,
    settings, grid, mask and noise level, gives the same images bit for bit."""
    torch.manual_seed(0)
    if sparsity in ("maps", "noise maps"):
        preset = "noise" if sparsity == "noise maps" else "light"
        sparsity = SparsityMaps(MapNetwork(NetworkConfig.preset(preset, initial_lambda=None)).eval())
    dictionary = random_dictionary(6, 5, seed=3)
    trained = TrainedSettings.from_scalars({"beta": 0.7, "iterations": 5, **({"tv_weight": 0.6} if lowpass == "tv"
                                                                              else {})})
    recon = CSCRecon.from_trained(dictionary, sparsity, trained, super_resolution=2, device=CPU)
    lines = np.ones(16, bool)
    lines[1::3] = False
    data = kspace(4, shape=(16, 12)) * 8
    images = recon(data, lines, noise_std=0.3)

    solver = CSCReconstructor(FilterBank(dictionary.filters), beta=0.7, lowpass=lowpass, tv_weight=trained.tv_weight)
    mask = np.broadcast_to(lines[:, None], data.shape).astype(np.float32)
    result = solver.infer(torch.from_numpy(data)[None], (32, 24), sparsity, 5, mask=mask, noise_std=0.3)
    assert np.array_equal(images.reconstruction, result.image[0].abs().numpy())
    assert np.array_equal(images.zero_filled, result.x0[0].abs().numpy())
    lam = result.lam
    mean_map = lam.mean(dim=1)[0].expand(32, 24) if isinstance(lam, torch.Tensor) else torch.full((32, 24), lam)
    assert np.array_equal(images.mean_map, mean_map.numpy())
    assert recon.iterations == 5 and recon.lowpass == LowPass(lowpass, beta=0.7, tv_weight=trained.tv_weight)


def test_from_trained_follows_the_weights_and_the_overrides() -> None:
    trained = TrainedSettings.from_scalars({"beta": 2.0, "iterations": 12, "tv_weight": 0.5})
    assert trained == TrainedSettings(beta=2.0, iterations=12, lowpass="tv", tv_weight=0.5)
    assert TrainedSettings.from_scalars({}) == TrainedSettings()
    chosen = trained.overridden(iterations=3, lowpass="tikhonov", beta=None)
    assert chosen == TrainedSettings(beta=2.0, iterations=3, lowpass="tikhonov", tv_weight=0.5)
    recon = CSCRecon.from_trained(random_dictionary(4, 3), FixedLambda(0.1), chosen, super_resolution=2, device=CPU)
    assert recon.iterations == 3 and recon.lowpass == LowPass("tikhonov", beta=2.0, tv_weight=0.5)
    assert float(recon.solver.beta.detach()) == pytest.approx(2.0)


def test_another_lambda_shares_the_solver_and_matches_a_fresh_build() -> None:
    dictionary = random_dictionary(4, 3, seed=1)
    recon = CSCRecon(dictionary, FixedLambda(0.1), iterations=4, super_resolution=2, device=CPU)
    other = recon.with_sparsity(NoiseMultiple(1.5))
    assert other.solver is recon.solver and other.sparsity == NoiseMultiple(1.5) and recon.sparsity == FixedLambda(0.1)
    fresh = CSCRecon(dictionary, NoiseMultiple(1.5), iterations=4, super_resolution=2, device=CPU)
    lines = np.ones(12, bool)
    assert np.array_equal(other(kspace(2), lines, 0.2).reconstruction, fresh(kspace(2), lines, 0.2).reconstruction)
    with pytest.raises(TypeError, match="sparsity must be"):
        recon.with_sparsity(0.3)


def test_a_batch_solve_gives_each_slice_what_a_lone_solve_gives() -> None:
    recon = CSCRecon(random_dictionary(4, 3, seed=2), NoiseMultiple(2.0), iterations=4, super_resolution=2, device=CPU)
    y = torch.from_numpy(np.stack([kspace(5), kspace(6)]))
    both = recon.solve(y, (24, 20), torch.tensor([0.1, 0.2]))
    for i, noise in enumerate((0.1, 0.2)):
        alone = recon(y[i].numpy(), np.ones(12, bool), noise).reconstruction
        np.testing.assert_allclose(both.image[i].abs().numpy(), alone, rtol=1e-5, atol=1e-5 * float(alone.max()))
