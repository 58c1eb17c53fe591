"""The low-field scanner simulator: ISMRMRD structure, header, flags, noise model, ground truth."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import pytest

import adacsc
from adacsc.mr.fft import fftc, ifftc
from adacsc.simulation import brain, objects
from adacsc.simulation.coils import coil_sensitivities
from adacsc.simulation.ground_truth import (
    GroundTruth,
    ideal_combined_magnitude,
    read_ground_truth,
    snr_gain,
)
from adacsc.simulation.noise import (
    correlated_noise,
    imaging_covariance,
    noise_readout_covariance,
    random_correlation,
)
from adacsc.simulation.phantom import phantom_slices
from adacsc.simulation.scanner import SimulationConfig, simulate_scan
from support.scans import read_scan

SCANS = Path(adacsc.__file__).parent / "data" / "scans"
N, C, S = 32, 4, 2


# ---------------------------------------------------------------- helpers


def is_noise(a):
    return a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)


def kspace_of(acqs, n, n_coils, n_slices):
    k = np.zeros((n_slices, n_coils, n, 2 * n), dtype=np.complex64)
    for a in acqs:
        if not is_noise(a):
            k[a.idx.slice, :, a.idx.kspace_encode_step_1] = a.data
    return k


def coil_images(k, cov):
    """Whiten with `cov`, remove 2x readout oversampling, image FFT: [S, C, N, N]."""
    n = k.shape[-2]
    w = np.linalg.inv(np.linalg.cholesky(cov))
    kw = np.einsum("cd,sdyx->scyx", w, k)
    hybrid = ifftc(kw, axes=(-1,))[..., n // 2 : n // 2 + n]
    return ifftc(fftc(hybrid, axes=(-1,))), w


def optimal_combination(images_w, maps, w):
    """sum conj(W s) (W y) / ||W s||: SNR units, expected x * sqrt(s^H C^-1 s)."""
    sw = np.einsum("cd,sdyx->scyx", w, maps)
    norm = np.sqrt(np.sum(np.abs(sw) ** 2, axis=1))
    return np.sum(sw.conj() * images_w, axis=1) / norm


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "scan.h5"
    result = simulate_scan(path, SimulationConfig(matrix=N, coils=C, slices=S, noise=0.02, seed=7))
    header, acqs = read_scan(path)
    return result, header, acqs


@pytest.fixture(scope="module")
def big_scan(tmp_path_factory):
    """64 x 64 phantom, 4 coils: enough pixels and noise samples for statistics."""
    path = tmp_path_factory.mktemp("sim") / "big.h5"
    cfg = SimulationConfig(matrix=64, coils=4, slices=2, noise=0.05, seed=11, object="phantom",
                           noise_readouts=256)
    result = simulate_scan(path, cfg)
    header, acqs = read_scan(path)
    return result, header, acqs


# ---------------------------------------------------------------- file and header


def test_file_opens_and_header_parses(scan):
    result, header, acqs = scan
    assert len(acqs) == 64 + S * N
    assert header.experimentalConditions.H1resonanceFrequency_Hz == round(42.577478e6 * 0.055)
    sysinfo = header.acquisitionSystemInformation
    assert sysinfo.systemFieldStrength_T == pytest.approx(0.055)
    assert sysinfo.receiverChannels == C
    assert sysinfo.relativeReceiverNoiseBandwidth == pytest.approx(0.793)
    assert [lab.coilNumber for lab in sysinfo.coilLabel] == list(range(C))
    names = [lab.coilName for lab in sysinfo.coilLabel]
    assert len(set(names)) == C and all(names)
    meas = header.measurementInformation
    assert meas.measurementID == result.measurement_id and meas.measurementID
    assert meas.measurementDependency == []

    enc = header.encoding[0]
    assert (enc.encodedSpace.matrixSize.x, enc.encodedSpace.matrixSize.y, enc.encodedSpace.matrixSize.z) == (2 * N, N, 1)
    assert (enc.reconSpace.matrixSize.x, enc.reconSpace.matrixSize.y, enc.reconSpace.matrixSize.z) == (N, N, 1)
    fov = SimulationConfig().fov_mm
    assert enc.encodedSpace.fieldOfView_mm.x == pytest.approx(2 * fov)
    assert enc.encodedSpace.fieldOfView_mm.y == pytest.approx(fov)
    assert enc.reconSpace.fieldOfView_mm.x == pytest.approx(fov)
    assert enc.reconSpace.fieldOfView_mm.z == pytest.approx(SimulationConfig().slice_thickness_mm)
    lim = enc.encodingLimits
    assert (lim.kspace_encoding_step_1.minimum, lim.kspace_encoding_step_1.maximum, lim.kspace_encoding_step_1.center) == (0, N - 1, N // 2)
    assert (lim.slice.minimum, lim.slice.maximum) == (0, S - 1)
    assert (lim.repetition.minimum, lim.repetition.maximum) == (0, 0)
    assert enc.trajectory == ismrmrd.xsd.trajectoryType.CARTESIAN


def test_noise_readouts_come_first(scan):
    _, _, acqs = scan
    flags = [is_noise(a) for a in acqs]
    assert flags[:64] == [True] * 64 and not any(flags[64:])
    cfg = SimulationConfig()
    for a in acqs[:64]:
        assert a.sample_time_us == pytest.approx(cfg.noise_dwell_us)
        assert a.active_channels == C and a.number_of_samples == 2 * N
    for a in acqs[64:]:
        assert a.sample_time_us == pytest.approx(cfg.acq_dwell_us)


def test_imaging_readout_headers_and_flags(scan):
    result, _, acqs = scan
    imaging = acqs[64:]
    order = [(a.idx.slice, a.idx.kspace_encode_step_1) for a in imaging]
    assert order == [(s, line) for s in range(S) for line in range(N)]
    for i, a in enumerate(imaging):
        line, s = a.idx.kspace_encode_step_1, a.idx.slice
        assert a.number_of_samples == 2 * N and a.center_sample == N and a.discard_pre == 0
        assert a.active_channels == C and a.available_channels == C
        assert a.data.shape == (C, 2 * N) and a.data.dtype == np.complex64
        assert a.idx.repetition == 0
        assert a.is_flag_set(ismrmrd.ACQ_FIRST_IN_SLICE) == (line == 0)
        assert a.is_flag_set(ismrmrd.ACQ_FIRST_IN_ENCODE_STEP1) == (line == 0)
        assert a.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE) == (line == N - 1)
        assert a.is_flag_set(ismrmrd.ACQ_LAST_IN_ENCODE_STEP1) == (line == N - 1)
        assert a.is_flag_set(ismrmrd.ACQ_LAST_IN_MEASUREMENT) == (i == len(imaging) - 1)
        assert tuple(a.read_dir) == (1, 0, 0) and tuple(a.phase_dir) == (0, 1, 0)
        assert tuple(a.slice_dir) == (0, 0, 1)
        assert a.position[2] == pytest.approx(result.slice_positions_mm[s])
    assert not any(a.is_flag_set(ismrmrd.ACQ_LAST_IN_MEASUREMENT) for a in acqs[:64])
    # slices stacked along slice_dir, distinct positions
    z = [imaging[s * N].position[2] for s in range(S)]
    assert np.all(np.diff(z) > 0)
    counters = [a.scan_counter for a in acqs]
    assert counters == list(range(1, len(acqs) + 1))
    stamps = [a.acquisition_time_stamp for a in acqs]
    assert all(b >= a for a, b in zip(stamps, stamps[1:]))
    assert len({a.measurement_uid for a in acqs}) == 1 and acqs[0].measurement_uid != 0


# ---------------------------------------------------------------- ground truth and reconstruction


def test_ground_truth_layout(scan):
    result, _, _ = scan
    gt = read_ground_truth(result.path)
    assert gt.image.shape == (S, N, N) and gt.image.dtype == np.complex64
    assert gt.coil_maps.shape == (S, C, N, N) and gt.coil_maps.dtype == np.complex64
    assert gt.noise_covariance.shape == (C, C) and gt.noise_covariance.dtype == np.complex128
    assert np.abs(gt.image).max() == pytest.approx(1.0, abs=1e-6)
    rss = np.sqrt(np.sum(np.abs(gt.coil_maps) ** 2, axis=1))
    assert rss.max() == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(np.diag(gt.noise_covariance).real, 0.02**2)
    assert gt.attrs["object"] == result.object_kind
    ideal = ideal_combined_magnitude(gt)
    assert ideal.shape == (S, N, N) and np.all(ideal >= 0)
    assert np.allclose(ideal, np.abs(gt.image) * snr_gain(gt.coil_maps, gt.noise_covariance))


def test_direct_reconstruction_matches_ground_truth(tmp_path):
    """Near noise-free scan: prewhiten, remove oversampling, combine -> the object."""
    path = tmp_path / "clean.h5"
    simulate_scan(path, SimulationConfig(matrix=N, coils=C, slices=S, noise=1e-5, seed=3))
    gt = read_ground_truth(path)
    _, acqs = read_scan(path)
    k = kspace_of(acqs, N, C, S)
    imgs, w = coil_images(k, gt.noise_covariance)
    comb = optimal_combination(imgs, gt.coil_maps, w)
    expected = gt.image * snr_gain(gt.coil_maps, gt.noise_covariance)
    assert np.max(np.abs(comb - expected)) / np.max(np.abs(expected)) < 1e-3
    # the same object from unwhitened coil images, true-map (SENSE-1) and RSS combinations
    raw = ifftc(fftc(ifftc(k, axes=(-1,))[..., N // 2 : N // 2 + N], axes=(-1,)))
    maps = gt.coil_maps
    sense1 = np.sum(maps.conj() * raw, axis=1) / np.sum(np.abs(maps) ** 2, axis=1)
    assert np.max(np.abs(sense1 - gt.image)) < 1e-3
    rss = np.sqrt(np.sum(np.abs(raw) ** 2, axis=1))
    rss_maps = np.sqrt(np.sum(np.abs(maps) ** 2, axis=1))
    assert np.max(np.abs(rss - np.abs(gt.image) * rss_maps)) < 1e-3


def test_snr_units_with_true_covariance(big_scan):
    result, _, acqs = big_scan
    gt = read_ground_truth(result.path)
    k = kspace_of(acqs, 64, 4, 2)
    imgs, w = coil_images(k, gt.noise_covariance)
    comb = optimal_combination(imgs, gt.coil_maps, w)
    resid = comb - gt.image * snr_gain(gt.coil_maps, gt.noise_covariance)
    assert np.std(resid) == pytest.approx(1.0, abs=0.06)
    # magnitude follows the ideal where the signal is strong
    ideal = ideal_combined_magnitude(gt)
    strong = ideal > 8
    assert strong.sum() > 100
    assert np.mean(np.abs(comb)[strong] - ideal[strong]) == pytest.approx(0.0, abs=0.2)


def test_noise_adjust_rule_whitens_imaging_noise(big_scan):
    """Covariance of the noise readouts / (2 acq_dwell/noise_dwell relBW) == imaging covariance,
    so Gadgetron's NoiseAdjust (inv(chol(C_n)) * sqrt(scale)) gives unit white noise."""
    result, header, acqs = big_scan
    gt = read_ground_truth(result.path)
    noise = [a for a in acqs if is_noise(a)]
    imaging = [a for a in acqs if not is_noise(a)]
    d = np.concatenate([a.data for a in noise], axis=1).astype(np.complex128)
    cn = d @ d.conj().T / (d.shape[1] - 1)
    rel_bw = header.acquisitionSystemInformation.relativeReceiverNoiseBandwidth
    scale = 2.0 * imaging[0].sample_time_us / noise[0].sample_time_us * rel_bw
    assert gt.attrs["noise_readout_covariance_scale"] == pytest.approx(scale)
    c_true = gt.noise_covariance
    rel = np.linalg.norm(cn / scale - c_true) / np.linalg.norm(c_true)
    assert rel < 0.05
    # Gadgetron's prewhitener applied to the imaging data
    w_gadgetron = np.linalg.inv(np.linalg.cholesky(cn)) * np.sqrt(scale)
    k = kspace_of(acqs, 64, 4, 2)
    imgs, w = coil_images(k, cn / scale)
    assert np.allclose(w, w_gadgetron)
    comb = optimal_combination(imgs, gt.coil_maps, w)
    resid = comb - gt.image * snr_gain(gt.coil_maps, cn / scale)
    assert np.std(resid) == pytest.approx(1.0, abs=0.08)


def test_noise_covariance_is_correlated_and_positive_definite():
    rng = np.random.default_rng(0)
    for n in (2, 4, 8, 16):
        r = random_correlation(n, rng)
        assert np.allclose(r, r.conj().T)
        assert np.allclose(np.diag(r), 1.0)
        assert np.linalg.eigvalsh(r).min() > 0.19
        off = np.abs(r[~np.eye(n, dtype=bool)])
        assert off.min() > 0.0 and off.mean() > 0.05
        if n <= 4:
            assert off.min() >= 0.1 - 1e-12 and off.max() <= 0.4 + 1e-12
    cov = imaging_covariance(4, 0.1, rng)
    assert np.allclose(np.diag(cov).real, 0.01)
    cn = noise_readout_covariance(cov, 20.0, 5.0, 0.793)
    assert np.allclose(cn, cov * 2 * 20.0 * 0.793 / 5.0)
    x = correlated_noise(cov, (20000,), rng)
    est = x @ x.conj().T / x.shape[1]
    assert np.linalg.norm(est - cov) / np.linalg.norm(cov) < 0.05
    with pytest.raises(ValueError):
        imaging_covariance(4, 0.0, rng)


def test_coil_maps_smooth_and_normalised():
    z = np.array([-3.0, 3.0])
    for n_coils in (1, 3, 8):
        maps = coil_sensitivities(48, n_coils, z, rng=np.random.default_rng(1))
        assert maps.shape == (2, n_coils, 48, 48)
        rss = np.sqrt(np.sum(np.abs(maps) ** 2, axis=1))
        assert rss.max() == pytest.approx(1.0, abs=1e-5)
        assert rss.min() > 0.02  # no holes
        # smooth: little change between neighbouring pixels where the head is, and nearly all
        # the energy at low spatial frequencies
        yy, xx = np.mgrid[:48, :48]
        inner = np.hypot(yy - 24, xx - 24) < 18
        assert np.abs(np.diff(maps, axis=-1))[..., inner[:, 1:]].max() < 0.1
        assert np.abs(np.diff(maps, axis=-2))[..., inner[1:, :]].max() < 0.1
        energy = np.abs(fftc(maps)) ** 2
        assert energy[..., 12:36, 12:36].sum() / energy.sum() > 0.95
    # different coils see different regions
    maps = coil_sensitivities(48, 4, np.array([0.0]), rng=np.random.default_rng(1))
    peaks = {np.unravel_index(np.abs(maps[0, c]).argmax(), (48, 48)) for c in range(4)}
    assert len(peaks) == 4


# ---------------------------------------------------------------- options


def test_single_coil_single_slice(tmp_path):
    path = tmp_path / "one.h5"
    result = simulate_scan(path, SimulationConfig(matrix=16, coils=1, slices=1, object="phantom"))
    header, acqs = read_scan(path)
    assert header.acquisitionSystemInformation.receiverChannels == 1
    assert len(header.acquisitionSystemInformation.coilLabel) == 1
    imaging = [a for a in acqs if not is_noise(a)]
    assert len(imaging) == 16 and all(a.data.shape == (1, 32) for a in imaging)
    assert imaging[0].is_flag_set(ismrmrd.ACQ_FIRST_IN_SLICE)
    assert imaging[-1].is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE)
    assert imaging[-1].is_flag_set(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    gt = read_ground_truth(path)
    assert gt.coil_maps.shape == (1, 1, 16, 16) and gt.noise_covariance.shape == (1, 1)
    assert result.slice_positions_mm.tolist() == [0.0]


def test_separate_noise_file_declares_dependency(tmp_path):
    scan_path, noise_path = tmp_path / "scan.h5", tmp_path / "noise.h5"
    result = simulate_scan(scan_path, SimulationConfig(matrix=16, coils=3, slices=2, object="phantom"),
                           noise_file=noise_path)
    header, acqs = read_scan(scan_path)
    nheader, nacqs = read_scan(noise_path)
    assert not any(is_noise(a) for a in acqs)
    assert len(nacqs) == 64 and all(is_noise(a) for a in nacqs)
    assert nacqs[-1].is_flag_set(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    deps = header.measurementInformation.measurementDependency
    assert [(d.dependencyType, d.measurementID) for d in deps] == [
        ("Noise", nheader.measurementInformation.measurementID)
    ]
    assert nheader.measurementInformation.measurementID != header.measurementInformation.measurementID
    assert result.noise_measurement_id == nheader.measurementInformation.measurementID
    labels = lambda h: [c.coilName for c in h.acquisitionSystemInformation.coilLabel]  # noqa: E731
    assert labels(header) == labels(nheader)
    assert read_ground_truth(scan_path).n_coils == 3


def test_same_seed_reproducible_and_ids_unique(tmp_path):
    cfg = SimulationConfig(matrix=16, coils=2, slices=1, object="phantom", seed=5)
    a = simulate_scan(tmp_path / "a.h5", cfg)
    b = simulate_scan(tmp_path / "b.h5", cfg)
    c = simulate_scan(tmp_path / "c.h5", SimulationConfig(matrix=16, coils=2, slices=1, object="phantom", seed=6))
    assert a.measurement_id == b.measurement_id != c.measurement_id
    _, acq_a = read_scan(a.path)
    _, acq_b = read_scan(b.path)
    assert all(np.array_equal(x.data, y.data) for x, y in zip(acq_a, acq_b))


def test_object_selection_and_fallback(monkeypatch, caplog, tmp_path):
    monkeypatch.setenv(brain.BRAIN_VOLUME_ENV, str(tmp_path / "absent.nii.gz"))
    monkeypatch.setattr(brain, "DEFAULT_BRAIN_VOLUME", tmp_path / "absent2.nii.gz")
    assert brain.brain_volume_path() is None
    with caplog.at_level(logging.INFO, logger="adacsc.simulation.objects"):
        images, kind = objects.object_slices(None, 24, np.array([0.0]), fov_mm=240.0,
                                             slice_thickness_mm=5.0, rng=np.random.default_rng(0))
    assert kind == "phantom" and "phantom" in caplog.text
    assert images.shape == (1, 24, 24) and images.dtype == np.complex64
    with pytest.raises(FileNotFoundError):
        objects.resolve_object_kind("brain")
    with pytest.raises(ValueError):
        objects.resolve_object_kind("banana")


def test_phantom_slices_are_analytic_with_smooth_phase():
    z = np.array([-10.0, 0.0, 10.0])
    img = phantom_slices(64, z, rng=np.random.default_rng(2))
    assert img.shape == (3, 64, 64) and img.dtype == np.complex64
    assert np.allclose(np.abs(img).reshape(3, -1).max(axis=1), 1.0, atol=1e-6)
    assert np.abs(img[:, 0, 0]).max() == 0.0  # background outside the head
    assert not np.allclose(np.abs(img[0]), np.abs(img[2]))  # slices differ
    mask = np.abs(img[1]) > 0.3
    phase = np.angle(img[1] * np.conj(img[1][32, 32]))
    dphi = np.abs(np.angle(np.exp(1j * np.diff(phase, axis=1))))[mask[:, 1:] & mask[:, :-1]]
    assert dphi.max() < 0.2


@pytest.mark.skipif(not brain.brain_available(), reason="brain volume (mricron-data) not installed")
def test_brain_volume_slices():
    path = brain.brain_volume_path()
    vol = brain.load_volume(path)
    assert vol.ndim == 3 and vol.dtype == np.float32 and vol.max() > 0
    img = brain.brain_slices(64, np.array([-6.0, 0.0, 6.0]), rng=np.random.default_rng(0))
    assert img.shape == (3, 64, 64) and img.dtype == np.complex64
    assert np.allclose(np.abs(img).reshape(3, -1).max(axis=1), 1.0, atol=1e-6)
    assert (np.abs(img) > 0.1).mean() > 0.2  # a brain fills a good part of the field of view
    assert np.abs(img[:, :3, :3]).max() == 0.0


def test_cli_simulate(tmp_path):
    from adacsc.commands import simulate

    parser = argparse.ArgumentParser()
    simulate.add_parser(parser.add_subparsers())
    out = tmp_path / "cli.h5"
    args = parser.parse_args(["simulate", "-o", str(out), "--matrix", "16", "--coils", "2", "--slices", "1",
                              "--noise", "0.03", "--seed", "4", "--object", "phantom", "--field-T", "0.1",
                              "--noise-file", str(tmp_path / "n.h5")])
    assert args.func(args) == 0
    header, _ = read_scan(out)
    assert header.acquisitionSystemInformation.systemFieldStrength_T == pytest.approx(0.1)
    assert header.experimentalConditions.H1resonanceFrequency_Hz == round(42.577478e6 * 0.1)
    assert (tmp_path / "n.h5").is_file()
    assert read_ground_truth(out).attrs["noise_sigma"] == pytest.approx(0.03)
    bad = parser.parse_args(["simulate", "-o", str(tmp_path / "bad.h5"), "--matrix", "7"])
    assert bad.func(bad) == 2


def test_read_ground_truth_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_ground_truth(tmp_path / "missing.h5")
    path = tmp_path / "plain.h5"
    simulate_scan(path, SimulationConfig(matrix=16, coils=1, slices=1, object="phantom"))
    with h5py.File(path, "a") as f:
        del f["dataset/ground_truth"]
    with pytest.raises(KeyError):
        read_ground_truth(path)


def test_committed_simulated_fixture():
    path = SCANS / "sim_brain_4coil_64.h5"
    assert path.is_file() and path.stat().st_size < 1.5e6
    header, acqs = read_scan(path)
    gt = read_ground_truth(path)
    assert gt.image.shape == (2, 64, 64) and gt.coil_maps.shape == (2, 4, 64, 64)
    assert header.acquisitionSystemInformation.receiverChannels == 4
    assert sum(is_noise(a) for a in acqs) == 64 and len(acqs) == 64 + 2 * 64
    assert isinstance(gt, GroundTruth) and gt.attrs["object"] == "brain"
