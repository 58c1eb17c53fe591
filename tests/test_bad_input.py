"""Bad input gives a clear error or a documented, logged fallback, never silent loss."""

import logging
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import pytest

from adacsc.chain.config import load_chain
from adacsc.cli import main
from adacsc.io.dataset import DatasetError, InputScan
from adacsc.io.header import HeaderError
from adacsc.io.header_builder import write_ismrmrd
from adacsc.replay import replay
from support.scans import read_images


def copy_scan(source: Path, target: Path, header: bytes | None = None,
              keep: callable = lambda index, acq: True, edit: callable = lambda acq: acq) -> Path:
    """Rewrite a scan with an optionally replaced header and filtered/edited acquisitions."""
    with InputScan(source) as scan:
        xml = header if header is not None else scan.header_bytes()
        acquisitions = [edit(a) for i, a in enumerate(scan.acquisitions()) if keep(i, a)]
    return write_ismrmrd(target, xml.decode() if isinstance(xml, bytes) else xml, acquisitions)


def test_file_that_is_not_ismrmrd(tmp_path: Path) -> None:
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(DatasetError, match="not an ISMRMRD file"):
        InputScan(text)
    empty_hdf5 = tmp_path / "empty.h5"
    h5py.File(empty_hdf5, "w").close()
    with pytest.raises(DatasetError, match="no group with an 'xml' header"):
        InputScan(empty_hdf5)
    with pytest.raises(DatasetError, match="no such file"):
        InputScan(tmp_path / "absent.h5")


def test_cli_reports_bad_input_in_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x00" * 100)
    with caplog.at_level(logging.ERROR):
        assert main(["recon", str(bad), "-o", str(tmp_path / "out.h5"), "-c", "adacsc_frontend"]) == 2
    assert "not an ISMRMRD file" in caplog.text
    assert "Traceback" not in caplog.text


def test_header_that_does_not_parse(sim_scan: Path, tmp_path: Path) -> None:
    broken = copy_scan(sim_scan, tmp_path / "broken.h5", header=b"<ismrmrdHeader><encoding>")
    with pytest.raises(HeaderError, match="does not parse"):
        replay(broken, tmp_path / "out.h5", load_chain("adacsc_frontend"))


def test_zero_and_mismatched_channel_counts_are_dropped_and_counted(
        sim_scan: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def edit(acq: ismrmrd.Acquisition) -> ismrmrd.Acquisition:
        if acq.scan_counter == 100:
            odd = ismrmrd.Acquisition.from_array(acq.data[:3].copy())
            head = acq.getHead()
            head.active_channels = head.available_channels = 3
            odd.setHead(head)
            return odd
        return acq

    scan = copy_scan(sim_scan, tmp_path / "odd.h5", edit=edit)
    with caplog.at_level(logging.INFO):
        with pytest.raises(RuntimeError, match="readout .* has 3 channels, the noise covariance 4"):
            replay(scan, tmp_path / "out.h5", load_chain("adacsc_frontend"))
    with caplog.at_level(logging.INFO):
        result = replay(scan, tmp_path / "out2.h5",
                        load_chain("adacsc_frontend").with_overrides({"perform_noise_adjust": "false"}))
    assert "3 channels where the scan has 4" in caplog.text
    assert "64 noise: left out" in caplog.text and "65 left out" in caplog.text  # the noise readouts pass unadjusted, plus the odd one
    assert result.images == {"image_1": 2}


def test_truncated_scan_yields_what_was_acquired(sim_scan: Path, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    with InputScan(sim_scan) as scan:
        total = scan.number_of_acquisitions()
    cut = total - 20  # the stream stops in the second slice, after its k-space centre
    truncated = copy_scan(sim_scan, tmp_path / "cut.h5", keep=lambda i, a: i < cut)
    with caplog.at_level(logging.WARNING):
        result = replay(truncated, tmp_path / "out.h5", load_chain("adacsc_frontend"))
    assert "stream ended before slice 1" in caplog.text
    assert result.images == {"image_1": 2}
    images = {im.slice: im for im in read_images(tmp_path / "out.h5")["image_1"]}
    assert images[1].meta["SamplingMask"].count("1") == 64 - 20


def test_truncated_before_the_centre_gives_a_clear_error_for_that_slice(
        sim_scan: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with InputScan(sim_scan) as scan:
        total = scan.number_of_acquisitions()
    truncated = copy_scan(sim_scan, tmp_path / "cut.h5", keep=lambda i, a: i < total - 40)
    with caplog.at_level(logging.WARNING):
        result = replay(truncated, tmp_path / "out.h5", load_chain("adacsc_frontend"))
    assert "slice 1 repetition 0 not reconstructed: k-space centre line was not acquired" in caplog.text
    assert result.images == {"image_1": 1}


def test_scan_without_acquisitions_gives_no_images(sim_scan: Path, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    empty = copy_scan(sim_scan, tmp_path / "empty.h5", keep=lambda i, a: False)
    result = replay(empty, tmp_path / "out.h5", load_chain("adacsc_frontend"))
    assert result.acquisitions == 0 and result.images == {}


def test_bad_property_value_is_named(sim_scan: Path, tmp_path: Path) -> None:
    chain = load_chain("adacsc_frontend").with_overrides({"coil_map_method": "espirit"})
    with pytest.raises(RuntimeError, match="coil_map_method='espirit' must be one of inati, walsh"):
        replay(sim_scan, tmp_path / "out.h5", chain)


def test_noise_data_with_too_few_samples_is_not_fatal(sim_scan: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    keep_one_noise = copy_scan(
        sim_scan, tmp_path / "one.h5",
        keep=lambda i, a: not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) or i == 0)
    result = replay(keep_one_noise, tmp_path / "out.h5", load_chain("adacsc_frontend"))
    assert result.images == {"image_1": 2}
    assert np.isfinite(read_images(tmp_path / "out.h5")["image_1"][0].data).all()
