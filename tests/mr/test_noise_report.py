"""The noise and EMI report (adacsc.mr.noise_report) on noise with known tones and levels."""

import numpy as np
import pytest

from adacsc.mr.noise_report import noise_report


def _noise(rng: np.random.Generator, shape: tuple[int, int, int], std: np.ndarray) -> np.ndarray:
    n = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)
    return n * std[:, None, None]


@pytest.mark.parametrize("readouts,samples", [(64, 256), (1, 10000)])
def test_tones_are_found_within_a_bin_and_a_decibel(readouts: int, samples: int) -> None:
    rng = np.random.default_rng(0)
    dwell = 5.0
    std = np.array([1.0, 2.0])
    noise = _noise(rng, (2, readouts, samples), std)
    t = (np.arange(readouts)[:, None] * 3 * samples + np.arange(samples)[None]) * dwell * 1e-6
    tones = {0: [(2513.7, 0.3)], 1: [(-17350.2, 0.5), (41000.9, 0.8)]}
    for channel, found in tones.items():
        for freq, amplitude in found:
            noise[channel] += amplitude * np.exp(2j * np.pi * freq * t + 1j * rng.uniform(0, 6))
    report = noise_report(noise, dwell, ["A", "B"])
    bin_hz = 1e6 / (samples * dwell)
    for channel, found in tones.items():
        lines = report.channel_lines[channel]
        assert len(lines) == len(found)
        for freq, amplitude in found:
            line = min(lines, key=lambda x: abs(x.offset_hz - freq))
            truth_db = 10 * np.log10(samples * amplitude ** 2 / std[channel] ** 2)
            assert abs(line.offset_hz - freq) < bin_hz
            assert abs(line.level_db - truth_db) < 1.0
    assert np.allclose(report.floor, std, rtol=0.05)
    meta = report.meta()
    assert meta["NoiseChannels"] == ["A", "B"] and len(meta["NoiseLines"]) == 3


def test_white_noise_has_no_lines_and_its_ratio_to_a_reference() -> None:
    rng = np.random.default_rng(1)
    labels = [f"C{i}" for i in range(4)]
    quiet = noise_report(_noise(rng, (4, 32, 256), np.ones(4)), 5.0, labels)
    assert quiet.lines == []
    reference = dict(zip(labels, quiet.density))
    # a later scan at another dwell time (its per-sample noise grows with the bandwidth), one
    # channel 1.5x noisier
    std = np.sqrt(5.0 / 20.0) * np.array([1.0, 1.5, 1.0, 1.0])
    loud = noise_report(_noise(rng, (4, 32, 256), std), 20.0, labels[::-1][::-1], reference=reference,
                        reference_name="quiet")
    assert np.allclose(loud.ratio, [1.0, 1.5, 1.0, 1.0], rtol=0.05)
    assert loud.meta()["NoiseReference"] == ["quiet"]


def test_correlations() -> None:
    rng = np.random.default_rng(2)
    a = _noise(rng, (1, 16, 512), np.ones(1))
    b = _noise(rng, (1, 16, 512), np.ones(1))
    report = noise_report(np.concatenate([a, 0.6 * a + 0.8 * b]), 10.0, ["a", "b"])
    assert report.correlation[0, 1] == pytest.approx(0.6, abs=0.03)
    assert report.max_correlation() == pytest.approx(0.6, abs=0.03)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="channels=2"):
        noise_report(np.zeros((3, 4, 64), complex), 5.0, ["a", "b"])
    bad = np.ones((1, 2, 64), complex)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        noise_report(bad, 5.0, ["a"])
