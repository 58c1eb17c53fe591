"""NET_Theta V3 (MapNetwork) and the V1 baseline."""

import dataclasses
import json

import pytest
import torch

from adacsc.core.convolution import Synthesis
from adacsc.core.filter_bank import FilterBank

from adacsc.core.network import (
    MapNetwork,
    NetworkConfig,
    PRESETS,
    UNet,
    V1MapNetwork,
    build_network,
    filter_responses,
    pooled_filter_responses,
    image_scale,
)


def _image(batch=2, height=64, width=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, height, width, dtype=torch.complex64, generator=g)
    # some structure so that the responses differ between filters
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    blob = ((yy - height / 2) ** 2 + (xx - width / 3) ** 2 < (height / 4) ** 2).to(torch.complex64)
    return 3.0 * blob + 0.3 * x


def D(filters: torch.Tensor) -> Synthesis:
    """The synthesis operator of a filter tensor, which the networks take."""
    return Synthesis(FilterBank(filters))


def _filters(k, size=9, seed=1):
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(k, size, size, generator=g)
    return d / d.flatten(1).norm(dim=1).view(k, 1, 1)


def _tol(net):
    return 1e-5 * net.lambda_max


# -- filter responses --------------------------------------------------------------------------
def test_filter_responses_match_direct_circular_correlation():
    x = _image(batch=2, height=12, width=10)
    d = torch.randn(3, 5, 3)
    r = filter_responses(x, D(d))
    expected = torch.zeros(2, 3, 12, 10, dtype=torch.complex64)
    for k in range(3):
        for i in range(5):
            for j in range(3):
                # r[y, x] += d[c_y + a, c_x + b] * x0[y + a, x + b]
                a, b = i - 2, j - 1
                expected[:, k] += d[k, i, j] * torch.roll(x, shifts=(-a, -b), dims=(-2, -1))
    assert r.shape == (2, 3, 12, 10) and r.dtype == torch.complex64
    assert torch.allclose(r, expected, atol=1e-5)


@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("shape", [(32, 24), (30, 22)])
def test_pooled_responses_equal_pooled_full_responses(factor, shape):
    x = _image(batch=2, height=shape[0], width=shape[1])
    d = _filters(5, 7)
    full = filter_responses(x, D(d))
    pad_h, pad_w = (-shape[0]) % factor, (-shape[1]) % factor
    parts = torch.cat([full.real, full.imag], dim=1)
    parts = torch.nn.functional.pad(parts, (0, pad_w, 0, pad_h), mode="circular")
    pooled = torch.nn.functional.avg_pool2d(parts, factor)
    expected = torch.complex(pooled[:, :5], pooled[:, 5:])
    got = pooled_filter_responses(x, D(d), factor)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5)


def test_filter_responses_reject_bad_filters():
    x = _image(batch=1, height=16, width=16)
    with pytest.raises(ValueError, match="odd"):
        filter_responses(x, D(torch.randn(4, 8, 8)))
    with pytest.raises(ValueError, match="exceeds the grid"):
        filter_responses(x, D(torch.randn(4, 17, 17)))
    with pytest.raises(ValueError, match=r"\[K, h, w\]"):
        filter_responses(x, D(torch.randn(7, 7)))
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        filter_responses(x[0], D(torch.randn(4, 7, 7)))


# -- permutation equivariance -------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["light", "published", "noise"])
def test_v3_is_permutation_equivariant(preset):
    torch.manual_seed(0)
    # initial_lambda=None: sigmoid at its steepest, so untrained maps differ visibly between filters
    net = MapNetwork(NetworkConfig.preset(preset, initial_lambda=None)).eval()
    x, d = _image(height=48, width=48), _filters(16)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(3))
    noise = torch.tensor([0.3, 0.1]) if net.uses_noise else None
    with torch.no_grad():
        maps = net(x, D(d), noise)
        maps_perm = net(x, D(d[perm]), noise)
    assert (maps_perm - maps[:, perm]).abs().max().item() <= _tol(net)
    # the maps do depend on the filter (otherwise the test would be vacuous)
    assert (maps[:, 0] - maps[:, 1]).abs().max().item() > 100 * _tol(net)


def test_v3_equivariance_holds_across_chunks():
    torch.manual_seed(0)
    config = NetworkConfig(max_chunk_mb=0.05)  # forces several U-Net chunks (uneven last chunk)
    net = MapNetwork(config).eval()
    assert net._chunk_size(2, 48, 48) < 20
    x, d = _image(batch=1, height=48, width=48), _filters(20)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        maps = net(x, D(d))
        maps_perm = net(x, D(d[perm]))
        unchunked = MapNetwork(dataclasses.replace(config, max_chunk_mb=256.0))
        unchunked.load_state_dict(net.state_dict())
        maps_one_chunk = unchunked(x, D(d))
    assert (maps_perm - maps[:, perm]).abs().max().item() <= _tol(net)
    assert (maps_one_chunk - maps).abs().max().item() <= _tol(net)


def test_v1_is_not_permutation_equivariant():
    torch.manual_seed(0)
    k = 16
    net = V1MapNetwork(k, NetworkConfig(initial_lambda=None)).eval()
    x, d = _image(height=48, width=48), _filters(k)
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        maps = net(x, D(d))
        maps_perm = net(x, D(d[perm]))
    assert maps.shape == (2, k, 48, 48)
    # V1 ignores which filter sits where: channel k is the map of whatever filter is at k
    assert (maps_perm - maps[:, perm]).abs().max().item() > 100 * _tol(net)
    with pytest.raises(ValueError, match="16 filters"):
        net(x, D(_filters(8)))


# -- any K, any odd filter size ---------------------------------------------------------------
def test_same_instance_handles_any_k_and_filter_size():
    torch.manual_seed(0)
    net = MapNetwork().eval()
    x = _image(batch=1, height=40, width=48)
    with torch.no_grad():
        for k, size in [(8, 7), (32, 11), (128, 7), (8, 11), (32, 9)]:
            maps = net(x, D(_filters(k, size)))
            assert maps.shape == (1, k, 40, 48)
            assert maps.dtype == torch.float32
            assert torch.isfinite(maps).all()


@pytest.mark.parametrize("downsample", [1, 2, 4])
@pytest.mark.parametrize("shape", [(50, 46), (33, 64)])
def test_odd_image_sizes(downsample, shape):
    torch.manual_seed(0)
    net = MapNetwork(NetworkConfig(downsample=downsample)).eval()
    with torch.no_grad():
        maps = net(_image(batch=1, height=shape[0], width=shape[1]), D(_filters(4, 7)))
    assert maps.shape == (1, 4, *shape)


def test_too_small_image_is_rejected():
    net = MapNetwork(NetworkConfig(downsample=4, depth=2))
    with pytest.raises(ValueError, match="too small"):
        net(_image(batch=1, height=12, width=12), D(_filters(2, 3)))


# -- output range and scale ---------------------------------------------------------------------
def test_output_positive_and_bounded():
    torch.manual_seed(0)
    net = MapNetwork(NetworkConfig(lambda_max=2.5)).eval()
    d = _filters(8)
    with torch.no_grad():
        maps = net(_image(height=32, width=32), D(d))
        assert (maps > 0).all() and (maps < 2.5).all()
        # extreme and degenerate inputs stay within [0, lambda_max] and finite
        for x in (1e6 * _image(height=32, width=32), torch.zeros(1, 32, 32, dtype=torch.complex64)):
            maps = net(x, D(d))
            assert torch.isfinite(maps).all()
            assert (maps >= 0).all() and (maps <= 2.5).all()


def test_initial_lambda_sets_untrained_output_level():
    torch.manual_seed(0)
    net = MapNetwork(NetworkConfig(lambda_max=1.0, initial_lambda=0.05)).eval()
    with torch.no_grad():
        maps = net(_image(height=32, width=32), D(_filters(8)))
    assert 0.02 < maps.median().item() < 0.1


def test_scale_invariance_and_relative_output():
    torch.manual_seed(0)
    x, d = _image(height=32, width=32), _filters(8)
    absolute = MapNetwork(NetworkConfig(output_scaling="absolute")).eval()
    relative = MapNetwork(NetworkConfig(output_scaling="relative")).eval()
    relative.load_state_dict(absolute.state_dict())
    with torch.no_grad():
        a1, a2 = absolute(x, D(d)), absolute(40.0 * x, D(d))
        r1, r2 = relative(x, D(d)), relative(40.0 * x, D(d))
    assert torch.allclose(a1, a2, atol=_tol(absolute))
    assert torch.allclose(40.0 * r1, r2, rtol=1e-4, atol=1e-4)
    scale = image_scale(x)
    assert torch.allclose(r1, a1 * scale.view(-1, 1, 1, 1), rtol=1e-5)


def test_noise_aware_maps_are_in_units_of_the_noise():
    torch.manual_seed(0)
    net = MapNetwork(NetworkConfig.preset("noise", initial_lambda=None)).eval()
    assert net.uses_noise and not MapNetwork().uses_noise
    x, d = _image(height=32, width=32), _filters(8)
    sigma = torch.tensor([0.2, 0.05])
    with torch.no_grad():
        maps = net(x, D(d), sigma)
        scaled = net(25.0 * x, D(d), 25.0 * sigma)  # the same data in other units
        noisier = net(x, D(d), 2 * sigma)
    assert torch.allclose(25.0 * maps, scaled, rtol=1e-4)
    assert ((maps > 0) & (maps < net.lambda_max * sigma.view(2, 1, 1, 1))).all()
    assert not torch.allclose(maps, noisier, rtol=1e-2)  # the network sees the noise level
    with pytest.raises(ValueError, match="noise-aware"):
        net(x, D(d))
    with pytest.raises(ValueError, match="> 0"):
        net(x, D(d), torch.tensor([0.1, 0.0]))
    with pytest.raises(ValueError, match="no noise-aware variant"):
        V1MapNetwork(4, NetworkConfig.preset("noise"))


def test_percentile_normalisation_matches_solver_scaling():
    from adacsc.core.scaling import robust_scale

    torch.manual_seed(0)
    x, d = _image(height=32, width=32), _filters(8)
    scale = robust_scale(x)
    assert torch.allclose(image_scale(x), scale)
    assert torch.equal(image_scale(torch.zeros(1, 8, 8, dtype=torch.complex64)), torch.ones(1))
    # on data the reconstructor has normalised (99th percentile = 1) the input normalisation is a no-op
    x_n = x / scale.view(-1, 1, 1)
    net = MapNetwork().eval()
    raw = MapNetwork(NetworkConfig(input_normalization="none")).eval()
    raw.load_state_dict(net.state_dict())
    with torch.no_grad():
        assert torch.allclose(net(x_n, D(d)), raw(x_n, D(d)), atol=_tol(net))
        assert torch.allclose(net(x, D(d)), raw(x_n, D(d)), atol=_tol(net))


# -- training -----------------------------------------------------------------------------------
def test_gradients_flow():
    torch.manual_seed(0)
    net = MapNetwork()
    x = _image(batch=1, height=32, width=32).requires_grad_(True)
    d = _filters(6, 7).requires_grad_(True)
    maps = net(x, D(d))
    (maps * torch.linspace(0, 1, 32)).sum().backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert d.grad is not None and d.grad.abs().sum() > 0


def test_v1_gradients_flow():
    torch.manual_seed(0)
    net = V1MapNetwork(4)
    net(_image(batch=1, height=32, width=32)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


# -- configuration ------------------------------------------------------------------------------
def test_config_json_round_trip_and_validation():
    for name, config in PRESETS.items():
        assert NetworkConfig.from_json(config.to_json()) == config
        json.loads(config.to_json())
    published = NetworkConfig.preset("published")
    assert (published.base_channels, published.depth, published.downsample) == (32, 1, 1)
    assert published.lambda_max == 10.0 and published.initial_lambda is None
    assert (NetworkConfig().lambda_max, NetworkConfig().initial_lambda) == (2.0, 0.1)
    assert NetworkConfig() == NetworkConfig.preset("light")
    assert NetworkConfig.preset("published", lambda_max=3.0).lambda_max == 3.0
    with pytest.raises(ValueError, match="unknown network config keys"):
        NetworkConfig.from_dict({"base_channels": 8, "colour": "red"})
    with pytest.raises(ValueError, match="unknown network preset"):
        NetworkConfig.preset("huge")
    with pytest.raises(ValueError, match="lambda_max"):
        NetworkConfig(lambda_max=0)
    with pytest.raises(ValueError, match="downsample"):
        NetworkConfig(downsample=0)
    with pytest.raises(ValueError, match="initial_lambda"):
        NetworkConfig(lambda_max=1.0, initial_lambda=2.0)
    with pytest.raises(ValueError, match="output_scaling"):
        NetworkConfig(output_scaling="linear")


def test_published_unet_layout():
    net = MapNetwork(NetworkConfig.preset("published"))
    convs = [m for m in net.unet.modules() if isinstance(m, torch.nn.Conv2d)]
    # the published code: 2 encoder stages (widths 32 and 64, one max-pool) + 1 decoder stage,
    # 2 convs each, + 1x1 head, at full resolution
    assert len(convs) == 7
    assert [c.out_channels for c in convs[:4]] == [32, 32, 64, 64]
    assert convs[-1].kernel_size == (1, 1) and net.config.downsample == 1
    light = sum(p.numel() for p in MapNetwork().parameters())
    published = sum(p.numel() for p in net.parameters())
    assert light < published / 3  # and the light network runs on 4x fewer pixels


def test_unet_split_convolution_equals_concatenation():
    torch.manual_seed(0)
    unet = UNet(2, 3, base_channels=4, depth=2).eval()
    x = torch.randn(3, 2, 20, 18)

    def reference(x):
        skips = []
        for level, stage in enumerate(unet.encoder):
            if level > 0:
                x = torch.nn.functional.max_pool2d(x, 2)
            x = stage(x)
            skips.append(x)
        skips.pop()
        for stage in unet.decoder:
            skip = skips.pop()
            x = torch.nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = stage(torch.cat([x, skip], dim=1))
        return unet.head(x)

    with torch.no_grad():
        assert torch.allclose(unet(x), reference(x), atol=1e-5)


def test_build_network():
    assert isinstance(build_network("v3", NetworkConfig()), MapNetwork)
    assert build_network("v1", NetworkConfig(), num_filters=5).num_filters == 5
    with pytest.raises(ValueError):
        build_network("v1", NetworkConfig())
    with pytest.raises(ValueError, match="unknown network kind"):
        build_network("v2", NetworkConfig())
