"""The adaptive low-pass option of NET_Theta V3 ("noise-tv" preset): the U-Net also reads the TV
part's filter responses, and a per-image U-Net sets the TV weight per pixel. The method's promises
hold (permutation equivariance, any K and filter size, units of the noise), the reconstructor wires
it in, and fine-tuning starts it as an exact copy of trained weights."""

import dataclasses

import pytest
import torch

from adacsc.core.convolution import Synthesis
from adacsc.core.filter_bank import FilterBank
from adacsc.core.lambdas import FixedLambda, LambdaInputs, LambdaStrategy, SparsityMaps
from adacsc.core.network import MapNetwork, NetworkConfig
from adacsc.core.reconstruct import CSCReconstructor
from adacsc.training.finetune import start_from


def D(filters: torch.Tensor) -> Synthesis:
    return Synthesis(FilterBank(filters))


def _image(batch=2, size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    blob = ((yy - size / 2) ** 2 + (xx - size / 3) ** 2 < (size / 4) ** 2).to(torch.complex64)
    return 3.0 * blob + 0.3 * torch.randn(batch, size, size, dtype=torch.complex64, generator=g)


def _filters(k, size=9, seed=1):
    d = torch.randn(k, size, size, generator=torch.Generator().manual_seed(seed))
    return d / d.flatten(1).norm(dim=1).view(k, 1, 1)


def _network(seed=0) -> MapNetwork:
    """A noise-tv network whose new parts are not no-ops (random heads), so tests can fail."""
    torch.manual_seed(seed)
    net = MapNetwork(NetworkConfig.preset("noise-tv", initial_lambda=None)).eval()
    with torch.no_grad():
        net.tv_unet.head.weight.normal_(0.0, 0.5)
        net.tv_unet.head.bias.fill_(0.1)
    return net


def test_maps_read_the_lowpass_part_and_stay_permutation_equivariant():
    net = _network()
    assert net.uses_noise and net.uses_lowpass and net.sets_lowpass_weight
    x, d = _image(), _filters(16)
    low = _image(seed=4)
    sigma = torch.tensor([0.3, 0.1])
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        maps = net(x, D(d), sigma, x_low=low)
        permuted = net(x, D(d[perm]), sigma, x_low=low)
        other_low = net(x, D(d), sigma, x_low=0.5 * low)
    assert (permuted - maps[:, perm]).abs().max() <= 1e-5 * net.lambda_max
    assert (maps - other_low).abs().max() > 1e-3  # the low-pass image matters
    with pytest.raises(ValueError, match="x_low"):
        net(x, D(d), sigma)
    with pytest.raises(ValueError, match="shape"):
        net(x, D(d), sigma, x_low=low[:, :40])


def test_any_k_and_filter_size_and_units_of_the_noise():
    net = _network()
    x, low = _image(batch=1), _image(batch=1, seed=4)
    sigma = torch.tensor([0.2])
    with torch.no_grad():
        for k, size in [(4, 7), (32, 11), (128, 9)]:
            maps = net(x, D(_filters(k, size)), sigma, x_low=low)
            assert maps.shape == (1, k, 48, 48) and torch.isfinite(maps).all()
        d = D(_filters(8))
        maps = net(x, d, sigma, x_low=low)
        scaled = net(25.0 * x, d, 25.0 * sigma, x_low=25.0 * low)  # the same data in other units
        assert torch.allclose(25.0 * maps, scaled, rtol=1e-4)
        weights = net.lowpass_weights(x, sigma)
        assert torch.allclose(weights, net.lowpass_weights(25.0 * x, 25.0 * sigma), rtol=1e-4)


def test_tv_weight_map_is_per_image_bounded_and_starts_at_one():
    net = _network()
    x, sigma = _image(), torch.tensor([0.3, 0.1])
    with torch.no_grad():
        weights = net.lowpass_weights(x, sigma)
    r = net.config.tv_map_range
    assert weights.shape == (2, 48, 48)
    assert ((weights > 1 / r) & (weights < r)).all()
    assert weights.std() > 1e-3  # the random head makes it vary
    # each image's map depends on that image only
    with torch.no_grad():
        assert torch.allclose(net.lowpass_weights(x[1:], sigma[1:]), weights[1:], atol=1e-6)
    fresh = MapNetwork(NetworkConfig.preset("noise-tv"))
    with torch.no_grad():
        assert torch.equal(fresh.lowpass_weights(x, sigma), torch.ones(2, 48, 48))
    with pytest.raises(ValueError, match="tv_map"):
        MapNetwork(NetworkConfig.preset("noise")).lowpass_weights(x, sigma)


def test_config_needs_the_noise_aware_network():
    with pytest.raises(ValueError, match="noise-aware"):
        NetworkConfig(lowpass_input=True)
    with pytest.raises(ValueError, match="noise-aware"):
        NetworkConfig(tv_map=True)
    with pytest.raises(ValueError, match="tv_map_range"):
        NetworkConfig.preset("noise-tv", tv_map_range=1.0)
    config = NetworkConfig.preset("noise-tv")
    assert NetworkConfig.from_json(config.to_json()) == config


def _kspace(batch=2, size=32, seed=0):
    truth = _image(batch, 2 * size, seed)
    k = torch.fft.fftshift(torch.fft.fft2(truth, norm="ortho"), dim=(-2, -1))
    c = size // 2
    return truth, k[:, c:c + size, c:c + size].contiguous()


class _Spy(LambdaStrategy):
    """SparsityMaps that records what the reconstructor handed it."""

    def __init__(self, network: MapNetwork) -> None:
        self.inner, self.seen = SparsityMaps(network), {}

    def lowpass_weights(self, inputs: LambdaInputs):
        self.seen["before"] = inputs.x_low
        return self.inner.lowpass_weights(inputs)

    def thresholds(self, inputs: LambdaInputs):
        self.seen["x_low"] = inputs.x_low
        return self.inner.thresholds(inputs)


def test_the_reconstructor_uses_the_tv_map_and_the_lowpass_input():
    net = _network()
    d = _filters(8, 7)
    _, y = _kspace()
    noise = torch.tensor([0.05, 0.1])
    recon = CSCReconstructor(FilterBank(d), lowpass="tv")
    spy = _Spy(net)
    res = recon.infer(y, (64, 64), spy, 4, noise_std=noise)
    assert res.lowpass_weights is not None and res.lowpass_weights.shape == (2, 64, 64)
    assert spy.seen["before"] is None  # the TV map is set before the low-pass part exists
    assert torch.allclose(spy.seen["x_low"] * res.scale.view(2, 1, 1), res.x_low)
    # the TV part is the TV with that weight map, not the constant weight
    constant = recon.infer(y, (64, 64), FixedLambda(0.1), 4, noise_std=noise)
    assert (res.x_low - constant.x_low).abs().max() > 1e-4
    assert constant.lowpass_weights is None
    with pytest.raises(ValueError, match="TV low-pass"):
        CSCReconstructor(FilterBank(d)).infer(y, (64, 64), SparsityMaps(net), 4, noise_std=noise)


def test_training_reaches_every_new_part():
    net = _network().train()
    with torch.no_grad():  # thresholds of about half the noise: codes survive them
        net.unet.head.bias.fill_(-3.0)
    d = _filters(6, 7)
    truth, y = _kspace(batch=1)
    recon = CSCReconstructor(FilterBank(d), lowpass="tv")
    res = recon(y, (64, 64), SparsityMaps(net), 3, noise_std=torch.tensor([0.05]))
    assert res.codes.abs().max() > 0
    (res.image - truth).abs().square().mean().backward()
    first = net.unet.encoder[0][0].weight.grad
    assert first is not None and first[:, 3:].abs().max() > 0  # the low-pass input channels
    assert net.tv_unet.head.weight.grad.abs().max() > 0
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_fine_tuning_starts_as_an_exact_copy():
    torch.manual_seed(2)
    source = MapNetwork(NetworkConfig.preset("noise", initial_lambda=None)).eval()
    net = MapNetwork(NetworkConfig.preset("noise-tv", initial_lambda=None)).eval()
    kept = start_from(net, source)
    assert kept and all(name.startswith("tv_unet.") for name in kept)
    d = _filters(8, 7)
    _, y = _kspace()
    noise = torch.tensor([0.05, 0.1])
    recon = CSCReconstructor(FilterBank(d), lowpass="tv")
    a = recon.infer(y, (64, 64), SparsityMaps(source), 6, noise_std=noise)
    b = recon.infer(y, (64, 64), SparsityMaps(net), 6, noise_std=noise)
    assert torch.equal(a.x_low, b.x_low)
    assert torch.allclose(a.image, b.image, atol=1e-5 * float(a.image.abs().max()))
    light = MapNetwork(NetworkConfig.preset("noise-tv", base_channels=4))
    with pytest.raises(ValueError, match="configuration"):
        start_from(light, source)
    with pytest.raises(ValueError, match="configuration"):
        start_from(net, MapNetwork(dataclasses.replace(source.config, lambda_max=4.0)))
