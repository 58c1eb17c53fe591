"""EMI in the simulator (adacsc.simulation.emi): channels, labels, power and ground truth."""

import json
from pathlib import Path

import ismrmrd
import numpy as np
import pytest

from adacsc.cli import main
from adacsc.simulation.emi import EMIConfig, read_emi_truth
from adacsc.simulation.scanner import SimulationConfig, simulate_scan
from support.scans import read_scan

CONFIG = SimulationConfig(matrix=32, coils=2, slices=2, seed=4, object="phantom", noise_readouts=32)


def _split(path: Path) -> tuple[object, np.ndarray, np.ndarray]:
    header, acqs = read_scan(path)
    noise = np.stack([a.data for a in acqs if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)], axis=1)
    imaging = np.stack([a.data for a in acqs if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)], axis=1)
    return header, noise, imaging


def test_emi_scan_has_sensing_channels_and_exact_ground_truth(tmp_path: Path) -> None:
    clean = simulate_scan(tmp_path / "clean.h5", CONFIG)
    noisy = simulate_scan(tmp_path / "emi.h5", CONFIG, emi=EMIConfig(sensing_coils=2, power_ratio=10.0))
    assert noisy.measurement_id != clean.measurement_id
    header, noise, imaging = _split(noisy.path)
    labels = [c.coilName for c in header.acquisitionSystemInformation.coilLabel]
    assert labels == ["LF_HEAD_01", "LF_HEAD_02", "EMI_SENSE_01", "EMI_SENSE_02"]
    _, clean_noise, clean_imaging = _split(clean.path)
    truth = read_emi_truth(noisy.path)
    assert list(truth.attrs["sensing_channels"]) == [2, 3]
    assert json.loads(truth.attrs["channel_labels"]) == labels
    # the receive channels are the EMI-free scan plus exactly the stored interference
    assert np.allclose(imaging[:2] - truth.imaging[:2], clean_imaging, atol=1e-5)
    assert np.allclose(noise[:2] - truth.noise[:2], clean_noise, atol=1e-5)
    # at 10x the thermal power of the receive coils' imaging readouts
    thermal = np.mean(truth.attrs["thermal_power_imaging"][:2])
    assert np.mean(np.abs(truth.imaging[:2]) ** 2) == pytest.approx(10 * thermal, rel=1e-4)
    # sensing coils: no MR signal, thermal noise and far more interference than the receive coils
    sensing_thermal = imaging[2:] - truth.imaging[2:]
    assert np.mean(np.abs(sensing_thermal) ** 2) == pytest.approx(thermal, rel=0.1)
    assert np.mean(np.abs(truth.imaging[2:]) ** 2) > 4 * np.mean(np.abs(truth.imaging[:2]) ** 2)
    assert read_emi_truth(noisy.path).attrs["tones_hz"].tolist() == list(EMIConfig().tones_hz)


def test_emi_free_sensing_coils(tmp_path: Path) -> None:
    result = simulate_scan(tmp_path / "quiet.h5", CONFIG, emi=EMIConfig(sensing_coils=1, power_ratio=0.0))
    truth = read_emi_truth(result.path)
    assert not np.any(truth.imaging) and not np.any(truth.noise)
    _, _, imaging = _split(result.path)
    assert imaging.shape[0] == 3 and np.mean(np.abs(imaging[2]) ** 2) > 0


def test_simulate_command_emi_options(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "cli.h5"
    assert main(["simulate", "-o", str(out), "--matrix", "16", "--coils", "1", "--slices", "1", "--object",
                 "phantom", "--sensing-coils", "2", "--emi-ratio", "5", "--emi-tones", "1000,-2000"]) == 0
    truth = read_emi_truth(out)
    assert truth.attrs["tones_hz"].tolist() == [1000.0, -2000.0] and truth.attrs["power_ratio"] == 5.0
    assert main(["simulate", "-o", str(tmp_path / "bad.h5"), "--emi-tones", "1000"]) == 2
    assert "--sensing-coils" in caplog.text
    with pytest.raises(ValueError, match="power ratio"):
        EMIConfig(power_ratio=-1).validate()
