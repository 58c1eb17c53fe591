"""The typed reconstruction app (adacsc.core.app.CSCRecon): one slice's k-space block in, its
images on the super-resolved grid out, with Lambda chosen one of three typed ways."""

import numpy as np
import pytest
import torch

from adacsc.core.app import CSCRecon, FixedLambda, LowPass, SparsityMaps
from adacsc.core.dictionary import random_dictionary
from adacsc.core.network import MapNetwork, NetworkConfig
from adacsc.core.reconstruct import NoiseMultiple

CPU = torch.device("cpu")


def kspace(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((12, 10)) + 1j * rng.standard_normal((12, 10))).astype(np.complex64)


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
