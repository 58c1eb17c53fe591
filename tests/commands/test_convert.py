"""The 0.055 T .mat -> ISMRMRD converter: header, readouts, exact k-space, errors, fixtures."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
import scipy.io

import adacsc
from adacsc.conversion.lowfield_mat import (
    ConversionError,
    convert_lowfield_mat,
    guess_sequence,
    load_kspace,
)
from support.scans import read_scan
from support import REPO

SCANS = Path(adacsc.__file__).parent / "data" / "scans"
SEQUENCES = ("FSE", "GRE", "FLAIR")


def _data_dir() -> Path | None:
    candidates = []
    if os.environ.get("ADACSC_LOWFIELD_DIR"):
        candidates.append(Path(os.environ["ADACSC_LOWFIELD_DIR"]))
    candidates += [REPO / "shared" / "data" / "lowfield_0055T", REPO.parent / "shared" / "data" / "lowfield_0055T"]
    for c in candidates:
        if (c / "subjectA_FSE_kspace.mat").is_file():
            return c
    return None


DATA = _data_dir()
needs_data = pytest.mark.skipif(DATA is None, reason="0.055 T .mat data not found (set ADACSC_LOWFIELD_DIR)")


def kspace_from_acquisitions(header, acqs):
    enc = header.encoding[0]
    n_lines = enc.encodingLimits.kspace_encoding_step_1.maximum + 1
    n_slices = enc.encodingLimits.slice.maximum + 1
    k = np.zeros((n_lines, acqs[0].number_of_samples, n_slices), dtype=np.complex64)
    for a in acqs:
        k[a.idx.kspace_encode_step_1, :, a.idx.slice] = a.data[0]
    return k


def image(k2d):
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k2d)))


def check_structure(header, acqs, shape):
    n_lines, n_samples, n_slices = shape
    assert len(acqs) == n_lines * n_slices
    assert header.acquisitionSystemInformation.systemFieldStrength_T == pytest.approx(0.055)
    assert round(header.experimentalConditions.H1resonanceFrequency_Hz / 1e3) == 2342
    sysinfo = header.acquisitionSystemInformation
    assert sysinfo.receiverChannels == 1 and len(sysinfo.coilLabel) == 1
    assert sysinfo.coilLabel[0].coilNumber == 0 and sysinfo.coilLabel[0].coilName
    assert header.measurementInformation.measurementID
    enc = header.encoding[0]
    for space in (enc.encodedSpace, enc.reconSpace):
        assert (space.matrixSize.x, space.matrixSize.y, space.matrixSize.z) == (n_samples, n_lines, 1)
        assert space.fieldOfView_mm.x > 0 and space.fieldOfView_mm.z > 0
    assert enc.encodedSpace.fieldOfView_mm == enc.reconSpace.fieldOfView_mm
    lim = enc.encodingLimits
    assert (lim.kspace_encoding_step_1.maximum, lim.kspace_encoding_step_1.center) == (n_lines - 1, n_lines // 2)
    assert lim.slice.maximum == n_slices - 1
    assert enc.trajectory == ismrmrd.xsd.trajectoryType.CARTESIAN
    assert not any(a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) for a in acqs)
    for i, a in enumerate(acqs):
        line, s = a.idx.kspace_encode_step_1, a.idx.slice
        assert (s, line) == divmod(i, n_lines)
        assert a.active_channels == 1 and a.number_of_samples == n_samples
        assert a.center_sample == n_samples // 2 and a.sample_time_us > 0
        assert a.is_flag_set(ismrmrd.ACQ_FIRST_IN_SLICE) == (line == 0)
        assert a.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE) == (line == n_lines - 1)
        assert a.is_flag_set(ismrmrd.ACQ_FIRST_IN_ENCODE_STEP1) == (line == 0)
        assert a.is_flag_set(ismrmrd.ACQ_LAST_IN_ENCODE_STEP1) == (line == n_lines - 1)
        assert a.is_flag_set(ismrmrd.ACQ_LAST_IN_MEASUREMENT) == (i == len(acqs) - 1)
        assert tuple(a.slice_dir) == (0, 0, 1)
    z = [acqs[s * n_lines].position[2] for s in range(n_slices)]
    assert np.all(np.diff(z) > 0)


# ---------------------------------------------------------------- synthetic .mat (no data needed)


def test_synthetic_mat_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    k = rng.standard_normal((12, 10, 3)) + 1j * rng.standard_normal((12, 10, 3))
    src = tmp_path / "subjectX_GRE_kspace.mat"
    scipy.io.savemat(src, {"kspace": k})
    result = convert_lowfield_mat(src, tmp_path / "out.h5")
    assert result.sequence == "GRE" and result.shape == (12, 10, 3) and result.n_acquisitions == 36
    header, acqs = read_scan(result.path)
    check_structure(header, acqs, (12, 10, 3))
    assert header.sequenceParameters.sequence_type == "GRE"
    back = kspace_from_acquisitions(header, acqs)
    assert np.array_equal(back, k.astype(np.complex64))


def test_two_dimensional_mat_is_one_slice(tmp_path):
    src = tmp_path / "single.mat"
    scipy.io.savemat(src, {"kspace": np.ones((8, 6), dtype=complex)})
    result = convert_lowfield_mat(src, tmp_path / "out.h5", sequence="fse")
    assert result.shape == (8, 6, 1) and result.sequence == "FSE"
    header, acqs = read_scan(result.path)
    check_structure(header, acqs, (8, 6, 1))


def test_guess_sequence():
    assert guess_sequence("subjectA_FSE_kspace.mat") == "FSE"
    assert guess_sequence("/x/subjectA_FLAIR_kspace.mat") == "FLAIR"
    assert guess_sequence("gre.mat") == "GRE"
    assert guess_sequence("scan.mat") == "UNKNOWN"


# ---------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        convert_lowfield_mat(tmp_path / "absent.mat", tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def test_not_a_mat_file(tmp_path):
    src = tmp_path / "notes.mat"
    src.write_text("this is not a MATLAB file\n" * 20)
    with pytest.raises(ConversionError, match="not a readable MATLAB"):
        load_kspace(src)
    empty = tmp_path / "empty.mat"
    empty.write_bytes(b"")
    with pytest.raises(ConversionError):
        load_kspace(empty)
    with pytest.raises(ConversionError):
        load_kspace(tmp_path)  # a directory


def test_missing_variable(tmp_path):
    src = tmp_path / "other.mat"
    scipy.io.savemat(src, {"data": np.zeros((4, 4, 2), dtype=complex), "meta": np.ones(3)})
    with pytest.raises(ConversionError, match=r"no variable 'kspace'.*data.*meta"):
        load_kspace(src)
    assert load_kspace(src, variable="data").shape == (4, 4, 2)


@pytest.mark.parametrize("shape", [(16,), (2, 3, 4, 5)])
def test_wrong_dimensionality(tmp_path, shape):
    src = tmp_path / "bad.mat"
    scipy.io.savemat(src, {"kspace": np.ones(shape, dtype=complex)})
    with pytest.raises(ConversionError, match="must be"):
        load_kspace(src)


def test_non_numeric_variable(tmp_path):
    src = tmp_path / "text.mat"
    scipy.io.savemat(src, {"kspace": "hello"})
    with pytest.raises(ConversionError):
        load_kspace(src)


def test_cli_convert_errors(tmp_path):
    from adacsc.commands import convert

    parser = argparse.ArgumentParser()
    convert.add_parser(parser.add_subparsers())
    args = parser.parse_args(["convert", str(tmp_path / "absent.mat"), "-o", str(tmp_path / "o.h5")])
    assert args.func(args) == 2
    src = tmp_path / "other.mat"
    scipy.io.savemat(src, {"data": np.zeros((4, 4))})
    args = parser.parse_args(["convert", str(src), "-o", str(tmp_path / "o.h5")])
    assert args.func(args) == 2


# ---------------------------------------------------------------- the real 0.055 T data


@needs_data
@pytest.mark.parametrize("seq", SEQUENCES)
def test_real_data_reproduces_images(tmp_path, seq):
    src = DATA / f"subjectA_{seq}_kspace.mat"
    k = scipy.io.loadmat(src)["kspace"]
    result = convert_lowfield_mat(src, tmp_path / f"{seq}.h5")
    assert result.sequence == seq
    header, acqs = read_scan(result.path)
    check_structure(header, acqs, k.shape)
    assert header.measurementInformation.protocolName.endswith(seq)
    back = kspace_from_acquisitions(header, acqs)
    for s in range(k.shape[2]):
        ref = image(k[:, :, s])
        got = image(back[:, :, s].astype(np.complex128))
        assert np.max(np.abs(got - ref)) <= 1e-6 * np.max(np.abs(ref))


@needs_data
def test_cli_convert_real(tmp_path):
    from adacsc.commands import convert

    parser = argparse.ArgumentParser()
    convert.add_parser(parser.add_subparsers())
    out = tmp_path / "fse.h5"
    args = parser.parse_args(["convert", str(DATA / "subjectA_FSE_kspace.mat"), "-o", str(out),
                              "--sequence", "T2FSE", "--fov-mm", "250", "240"])
    assert args.func(args) == 0
    header, _ = read_scan(out)
    assert header.measurementInformation.protocolName == "lowfield_0055T_T2FSE"
    assert header.encoding[0].reconSpace.fieldOfView_mm.x == pytest.approx(250.0)
    assert header.encoding[0].reconSpace.fieldOfView_mm.y == pytest.approx(240.0)


@pytest.mark.parametrize("seq", SEQUENCES)
def test_committed_fixtures(seq):
    path = SCANS / f"lowfield_0055T_{seq}.h5"
    assert path.is_file() and path.stat().st_size < 1.5e6
    header, acqs = read_scan(path)
    n_samples = 196 if seq == "GRE" else 126
    check_structure(header, acqs, (128, n_samples, 4))
    assert all(a.data.dtype == np.complex64 for a in acqs[:3])
    if DATA is not None:
        k = scipy.io.loadmat(DATA / f"subjectA_{seq}_kspace.mat")["kspace"]
        assert np.array_equal(kspace_from_acquisitions(header, acqs), k.astype(np.complex64))
