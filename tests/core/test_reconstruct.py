"""The CSC reconstructor: METHOD.md steps 1-5, scaling, batching, Lambda strategies, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adacsc.core.dictionary import Dictionary, random_dictionary
from adacsc.core.filter_bank import FilterBank
from adacsc.core.fourier import SampledFourier
from adacsc.core.lambdas import FixedLambda, LambdaInputs, LambdaMaps, LambdaStrategy, SparsityMaps
from adacsc.core.lowpass import lowpass
from adacsc.core.reconstruct import CSCReconstructor
from adacsc.io.dictionary_file import load_named_dictionary
from adacsc.core.scaling import robust_scale

ACQ, GRID = (24, 24), (48, 48)


def bank(dictionary: Dictionary) -> FilterBank:
    return FilterBank(dictionary.filters)


def phantom(n: int = 48, seed: int = 0) -> torch.Tensor:
    """A smooth-edged complex test object with max |x| = 1."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n] / n - 0.5
    img = np.zeros((n, n))
    for _ in range(6):
        cy, cx, r = rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), rng.uniform(0.05, 0.2)
        img += rng.uniform(0.3, 1.0) / (1 + np.exp(((yy - cy) ** 2 + (xx - cx) ** 2 - r ** 2) * 400))
    img = img * np.exp(1j * 2 * np.pi * (0.3 * xx + 0.1 * yy))
    return torch.tensor(img / np.abs(img).max(), dtype=torch.complex64)


def data(batch: int = 2, snr: float = 20.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """k-space blocks in SNR units (noise std 1) and the objects on the grid."""
    gen = torch.Generator().manual_seed(seed)
    truth = torch.stack([phantom(GRID[0], seed + b) for b in range(batch)]) * snr
    y = SampledFourier(ACQ, GRID)(truth)
    noise = torch.complex(torch.randn(y.shape, generator=gen), torch.randn(y.shape, generator=gen)) / math.sqrt(2)
    return y + noise, truth


@pytest.fixture(scope="module")
def rec() -> CSCReconstructor:
    return CSCReconstructor(bank(random_dictionary(16, 7, seed=0)), beta=1.0)


def test_steps_of_the_method(rec):
    y, _ = data()
    out = rec.infer(y, GRID, FixedLambda(0.05), 16)
    A = SampledFourier(ACQ, GRID)
    x0 = A.adjoint(y)
    torch.testing.assert_close(out.x0, x0)
    torch.testing.assert_close(out.scale, robust_scale(x0))
    s = out.scale.reshape(-1, 1, 1)
    torch.testing.assert_close(out.x_low, lowpass(x0 / s, 1.0) * s, atol=1e-5, rtol=1e-5)
    op, lip = rec.operator(None, ACQ, GRID, None, torch.device("cpu"), torch.complex64)
    torch.testing.assert_close(out.lipschitz, lip)
    torch.testing.assert_close(out.image - out.x_low, op.synthesis(out.codes), atol=1e-4, rtol=1e-5)
    assert out.image.shape == (2,) + GRID and out.codes.shape == (2, 16) + GRID
    assert out.image.dtype == torch.complex64


def test_reconstruction_beats_zero_filling_and_lowpass():
    y, truth = data(snr=10.0)
    rec = CSCReconstructor(bank(load_named_dictionary("dct7x7_k48")))
    out = rec.infer(y, GRID, FixedLambda(0.1), 64)

    def err(x):
        return float(torch.linalg.vector_norm(x - truth) / torch.linalg.vector_norm(truth))

    # measured: x0 0.188, x_low 0.156, CSC 0.138
    assert err(out.image) < 0.8 * err(out.x0), (err(out.image), err(out.x0))
    assert err(out.image) < 0.95 * err(out.x_low), (err(out.image), err(out.x_low))


def test_scale_equivariance_and_batch_independence(rec):
    y, _ = data(batch=3)
    out = rec.infer(y, GRID, FixedLambda(0.05), 16)
    out_scaled = rec.infer(y * 7.5, GRID, FixedLambda(0.05), 16)
    torch.testing.assert_close(out_scaled.image, out.image * 7.5, atol=1e-4 * float(out.image.abs().max()) * 7.5,
                               rtol=1e-4)
    single = rec.infer(y[1:2], GRID, FixedLambda(0.05), 16)
    torch.testing.assert_close(single.image[0], out.image[1], atol=1e-5 * float(out.image.abs().max()), rtol=1e-5)


class ConstantMaps(LambdaStrategy):
    """A strategy that records what it is shown and returns constant maps."""

    def __init__(self) -> None:
        self.seen: LambdaInputs | None = None

    def thresholds(self, inputs: LambdaInputs) -> torch.Tensor:
        self.seen = inputs
        return torch.full((inputs.x0.shape[0], inputs.synthesis.num_filters) + tuple(inputs.x0.shape[-2:]), 0.05)


def test_a_strategy_sees_the_normalised_image_the_grid_operator_and_the_noise(rec):
    y, _ = data()
    maps = ConstantMaps()
    out_maps = rec.infer(y, GRID, maps, 16, noise_std=1.0)
    out_scalar = rec.infer(y, GRID, FixedLambda(0.05), 16)
    torch.testing.assert_close(out_maps.image, out_scalar.image, atol=1e-5, rtol=1e-5)
    seen = maps.seen
    # the normalised zero-filled image, D on the grid (D^H x0 is what a network looks at), sigma_n
    p99 = torch.quantile(seen.x0.abs().flatten(1), 0.99, dim=1)
    torch.testing.assert_close(p99, torch.ones(2), atol=0.02, rtol=0)
    assert seen.synthesis.num_filters == 16 and seen.synthesis.filter_shape == (7, 7)
    assert seen.synthesis.adjoint(seen.x0).shape == (2, 16) + GRID
    torch.testing.assert_close(seen.noise, 1.0 / out_maps.scale)


def test_the_network_strategy_checks_what_the_network_returns(rec):
    class WrongShape(torch.nn.Module):
        uses_noise = False

        def forward(self, x0: torch.Tensor, synthesis: object) -> torch.Tensor:
            return torch.ones(x0.shape[0], 3, *x0.shape[-2:])

    network = pytest.importorskip("adacsc.core.network")
    with pytest.raises(TypeError, match="needs a map network"):
        SparsityMaps(WrongShape())
    net = network.MapNetwork().eval()
    net.forward = WrongShape().forward
    y, _ = data()
    with pytest.raises(ValueError, match="must return Lambda maps of shape"):
        rec.infer(y, GRID, SparsityMaps(net), 2)


def test_per_call_dictionary_and_mask():
    y, _ = data()
    rec = CSCReconstructor(bank(random_dictionary(8, 5)))
    other = bank(random_dictionary(16, 9, seed=1))
    out = rec.infer(y, GRID, FixedLambda(0.05), 8, bank=other)
    assert out.codes.shape == (2, 16) + GRID
    lines = torch.zeros(ACQ[0], 1)
    lines[::2] = 1
    lines[ACQ[0] // 2 - 3: ACQ[0] // 2 + 3] = 1
    out = rec.infer(y, GRID, FixedLambda(0.05), 8, mask=lines)
    assert bool(torch.isfinite(out.image.real).all())


def test_gradients_reach_beta_and_maps():
    y, truth = data(batch=1)
    rec = CSCReconstructor(bank(random_dictionary(4, 5)), beta=0.5)
    maps = torch.full((1, 4) + GRID, 0.05, requires_grad=True)
    out = rec(y, GRID, LambdaMaps(maps * 1.0), 8)
    loss = (out.image - truth).abs().pow(2).mean()
    loss.backward()
    assert rec.log_beta.grad is not None and float(rec.log_beta.grad.abs()) > 0
    assert maps.grad is not None and float(maps.grad.abs().sum()) > 0


def test_filter_permutation_invariance_with_the_map_network():
    network = pytest.importorskip("adacsc.core.network")
    torch.manual_seed(0)
    net = network.MapNetwork().eval()
    y, _ = data(batch=1)
    d = random_dictionary(8, 7, seed=2)
    perm = np.random.default_rng(0).permutation(8)
    rec = CSCReconstructor(bank(d))
    out = rec.infer(y, GRID, SparsityMaps(net), 16)
    out_p = rec.infer(y, GRID, SparsityMaps(net), 16, bank=bank(d.permuted(perm)))
    assert float((out.image - out_p.image).abs().max()) <= 1e-4 * float(out.image.abs().max())


@pytest.mark.parametrize("kwargs, error, message", [
    ({"y": torch.zeros(2, 24, 24)}, ValueError, "complex"),
    ({"y": torch.zeros(24, 24, dtype=torch.complex64)}, ValueError, "complex tensor"),
    ({"y": torch.full((1, 24, 24), float("nan"), dtype=torch.complex64)}, ValueError, "NaN"),
    ({"grid_shape": (16, 48)}, ValueError, "exceeds"),
    ({"sparsity": 0.1}, TypeError, "sparsity must be a LambdaStrategy"),
    ({"iterations": -1}, ValueError, "iterations must be an integer >= 0"),
    ({"bank": random_dictionary(2, 3).filters}, TypeError, "bank must be a FilterBank"),
])
def test_input_errors(rec, kwargs, error, message):
    args = {"y": torch.zeros(1, 24, 24, dtype=torch.complex64), "grid_shape": GRID, "sparsity": FixedLambda(0.1),
            "iterations": 2}
    args.update(kwargs)
    with pytest.raises(error, match=message):
        rec.infer(**args)


def test_bad_settings_and_lambdas_are_named():
    with pytest.raises(ValueError, match="beta"):
        CSCReconstructor(bank(random_dictionary(2, 3)), beta=0.0)
    with pytest.raises(TypeError, match="takes a FilterBank"):
        CSCReconstructor(random_dictionary(2, 3))
    with pytest.raises(ValueError, match="lambda must be a finite number >= 0"):
        FixedLambda(-0.1)
    with pytest.raises(ValueError, match="odd sizes"):
        FilterBank(np.ones((2, 4, 4), np.float32))


def test_the_reconstructor_keeps_one_operator_per_grid_until_its_filters_change():
    rec = CSCReconstructor(bank(random_dictionary(4, 5, seed=1)))
    cpu = torch.device("cpu")
    op, lip = rec.operator(None, ACQ, GRID, None, cpu, torch.complex64)
    again, lip_again = rec.operator(None, ACQ, GRID, None, cpu, torch.complex64)
    assert again is op and lip_again is lip
    assert rec.operator(None, ACQ, (GRID[0] + 2, GRID[1]), None, cpu, torch.complex64)[0] is not op
    with torch.no_grad():
        rec.filters.mul_(2.0)
    changed, lip_changed = rec.operator(None, ACQ, GRID, None, cpu, torch.complex64)
    assert changed is not op
    torch.testing.assert_close(lip_changed, 4 * lip)
