"""The raw-stream front end on simulated and real data: prewhitening, buffering, coil combination
and offline replay, scored against the simulator's ground truth."""

import logging
from pathlib import Path

import ismrmrd
import numpy as np
import pytest

from adacsc.chain.config import load_chain
from adacsc.io.dataset import InputScan
from adacsc.mr.fft import ifftc
from adacsc.replay import replay
from adacsc.simulation.ground_truth import ideal_combined_magnitude, read_ground_truth
from adacsc.simulation.scanner import SimulationConfig, simulate_scan
from support.scans import NOISE_ONLY, image_stack, read_images, run_chain_on_file, simulated


def combined_nrmse(output: Path, scan: Path) -> float:
    """NRMSE of the combined magnitude against |x| sqrt(s^H C^-1 s), inside the object."""
    images = np.abs(image_stack(read_images(output)["image_1"]))
    ideal = ideal_combined_magnitude(read_ground_truth(scan))
    support = read_ground_truth(scan).image != 0
    return float(np.linalg.norm((images - ideal)[np.abs(support) > 0]) / np.linalg.norm(ideal[support]))


def test_prewhitened_noise_is_white_with_unit_variance(sim_dir: Path) -> None:
    scan = simulated(sim_dir, "white", matrix=64, coils=6, slices=2, noise=0.05, seed=5)
    readouts = [a for a in run_chain_on_file(scan, NOISE_ONLY) if isinstance(a, ismrmrd.Acquisition)]
    assert all(not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) for a in readouts)
    samples = []
    for s in range(2):
        kspace = np.stack([a.data for a in readouts if a.idx.slice == s], axis=1)  # [C, E1, 2N]
        images = ifftc(kspace)
        n = images.shape[-1] // 2
        # the object fills the central half of the oversampled readout: the rest is pure noise
        samples.append(np.concatenate([images[..., : n // 2 - 2], images[..., 3 * n // 2 + 2:]], axis=-1).reshape(6, -1))
    noise = np.concatenate(samples, axis=1)
    covariance = noise @ noise.conj().T / noise.shape[1]
    tolerance = 5 / np.sqrt(noise.shape[1])  # five standard errors of a covariance entry
    assert np.abs(covariance - np.eye(6)).max() < tolerance


def test_front_end_matches_ground_truth(sim_scan: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.h5"
    result = replay(sim_scan, output, load_chain("adacsc_frontend"))
    assert result.images == {"image_1": 2}
    nrmse = combined_nrmse(output, sim_scan)
    truth = read_ground_truth(sim_scan)
    ideal = ideal_combined_magnitude(truth)
    support = np.abs(truth.image) > 0
    noise_floor = np.sqrt(support.sum()) / np.linalg.norm(ideal[support])  # unit noise per pixel
    logging.getLogger(__name__).info("combined NRMSE %.4f (noise floor %.4f)", nrmse, noise_floor)
    assert nrmse < 1.5 * noise_floor + 0.02


@pytest.mark.parametrize("method", ["inati", "walsh"])
def test_coil_map_methods_at_low_noise(sim_dir: Path, tmp_path: Path, method: str) -> None:
    scan = simulated(sim_dir, "quiet", matrix=64, coils=4, slices=1, noise=0.0005, seed=7)
    output = tmp_path / "out.h5"
    replay(scan, output, load_chain("adacsc_frontend").with_overrides({"coil_map_method": method}))
    assert combined_nrmse(output, scan) < 0.05


def test_noise_dependency_is_stored_and_reused(tmp_path: Path, noise_folder: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    scan, noise = tmp_path / "scan.h5", tmp_path / "noise.h5"
    result = simulate_scan(scan, SimulationConfig(matrix=48, coils=4, slices=1, noise=0.02, seed=11),
                           noise_file=noise)
    chain = load_chain("adacsc_frontend")
    replay(noise, tmp_path / "noise_out.h5", chain)
    assert (noise_folder / f"noise_{result.noise_measurement_id}.npz").is_file()
    with caplog.at_level(logging.INFO):
        replay(scan, tmp_path / "out.h5", chain)
    assert f"reused from measurement {result.noise_measurement_id}" in caplog.text
    assert combined_nrmse(tmp_path / "out.h5", scan) < 0.2


def test_missing_noise_warns_and_passes_through(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    scan, noise = tmp_path / "scan.h5", tmp_path / "noise.h5"
    simulate_scan(scan, SimulationConfig(matrix=32, coils=2, slices=1, seed=12), noise_file=noise)
    with caplog.at_level(logging.WARNING):
        result = replay(scan, tmp_path / "out.h5", load_chain("adacsc_frontend"))
    assert "not found" in caplog.text and "without prewhitening" in caplog.text
    assert result.images == {"image_1": 1}


def test_single_coil_multi_slice(sim_dir: Path, tmp_path: Path) -> None:
    scan = simulated(sim_dir, "single", matrix=48, coils=1, slices=3, noise=0.005, seed=13)
    output = tmp_path / "out.h5"
    result = replay(scan, output, load_chain("adacsc_frontend"))
    assert result.images == {"image_1": 3}
    images = read_images(output)["image_1"]
    assert sorted(im.slice for im in images) == [0, 1, 2]
    assert combined_nrmse(output, scan) < 0.1


def test_output_images_carry_geometry_and_meta(sim_scan: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.h5"
    replay(sim_scan, output, load_chain("adacsc_frontend"))
    images = sorted(read_images(output)["image_1"], key=lambda im: im.slice)
    with InputScan(sim_scan) as scan:
        acquisitions = [a for a in scan.acquisitions() if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    for image in images:
        source = next(a for a in acquisitions if a.idx.slice == image.slice)
        assert np.allclose(image.position[:], source.position[:])
        assert np.allclose(image.slice_dir[:], source.slice_dir[:])
        assert np.allclose(image.read_dir[:], source.read_dir[:])
        assert image.image_series_index == 1
        assert image.image_type == ismrmrd.IMTYPE_COMPLEX
        assert list(image.getHead().matrix_size) == [64, 64, 1]
        assert image.field_of_view[0] > 0 and image.field_of_view[1] > 0
        assert image.meta["DataRole"] == "CoilCombined"
        assert image.meta["SamplingMask"] == "1" * 64
        assert image.meta["SeriesDescription"].endswith("_adacsc_coilcombined")
        assert image.meta["ImageProcessingHistory"] == ["PYTHON", "ADACSC", "COILCOMBINED"]
    assert images[0].position[2] != images[1].position[2]


def test_real_lowfield_scan_replays(real_scan: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    output = tmp_path / "real.h5"
    with caplog.at_level(logging.WARNING):
        result = replay(real_scan, output, load_chain("adacsc_frontend"))
    assert "without prewhitening" in caplog.text  # the release has no noise readouts
    assert result.images == {"image_1": 4}
    images = read_images(output)["image_1"]
    assert all(np.isfinite(im.data).all() and np.abs(im.data).max() > 0 for im in images)
