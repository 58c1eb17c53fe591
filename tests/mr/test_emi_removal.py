"""EMI removal with sensing channels (adacsc.mr.emi), on synthetic data with known interference."""

import numpy as np
import pytest

from adacsc.mr.emi import FALLBACK_DWELL_US, MAX_TAPS, EMIRemover, kernel_taps, remove_block, sensing_channels


def _interference(rng: np.random.Generator, readouts: int, samples: int, sources: int = 2) -> np.ndarray:
    """Broadband and tone sources [sources, R, S] (unit power)."""
    t = np.arange(readouts * samples).reshape(readouts, samples) * 20e-6
    white = (rng.standard_normal((sources, readouts, samples)) + 1j * rng.standard_normal((sources, readouts, samples)))
    tones = np.exp(2j * np.pi * np.array([2500.0, -9400.0])[:sources, None, None] * t)
    return (white / np.sqrt(2) + tones) / np.sqrt(2)


def _convolve(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Linear convolution along the readout, same length (kernel centred)."""
    w = len(kernel) // 2
    out = np.zeros_like(x)
    for d, k in zip(range(-w, w + 1), kernel):
        if d >= 0:
            out[..., d:] += k * x[..., : x.shape[-1] - d]
        else:
            out[..., :d] += k * x[..., -d:]
    return out


def _scan(rng: np.random.Generator, emi_power: float, signal: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(receive [1, R, S], sensing [2, R, S], true EMI in the receive channel) of a toy block: the
    receive channel sees both sources through short kernels, each sensing coil a mix of them, far
    above its own noise (as sensing coils are placed to be)."""
    r, s = 64, 128
    sources = _interference(rng, r, s)
    sensing = np.stack([sources[0] + 0.5 * sources[1], 0.3 * sources[0] + sources[1]]) * 20
    kernels = [np.array([0.2, 1.0, -0.3j]), np.array([0.1j, 0.7, 0.2])]
    emi = sum(_convolve(sources[k], kernels[k]) for k in range(2))[None] * np.sqrt(emi_power)
    noise = (rng.standard_normal((1, r, s)) + 1j * rng.standard_normal((1, r, s))) / np.sqrt(2)
    sensing = sensing + (rng.standard_normal((2, r, s)) + 1j * rng.standard_normal((2, r, s))) / np.sqrt(2)
    mr = np.zeros((1, r, s), complex)
    if signal:  # a k-space centre hundreds of times the noise energy
        mr[0, r // 2 - 4: r // 2 + 4, s // 2 - 8: s // 2 + 8] = 40 * np.exp(1j * rng.uniform(0, 6, (8, 16)))
    return mr + noise + emi, sensing, emi


def test_sensing_channels_by_label_pattern_and_index() -> None:
    labels = ["LF_HEAD_QUAD", "EMI_SENSE_01", "emi_sense_02", "SENSE-Head-8", "aux"]
    assert sensing_channels(labels, "EMI*,SENSING*,SNIFFER*", "") == [1, 2]  # not a Philips SENSE coil
    assert sensing_channels(labels, "", "4, 1") == [1, 4]
    assert sensing_channels(labels, "", "") == []
    with pytest.raises(ValueError, match="does not exist"):
        sensing_channels(labels, "", "7")
    assert sensing_channels(labels, " aux , ", "") == [4]
    with pytest.raises(ValueError, match="no receive channel"):
        sensing_channels(["EMI_1", "EMI_2"], "emi_*", "")


def test_removal_takes_out_the_interference_but_not_the_signal() -> None:
    rng = np.random.default_rng(1)
    receive, sensing, emi = _scan(rng, emi_power=10.0)
    fit = remove_block(receive, sensing, width=3)
    residual_emi = fit.cleaned - (receive - emi)
    assert np.sum(np.abs(residual_emi) ** 2) < 0.05 * np.sum(np.abs(emi) ** 2)
    # the weighted fit keeps the strong MR signal out of the kernel estimate: the error it adds is
    # a small fraction of the thermal noise power (plain least squares would add several times it)
    noise_power = receive.shape[1] * receive.shape[2]
    assert np.sum(np.abs(residual_emi) ** 2) < 0.1 * noise_power


def test_removal_without_interference_costs_almost_no_snr() -> None:
    rng = np.random.default_rng(2)
    receive, sensing, emi = _scan(rng, emi_power=0.0)
    fit = remove_block(receive, sensing, width=3)
    changed = np.sum(np.abs(fit.cleaned - receive) ** 2) / (receive.shape[1] * receive.shape[2])
    assert changed < 0.01  # under 1 % of the noise power is taken out or added


def test_remover_streams_blocks_and_drops_sensing_channels() -> None:
    rng = np.random.default_rng(3)
    receive, sensing, _ = _scan(rng, emi_power=10.0, signal=False)
    stack = np.concatenate([sensing[:1], receive, sensing[1:]])  # sensing channels first and last
    remover = EMIRemover([0, 2], 3, block=16, kernel_us=120.0)  # 7 taps at 20 us
    out = []
    for i in range(stack.shape[1]):
        out += remover.push(stack[:, i], i, 20.0)
        if i == 40:
            out += remover.flush()  # a slice ends early
    out += remover.flush()
    assert [tag for _, tag in out] == list(range(stack.shape[1]))
    assert all(data.shape == (1, stack.shape[2]) for data, _ in out)
    assert remover.tally.blocks == 5  # 16 + 16 + 9 (flushed) + 16 + 7
    assert remover.tally.percent()[0] > 80 and remover.tally.taps == {7}
    with pytest.raises(ValueError, match="channels"):
        remover.push(stack[:2, 0], 0, 20.0)


def test_a_new_dwell_time_ends_the_block() -> None:
    rng = np.random.default_rng(5)
    receive, sensing, _ = _scan(rng, emi_power=10.0, signal=False)
    stack = np.concatenate([receive, sensing])
    remover = EMIRemover([1, 2], 3, block=64, kernel_us=120.0)
    out = [item for i in range(10) for item in remover.push(stack[:, i], i, 20.0)]
    out += [item for i in range(10, 20) for item in remover.push(stack[:, i], i, 5.0)]
    assert not out or remover.tally.blocks == 1
    out += remover.flush()
    assert [tag for _, tag in out] == list(range(20)) and remover.tally.blocks == 2
    assert remover.tally.taps == {7, 25}


def test_kernel_taps_cover_the_same_time_at_every_dwell() -> None:
    assert kernel_taps(120.0, 20.0) == 7 and kernel_taps(120.0, 5.0) == 25
    assert kernel_taps(120.0, 1000.0) == 3  # never fewer than 3
    assert kernel_taps(10000.0, 1.0) == MAX_TAPS
    assert kernel_taps(120.0, 0.0) == kernel_taps(120.0, FALLBACK_DWELL_US)  # a readout without a dwell time
    with pytest.raises(ValueError, match="kernel length"):
        kernel_taps(0.0, 5.0)


def test_a_bad_sample_does_not_spoil_its_block() -> None:
    rng = np.random.default_rng(4)
    receive, sensing, emi = _scan(rng, emi_power=10.0, signal=False)
    receive[0, 3, 7] = np.nan
    fit = remove_block(receive, sensing, width=3)
    assert np.isnan(fit.cleaned[0, 3, 7]) and np.isfinite(np.delete(fit.cleaned.reshape(-1), 3 * 128 + 7)).all()
    left = fit.cleaned - (receive - emi)
    left[0, 3, 7] = 0
    assert np.sum(np.abs(left) ** 2) < 0.05 * np.sum(np.abs(emi) ** 2)
