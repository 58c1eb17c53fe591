"""Validation at the boundary: property ranges and operator caps, device names, full-match name
checks, non-finite noise and readouts, and the solver's cooperative cancellation."""

from pathlib import Path

import ismrmrd
import numpy as np
import pytest
import torch

from adacsc import resources
from adacsc.core.cancel import Cancelled, bind
from adacsc.core.convolution import Synthesis
from adacsc.core.device import resolve_device
from adacsc.core.dictionary import random_dictionary
from adacsc.core.filter_bank import FilterBank
from adacsc.core.fista import fista
from adacsc.core.fourier import SampledFourier
from adacsc.core.spectral import SpectralCodeOperator
from adacsc.gadgets import coil_combination, csc
from adacsc.gadgets.noise_adjust import Prewhitener
from adacsc.gadgets.properties import PropertyError
from adacsc.gadgets.readout_buffer import Accumulator
from adacsc.io.dataset import InputScan
from adacsc.io.header import parse_header
from adacsc.io.noise_store import NoiseStore, StoredNoise
from adacsc.limits import LimitError, ScanBudget, ScanLimits
from adacsc.scan_context import ScanContext
from adacsc.simulation.small_scan import write_small_scan
from support.server import scan_messages


@pytest.mark.parametrize("gadget, raw, message", [
    (coil_combination.GADGET, {"kernel_size": "-3"}, "kernel_size='-3': must be >= 2"),
    (coil_combination.GADGET, {"image_series_index": "-1"}, "must be >= 0"),
    (coil_combination.GADGET, {"image_series_index": "99999999999"}, "must be <= 65535"),
    (csc.GADGET, {"image_series_index": "65534"}, "must be <= 65533"),
    (csc.GADGET, {"iterations": "-1"}, "must be >= 0"),
    (csc.GADGET, {"noise_lambda": "-0.5"}, "noise_lambda='-0.5': must be >= 0"),
    (csc.GADGET, {"iterations": "100000000"}, "exceeds the operator limit of 1000 ($ADACSC_MAX_ITERATIONS)"),
    (csc.GADGET, {"device": "meta"}, "'meta' is not a device adacsc runs on"),
])
def test_out_of_range_properties_are_refused_by_name(gadget, raw, message):
    with pytest.raises(PropertyError) as caught:
        gadget.parse(raw, ScanLimits())
    assert message in str(caught.value)


def test_the_operator_sets_the_iteration_cap(monkeypatch):
    monkeypatch.delenv("ADACSC_MAX_ITERATIONS", raising=False)
    limits = ScanLimits(max_iterations=5000)
    assert csc.GADGET.parse({"iterations": "4000"}, limits).iterations == 4000
    with pytest.raises(PropertyError, match="operator limit of 5000"):
        csc.GADGET.parse({"iterations": "5001"}, limits)


def test_a_device_torch_knows_but_adacsc_cannot_run_on_is_refused():
    with pytest.raises(ValueError, match="not a device adacsc runs on"):
        resolve_device("meta")


@pytest.mark.parametrize("check", [
    lambda: NoiseStore("/tmp/unused").load("X\n"),
    lambda: resources.resolve(resources.CONFIG, "adacsc_frontend\n"),
    lambda: resources.resolve(resources.DICTIONARY, "dct7x7_k48\n"),
])
def test_name_checks_refuse_a_trailing_newline(check):
    with pytest.raises(ValueError):
        check()


def test_a_nan_noise_covariance_is_never_stored(tmp_path):
    store = NoiseStore(tmp_path)
    bad = np.eye(2, dtype=complex)
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        store.save("m1", StoredNoise(bad, ["a", "b"], 5.0, 100))
    assert not list(tmp_path.iterdir())
    np.savez(tmp_path / "noise_m2.npz", covariance=bad, coil_labels='["a", "b"]', noise_dwell_us=5.0, samples=1)
    with pytest.raises(ValueError, match="NaN or infinite"):
        store.load("m2")


def test_noise_readouts_with_nan_are_ignored(tmp_path, caplog):
    scan = write_small_scan(tmp_path / "scan.h5", coils=2, noise=4)
    header, _ = scan_messages(scan)
    prewhitener = Prewhitener(parse_header(header), NoiseStore(tmp_path / "noise"))
    noise = ismrmrd.Acquisition.from_array(np.full((2, 32), np.nan, np.complex64))
    prewhitener.add_noise(noise)
    assert prewhitener.noise.samples == 0 and "NaN or infinite samples: ignored" in caplog.text


def test_the_buffer_drops_non_finite_readouts_and_charges_its_budget(tmp_path):
    scan = write_small_scan(tmp_path / "scan.h5", coils=2, lines=16)
    header = parse_header(scan_messages(scan)[0])
    accumulator = Accumulator(header, remove_oversampling=True, scan=ScanContext(budget=ScanBudget(8_000)))
    readout = ismrmrd.Acquisition.from_array(np.ones((2, 32), np.complex64))
    readout.data[1, 5] = np.inf
    accumulator.add(readout)
    assert accumulator.tally.outcomes[("imaging", "NaN or infinite samples")] == 1
    with pytest.raises(LimitError, match="k-space buffer of slice 0 .* needs 8192 bytes"):
        accumulator.add(ismrmrd.Acquisition.from_array(np.ones((2, 32), np.complex64)))


def test_a_header_over_the_limits_fails_the_buffer_gadget_before_allocating(tmp_path, monkeypatch):
    scan = write_small_scan(tmp_path / "scan.h5", coils=2, lines=16)
    monkeypatch.delenv("ADACSC_MAX_MATRIX", raising=False)
    with pytest.raises(LimitError, match=r"encodedSpace.matrixSize.x = 32 exceeds the operator limit of 16"):
        Accumulator(parse_header(scan_messages(scan)[0]), remove_oversampling=True,
                    scan=ScanContext(ScanLimits(max_matrix=16)))


def test_fista_stops_between_iterations_when_asked():
    filters = random_dictionary(2, 3).filters
    op = SpectralCodeOperator(Synthesis(FilterBank(torch.tensor(filters))), SampledFourier((8, 8), (8, 8), None), "cpu")
    y = torch.randn(1, 8, 8, dtype=torch.complex64)
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled, match="after 3 of 1000000 iterations"):
        fista(op, y, 0.1, torch.tensor([4.0]), n_iter=1_000_000, should_stop=stop)
    bind(lambda: True)  # the check bound to this thread applies when none is given
    try:
        with pytest.raises(Cancelled, match="after 0 of"):
            fista(op, y, 0.1, torch.tensor([4.0]), n_iter=10)
    finally:
        bind(None)


@pytest.fixture(scope="module")
def noise_dir_seen_by_a_module_fixture() -> Path:
    return resources.folders(resources.NOISE)[0]


def test_tests_never_touch_the_users_home(noise_dir_seen_by_a_module_fixture, tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    assert noise_dir_seen_by_a_module_fixture.is_relative_to(base)
    assert Path.home().is_relative_to(base)


def test_non_finite_combined_pixels_are_zeroed_with_a_warning(tmp_path, monkeypatch, caplog):
    scan = write_small_scan(tmp_path / "scan.h5", coils=2, lines=16, slices=1, noise=0)
    header = parse_header(scan_messages(scan)[0])
    accumulator = Accumulator(header, remove_oversampling=True)
    with InputScan(scan) as source:
        recon = [r for r in map(accumulator.add, source.acquisitions()) if r is not None][0]
    real = coil_combination.combine_buffer

    def with_nan(*args):
        image, gain = real(*args)
        image[0, :3] = np.nan
        return image, gain

    monkeypatch.setattr(coil_combination, "combine_buffer", with_nan)
    [(image, _, _)] = coil_combination.combine_recon_data(recon, coil_combination.Settings())
    assert np.isfinite(image).all() and "3 NaN or infinite pixels set to 0" in caplog.text
