"""Numerical MR building blocks: prewhitening, bandwidth scaling, oversampling, coil maps."""

import numpy as np
import pytest

from adacsc.mr import coil_maps
from adacsc.mr.fft import fftc, ifftc
from adacsc.mr.noise import (
    NoiseAccumulator, bandwidth_scale, estimate_noise_std, match_channels, whitening_matrix,
)
from adacsc.mr.oversampling import remove_readout_oversampling


def random_covariance(channels: int, rng: np.random.Generator) -> np.ndarray:
    mixing = rng.standard_normal((channels, channels)) + 1j * rng.standard_normal((channels, channels))
    return mixing @ mixing.conj().T / channels + np.eye(channels)


def correlated_noise(covariance: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    white = (rng.standard_normal((covariance.shape[0], samples)) + 1j * rng.standard_normal((covariance.shape[0], samples)))
    return np.linalg.cholesky(covariance) @ white / np.sqrt(2)


def test_whitening_gives_identity_covariance() -> None:
    rng = np.random.default_rng(1)
    covariance = random_covariance(6, rng)
    acc = NoiseAccumulator()
    for _ in range(50):
        acc.add(correlated_noise(covariance, 256, rng))
    estimate = acc.covariance()
    assert np.abs(estimate - covariance).max() < 0.1 * np.abs(covariance).max()
    white = whitening_matrix(estimate) @ correlated_noise(covariance, 200_000, rng)
    result = white @ white.conj().T / white.shape[1]
    # sampling error of a covariance from n samples is about 1/sqrt(n) per entry
    assert np.abs(result - np.eye(6)).max() < 0.03


def test_bandwidth_scale_follows_gadgetron() -> None:
    assert bandwidth_scale(10.0, 5.0, 0.793) == pytest.approx(np.sqrt(2 * 2 * 0.793))
    assert bandwidth_scale(10.0, 5.0, None) == pytest.approx(np.sqrt(2 * 2 * 0.793))
    assert bandwidth_scale(0.0, 5.0, 0.9) == 1.0


def test_whitening_rejects_singular_covariance() -> None:
    with pytest.raises(ValueError, match="not positive definite"):
        whitening_matrix(np.ones((3, 3), dtype=complex))


def test_noise_accumulator_rejects_channel_change() -> None:
    acc = NoiseAccumulator()
    acc.add(np.ones((4, 8), np.complex64))
    with pytest.raises(ValueError, match="channels"):
        acc.add(np.ones((3, 8), np.complex64))


def test_match_channels_reorders_by_label() -> None:
    covariance = np.diag([1.0, 2.0, 3.0]).astype(complex)
    reordered = match_channels(covariance, ["a", "b", "c"], ["c", "a", "b"])
    assert np.allclose(np.diag(reordered), [3.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="do not match"):
        match_channels(covariance, ["a", "b", "c"], ["a", "b", "x"])


def test_oversampling_removal_crops_image_centre_and_keeps_noise_level() -> None:
    rng = np.random.default_rng(2)
    image = np.zeros((8, 128), complex)
    image[:, 32:96] = rng.standard_normal((8, 64))
    cropped = remove_readout_oversampling(fftc(image, axes=(-1,)), 64)
    assert np.allclose(ifftc(cropped, axes=(-1,)), image[:, 32:96], atol=1e-5)
    noise = (rng.standard_normal((64, 256)) + 1j * rng.standard_normal((64, 256))) / np.sqrt(2)
    assert np.std(remove_readout_oversampling(noise, 128)) == pytest.approx(1.0, rel=0.03)


def smooth_maps(coils: int, size: int) -> np.ndarray:
    y, x = np.mgrid[:size, :size] / size - 0.5
    maps = []
    for c in range(coils):
        angle = 2 * np.pi * c / coils
        cy, cx = 0.7 * np.sin(angle), 0.7 * np.cos(angle)
        maps.append(np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.3) * np.exp(1j * (angle + x)))
    return np.array(maps)


@pytest.mark.parametrize("method", ["inati", "walsh"])
def test_coil_combination_recovers_ideal_image(method: str) -> None:
    rng = np.random.default_rng(3)
    size = 96
    y, x = np.mgrid[:size, :size] / size - 0.5
    obj = ((x ** 2 + y ** 2) < 0.16) * (1 + 0.5 * np.cos(12 * x)) * np.exp(2j * y)
    maps = smooth_maps(4, size)
    noisy = maps * obj + 0.01 * (rng.standard_normal(maps.shape) + 1j * rng.standard_normal(maps.shape))
    combined = coil_maps.combine(noisy, coil_maps.estimate(noisy, method))
    ideal = np.abs(obj) * np.sqrt(np.sum(np.abs(maps) ** 2, axis=0))
    support = np.abs(obj) > 0
    nrmse = np.linalg.norm((np.abs(combined) - ideal)[support]) / np.linalg.norm(ideal[support])
    assert nrmse < 0.03


def test_estimated_maps_are_normalised_and_single_coil_passes() -> None:
    rng = np.random.default_rng(4)
    images = rng.standard_normal((3, 32, 32)) + 1j * rng.standard_normal((3, 32, 32))
    maps = coil_maps.estimate(images, "inati")
    assert np.allclose(np.sum(np.abs(maps) ** 2, axis=0), 1.0, atol=1e-4)
    single = coil_maps.estimate(images[:1], "walsh")
    assert np.all(single == 1)
    with pytest.raises(ValueError, match="unknown coil map method"):
        coil_maps.estimate(images, "espirit")


def test_calibration_region_is_the_central_block() -> None:
    kspace = np.ones((2, 16, 8), complex)
    lines = np.zeros(16, bool)
    lines[::2] = True
    lines[6:11] = True
    images = coil_maps.calibration_images(kspace, lines)
    assert images.shape == kspace.shape
    lines[8] = False  # regular undersampling around a missing centre: maps from the aliased data
    assert np.allclose(coil_maps.calibration_images(kspace, lines), ifftc(kspace * lines[None, :, None]))
    lines[:8] = False  # nothing below the centre: no maps
    with pytest.raises(ValueError, match="centre line"):
        coil_maps.calibration_images(kspace, lines)


def test_noise_estimate_from_an_image() -> None:
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:192, :160]
    obj = 40.0 * (((yy - 96) / 70) ** 2 + ((xx - 80) / 60) ** 2 < 1) * np.exp(1j * xx / 30)
    for sigma in (0.5, 1.0, 3.0):
        noise = sigma * (rng.standard_normal(obj.shape) + 1j * rng.standard_normal(obj.shape)) / np.sqrt(2)
        assert estimate_noise_std(obj + noise) == pytest.approx(sigma, rel=0.05)
    with pytest.raises(ValueError, match="2-D image"):
        estimate_noise_std(np.ones(8))


def test_averaging_means_lines_and_scales_the_noise_level() -> None:
    from adacsc.mr import averaging

    data = np.ones((4, 3, 2, 2, 4), np.complex64) * np.arange(1, 5)  # [RO, E1, E2, CHA, N]: average n holds n + 1
    acquired = np.ones((3, 2, 4), bool)
    acquired[0, :, 2:] = False  # line 0 has two averages, the others four
    mean, counts = averaging.mean_of_averages(data, acquired)
    assert np.allclose(mean[:, 0], 1.5) and np.allclose(mean[:, 1:], 2.5)
    assert averaging.noise_after_averaging(counts) == pytest.approx(np.sqrt((1 / 2 + 1 / 4 + 1 / 4) / 3))
    partial = np.zeros((3, 8), int)
    partial[:, 2:] = 1  # kz 0 and 1 not acquired: sqrt(6 / 8)
    assert averaging.noise_after_averaging(partial) == pytest.approx(np.sqrt(6 / 8))
    assert not averaging.kz_undersampled(partial, (2, 7)) and averaging.kz_undersampled(partial, (0, 7))


def test_inati_maps_when_the_coil_images_sum_to_zero() -> None:
    """No k-space centre (every pixel sum 0): the virtual body coil comes from the coils' correlation."""
    pattern = np.where(np.arange(16)[:, None] < 8, 1.0, -1.0) * np.ones((16, 16))  # sums to exactly 0
    weights = np.array([1, 0.5j, -0.25, 2 - 1j])
    images = weights[:, None, None] * pattern * (1 + np.arange(16)[None] % 2)[None]
    assert not np.sum(images, axis=(1, 2)).any()
    maps = coil_maps.inati(images)
    assert np.isfinite(maps).all()
    np.testing.assert_allclose(np.sum(np.abs(maps) ** 2, axis=0), 1, atol=1e-4)


@pytest.mark.parametrize("method", ["inati", "walsh"])
def test_combined_noise_stays_unit_where_there_is_no_signal(method: str) -> None:
    """Maps estimated from the noisy images must not follow a pixel's own noise: with 8 prewhitened
    coils the combined noise variance is 1 outside the object too (it was 1.6 with maps smoothed
    over windows that held the pixel), and noise_gain says so."""
    rng = np.random.default_rng(5)
    size = 96
    y, x = np.mgrid[:size, :size] / size - 0.5
    obj = ((x ** 2 + y ** 2) < 0.09) * 40.0 * np.exp(2j * y)
    signal = smooth_maps(8, size) * obj
    noise = (rng.standard_normal(signal.shape) + 1j * rng.standard_normal(signal.shape)) / np.sqrt(2)
    maps = coil_maps.estimate((signal + noise).astype(np.complex64), method)
    combined_noise = np.sum(maps.conj() * noise, axis=0)
    background = (x ** 2 + y ** 2) > 0.16
    assert np.mean(np.abs(combined_noise[background]) ** 2) == pytest.approx(1.0, abs=0.05)
    assert np.mean(np.abs(combined_noise) ** 2) == pytest.approx(coil_maps.noise_gain(maps) ** 2, abs=0.05)


def test_noise_gain_propagates_unit_coil_noise_through_the_weights() -> None:
    """For weights that do not depend on the noise, the combined noise variance per pixel is
    sum_c |w_c|^2: noise_gain is the root of its mean over the image."""
    rng = np.random.default_rng(6)
    weights = (rng.standard_normal((4, 64, 64)) + 1j * rng.standard_normal((4, 64, 64))) * np.linspace(0, 1, 64)
    noise = (rng.standard_normal((200, 4, 64, 64)) + 1j * rng.standard_normal((200, 4, 64, 64))) / np.sqrt(2)
    measured = np.sqrt(np.mean(np.abs(np.sum(weights.conj() * noise, axis=1)) ** 2))
    assert coil_maps.noise_gain(weights) == pytest.approx(measured, rel=0.01)
    normalised = coil_maps.estimate(rng.standard_normal((3, 32, 32)) + 1j * rng.standard_normal((3, 32, 32)))
    assert coil_maps.noise_gain(normalised) == pytest.approx(1.0, abs=1e-6)
    half = normalised.copy()
    half[:, :16] = 0  # no data there: no noise either
    assert coil_maps.noise_gain(half) == pytest.approx(np.sqrt(0.5), abs=1e-6)
    with pytest.raises(ValueError, match="at least 2 pixels"):
        coil_maps.estimate(normalised, kernel=1)
