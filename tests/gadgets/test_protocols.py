"""Scanner protocols through the front end (replay): extra readout classes, reversed readouts,
averages in either loop order, contrasts and 3-D partitions, scored against the simulator's
ground truth; the same ReconData through coil_combination as Gadgetron's BucketToBuffer builds
it (every E2, N, S index); and ismrmrd-tools' own Shepp-Logan generator when installed."""

import dataclasses
import logging
import shutil
import subprocess
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
from gadgetron.types.recon_data import ReconBit, ReconBuffer, ReconData

from adacsc.chain.config import load_chain
from adacsc.gadgets import coil_combination
from adacsc.gadgets.readout_buffer import Accumulator
from adacsc.io.dataset import InputScan
from adacsc.io.header import parse_header
from adacsc.replay import replay
from adacsc.simulation.ground_truth import ideal_combined_magnitude, read_ground_truth
from support.scans import read_images, simulated

BASE = {"matrix": 32, "coils": 4, "slices": 2, "noise": 0.02, "seed": 11, "object": "phantom"}
EXTRAS = {"navigators": 3, "phase_correction": 2, "dummy_scans": 4, "feedback": 2, "calibration_lines": 8}


def front_end(scan: Path, out: Path, **overrides: str) -> list[ismrmrd.Image]:
    replay(scan, out, load_chain("adacsc_frontend").with_overrides(overrides))
    return read_images(out)["image_1"]


def ordered(images: list[ismrmrd.Image]) -> np.ndarray:
    """[K, Y, X] magnitudes in ground-truth order: contrast outer, then slice (or partition)."""
    return np.stack([np.abs(im.data[0, 0]) for im in sorted(images, key=lambda i: (i.contrast, i.slice))])


def psnr_db(images: np.ndarray, scan: Path) -> np.ndarray:
    """PSNR per image against the ideal combined magnitude (SNR units)."""
    ideal = ideal_combined_magnitude(read_ground_truth(scan))
    mse = ((images - ideal) ** 2).mean(axis=(1, 2))
    return 10 * np.log10(ideal.max(axis=(1, 2)) ** 2 / mse)


@pytest.fixture(scope="module")
def clean(sim_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[ismrmrd.Image]]:
    scan = simulated(sim_dir, "protocol_clean", **BASE)
    return scan, front_end(scan, tmp_path_factory.mktemp("clean") / "out.h5")


@pytest.mark.parametrize("extra", [*({k: v} for k, v in EXTRAS.items()), {"reverse": True}],
                         ids=[*EXTRAS, "reverse"])
def test_extra_readouts_leave_the_images_as_without_them_and_are_named(
        extra: dict, clean, sim_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    scan = simulated(sim_dir, "protocol_" + "_".join(extra), **BASE, **extra)
    with caplog.at_level(logging.INFO):
        images = front_end(scan, tmp_path / "out.h5")
    assert np.array_equal(ordered(images), ordered(clean[1]))  # the imaging samples are the same
    tally = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("readouts: "))
    expected = {"navigators": "6 navigator: left out", "phase_correction": "4 phase correction: left out",
                "dummy_scans": "4 dummy scan: left out", "feedback": "2 RT feedback: left out",
                "calibration_lines": "16 calibration-only: used for calibration",
                "reverse": "64 imaging: used for the image"}[next(iter(extra))]
    assert expected in tally, tally


def test_every_extra_class_at_once_is_accounted_for(clean, sim_dir: Path, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    scan = simulated(sim_dir, "protocol_all", **BASE, **EXTRAS, reverse=True)
    with caplog.at_level(logging.INFO):
        images = front_end(scan, tmp_path / "out.h5")
    assert np.array_equal(ordered(images), ordered(clean[1]))
    assert "64 used for the image, 16 used for calibration, 18 left out" in caplog.text
    assert "2 HP feedback: left out" in caplog.text


@pytest.mark.parametrize("loop", ["inner", "outer"])
def test_averages_are_combined_in_k_space_in_either_loop_order(loop: str, clean, sim_dir: Path,
                                                               tmp_path: Path) -> None:
    scan = simulated(sim_dir, f"protocol_nex4_{loop}", **BASE, averages=4, average_loop=loop)
    images = front_end(scan, tmp_path / "out.h5")
    assert len(images) == 2 and {im.average for im in images} == {0}
    assert {im.meta["NoiseLevel"] for im in images} == {"0.5"} and {im.meta["Averages"] for im in images} == {"4"}
    # combined images stay in the units of one average: noise std 0.5 per pixel instead of 1
    gain = psnr_db(ordered(images), scan) - psnr_db(ordered(clean[1]), clean[0])
    assert gain.min() > 4.5, gain


def test_averages_in_both_loop_orders_give_the_same_images(sim_dir: Path, tmp_path: Path) -> None:
    inner = simulated(sim_dir, "protocol_nex4_inner", **BASE, averages=4, average_loop="inner")
    outer = simulated(sim_dir, "protocol_nex4_outer", **BASE, averages=4, average_loop="outer")
    assert np.array_equal(ordered(front_end(inner, tmp_path / "i.h5")), ordered(front_end(outer, tmp_path / "o.h5")))


def test_averages_kept_apart_when_asked(sim_dir: Path, tmp_path: Path) -> None:
    scan = simulated(sim_dir, "protocol_nex4_outer", **BASE, averages=4, average_loop="outer")
    images = front_end(scan, tmp_path / "out.h5", averages="separate")
    assert sorted((im.slice, im.average) for im in images) == [(s, a) for s in range(2) for a in range(4)]
    assert len({im.image_index for im in images}) == 8 and {im.meta["NoiseLevel"] for im in images} == {"1"}


def test_two_contrasts_give_two_images_per_slice_each_true_to_its_own_object(clean, sim_dir: Path,
                                                                             tmp_path: Path) -> None:
    scan = simulated(sim_dir, "protocol_contrasts", **BASE, contrasts=2)
    images = front_end(scan, tmp_path / "out.h5")
    assert sorted((im.slice, im.contrast) for im in images) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert len({im.image_index for im in images}) == 4
    scores = psnr_db(ordered(images), scan)
    reference = psnr_db(ordered(clean[1]), clean[0])
    assert np.abs(scores[:2] - reference).max() < 1.0, (scores, reference)
    assert scores[2:].min() > reference.min() - 6, scores  # the darker echo has less signal over the same noise


def test_a_3d_slab_gives_one_image_per_partition_at_its_position(sim_dir: Path, tmp_path: Path) -> None:
    scan = simulated(sim_dir, "protocol_3d", **{**BASE, "slices": 1}, partitions=8)
    images = sorted(front_end(scan, tmp_path / "out.h5"), key=lambda im: im.slice)
    assert [im.slice for im in images] == list(range(8)) and len({im.image_index for im in images}) == 8
    positions = np.array([im.position[2] for im in images])
    np.testing.assert_allclose(np.diff(positions), 5.0, atol=1e-4)  # the partition thickness
    np.testing.assert_allclose(positions, read_ground_truth(scan).attrs["slice_positions_mm"], atol=1e-4)
    assert {round(im.field_of_view[2], 3) for im in images} == {5.0}
    truth = read_ground_truth(scan)
    inside = np.abs(truth.image).max(axis=(1, 2)) > 0.2  # partitions that cut the object
    two_d = simulated(sim_dir, "protocol_3d_as_2d", **{**BASE, "slices": 1, "seed": 11})
    floor = psnr_db(ordered(front_end(two_d, tmp_path / "2d.h5")), two_d).min()
    assert psnr_db(ordered(images), scan)[inside].min() > floor - 3


def test_kz_undersampled_inside_its_limits_is_flagged(sim_dir: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    scan = simulated(sim_dir, "protocol_3d", **{**BASE, "slices": 1}, partitions=8)
    header, readouts = _read(scan)
    accumulator = Accumulator(header, remove_oversampling=True)
    kept = [a for a in readouts if a.idx.kspace_encode_step_2 != 2 or a.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE)]
    [recon] = [r for r in map(accumulator.add, kept) if r is not None]
    with caplog.at_level(logging.WARNING):
        results = list(coil_combination.combine_recon_data(recon, _props()))
    assert len(results) == 8 and all(meta["KzUndersampled"] == "1" for _, _, meta in results)
    assert "kz undersampled inside its encoding limits" in caplog.text


def _read(scan: Path) -> tuple[object, list[ismrmrd.Acquisition]]:
    with InputScan(scan) as source:
        header = parse_header(source.header_bytes())
        return header, [a for a in source.acquisitions() if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]


def _props(**overrides: object) -> coil_combination.Settings:
    return dataclasses.replace(coil_combination.Settings(), **overrides)


def test_coil_combination_takes_every_n_and_s_index_of_a_gadgetron_buffer(sim_dir: Path) -> None:
    """Gadgetron's BucketToBuffer with N_dimension=average and S_dimension=contrast puts a slice's
    averages along N and its contrasts along S of one buffer; every one of them is used."""
    scan = simulated(sim_dir, "protocol_nex2_contrasts", **{**BASE, "slices": 1}, averages=2, contrasts=2)
    header, readouts = _read(scan)
    recons = [r for r in map(Accumulator(header, remove_oversampling=True).add, readouts) if r is not None]
    assert len(recons) == 2  # ours: one ReconData per contrast, averages along N
    separate = [result for recon in recons for result in coil_combination.combine_recon_data(recon, _props())]
    buffers = [recon[0].data for recon in recons]
    data = np.concatenate([np.asarray(b.data) for b in buffers], axis=5)  # contrasts along S
    headers = np.concatenate([np.asarray(b.headers) for b in buffers], axis=3)
    joined = ReconData([ReconBit(ReconBuffer(data, None, None, headers, buffers[0].sampling))])
    together = list(coil_combination.combine_recon_data(joined, _props()))
    assert [h.contrast for _, h, _ in together] == [0, 1]
    for (image, _, meta), (expected, _, expected_meta) in zip(together, separate):
        assert np.array_equal(image, expected) and meta["Averages"] == expected_meta["Averages"] == "2"


SHEPP_LOGAN = shutil.which("ismrmrd_generate_cartesian_shepp_logan")


@pytest.mark.skipif(SHEPP_LOGAN is None, reason="needs ismrmrd_generate_cartesian_shepp_logan "
                                                "(Debian package ismrmrd-tools)")
@pytest.mark.parametrize("options, images", [(["-a", "2"], 2), (["-r", "3"], 3), (["-a", "4", "-w", "16"], 4)])
def test_ismrmrd_tools_shepp_logan_returns_every_image(options: list[str], images: int, tmp_path: Path) -> None:
    scan = tmp_path / "shepp.h5"
    subprocess.run([SHEPP_LOGAN, "-m", "32", "-c", "4", *options, "-o", str(scan)], check=True,
                   capture_output=True, timeout=60)
    result = front_end(scan, tmp_path / "out.h5")
    assert sorted(im.repetition for im in result) == list(range(images))
    assert all(np.isfinite(im.data).all() and np.abs(im.data).max() > 0 for im in result)


def test_a_plain_2d_scan_is_buffered_exactly_as_its_readouts(real_scan: Path) -> None:
    """The bundled real scan (2-D, one average, every readout imaging): each slice's buffer holds its
    readouts at their line index, untouched, so the default chain's images stay bit for bit."""
    header, readouts = _read(real_scan)
    accumulator = Accumulator(header, remove_oversampling=False)
    recons = [r for r in map(accumulator.add, readouts) if r is not None]
    assert len(recons) == 4 and accumulator.tally.left_out == 0
    for recon in recons:
        data = np.asarray(recon[0].data.data)
        assert data.shape[2:] == (1, data.shape[3], 1, 1, 1)
        slice_ = np.asarray(recon[0].data.headers)[0, 0, 0, 0, 0].idx.slice
        expected = np.zeros_like(data[:, :, 0, :, 0, 0, 0])
        for a in readouts:
            if a.idx.slice == slice_:
                expected[:, a.idx.kspace_encode_step_1] = a.data.T
        assert np.array_equal(data[:, :, 0, :, 0, 0, 0], expected)


@pytest.mark.skipif(SHEPP_LOGAN is None, reason="needs ismrmrd_generate_cartesian_shepp_logan "
                                                "(Debian package ismrmrd-tools)")
def test_the_default_chain_reconstructs_a_repetition_without_its_centre_line(tmp_path: Path) -> None:
    scan = tmp_path / "shepp.h5"
    subprocess.run([SHEPP_LOGAN, "-m", "32", "-c", "4", "-a", "2", "-o", str(scan)], check=True,
                   capture_output=True, timeout=60)
    replay(scan, tmp_path / "out.h5", load_chain("adacsc_lowfield").with_overrides({"iterations": "5"}))
    series = read_images(tmp_path / "out.h5")
    assert {name: len(images) for name, images in series.items()} == {"image_1": 2, "image_2": 2, "image_3": 2}
    assert all(np.isfinite(im.data).all() and np.abs(im.data).max() > 0 for ims in series.values() for im in ims)


def test_partial_fourier_kz_is_zero_filled_without_a_flag(sim_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """kz 0 and 1 of 8 never acquired and the header's kspace_encoding_step_2 limits saying so:
    partial Fourier, zero-filled, not undersampling."""
    scan = simulated(sim_dir, "protocol_3d", **{**BASE, "slices": 1}, partitions=8)
    header, readouts = _read(scan)
    header.encoding[0].encodingLimits.kspace_encoding_step_2.minimum = 2
    accumulator = Accumulator(header, remove_oversampling=True)
    kept = [a for a in readouts if a.idx.kspace_encode_step_2 >= 2]
    [recon] = [r for r in map(accumulator.add, kept) if r is not None]
    with caplog.at_level(logging.WARNING):
        results = list(coil_combination.combine_recon_data(recon, _props()))
    assert len(results) == 8 and not any("KzUndersampled" in meta for _, _, meta in results)
    assert "kz undersampled" not in caplog.text


def test_the_reconstruction_qa_meta_follows_the_averaging(sim_dir: Path, tmp_path: Path) -> None:
    scan = simulated(sim_dir, "protocol_nex4_outer", **BASE, averages=4, average_loop="outer")
    replay(scan, tmp_path / "out.h5", load_chain("adacsc_lowfield").with_overrides({"iterations": "5"}))
    series = read_images(tmp_path / "out.h5")
    assert all(len(images) == 2 for images in series.values())
    assert {(im.meta["NoiseLevel"], im.meta["NoiseSource"], im.meta["Averages"])
            for images in series.values() for im in images} == {("0.5", "noise scan", "4")}
