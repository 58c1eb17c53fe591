"""Converter of the public 0.055 T brain k-space (.mat) to ISMRMRD raw data files.

Source data: Liu et al., "A low-cost and shielding-free ultra-low-field brain MRI scanner",
Nat Commun 12, 7238 (2021), CC0 1.0. Each file holds one variable `kspace` with axes
(k-space line, sample, slice), centred k-space (`fftshift(ifft2(ifftshift(k[:, :, s])))` is the
image), single receive channel, after EMI removal; complex128.

What the converter writes
-------------------------
- Readout = the 'sample' axis (axis 1), phase encoding = the 'line' axis (axis 0): one
  Acquisition per line per slice, `data` [1, samples] complex64, `idx.kspace_encode_step_1` =
  line, `idx.slice`, center_sample = samples // 2, flags as the simulator's (FIRST/LAST in encode
  step 1 / slice / repetition, ACQ_LAST_IN_MEASUREMENT on the very last), slices stacked along
  slice_dir. Values are copied unchanged (complex128 -> complex64), so the image of slice s is
  again `fftshift(ifft2(ifftshift(K_s)))` with K_s[line, sample].
- Header: 0.055 T, H1 frequency 2.342 MHz (42.577478 MHz/T * 0.055 T), one coil (label
  "LF_HEAD_RX"), relativeReceiverNoiseBandwidth 0.793, a measurementID derived from the file
  name and content, encodedSpace == reconSpace (samples x lines x 1: no readout oversampling in
  this data), encodingLimits, Cartesian trajectory, protocol/sequence name.
- No noise readouts: the release contains none (the EMI-removed single channel only). A chain
  with NoiseAdjust must warn and pass the data through unwhitened.

Assumed (not in the .mat files, documented defaults, all overridable): in-plane field of view
280 mm x 280 mm (readout x phase; from the matrix and an adult head: ~2.2 mm pixels for the
126-sample scans; the 196-sample GRE shares the readout field of view, as its images show), slice
thickness and spacing 8 mm, readout dwell time 40 us, time stamps one 2.5 ms tick per readout.
"""

from __future__ import annotations

import logging
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adacsc.io import header_builder as hb

log = logging.getLogger(__name__)

FIELD_T = 0.055
DEFAULT_FOV_MM = (280.0, 280.0)  # (readout, phase)
DEFAULT_SLICE_THICKNESS_MM = 8.0
DEFAULT_DWELL_US = 40.0
COIL_NAME = "LF_HEAD_RX"
SYSTEM_MODEL = "0.055 T SmCo permanent-magnet head scanner (Liu et al., Nat Commun 2021)"

#: Known sequences of the public release: description and sequence type for the header.
SEQUENCES = {
    "FSE": ("T2-weighted fast spin echo", "FSE"),
    "GRE": ("T1-weighted gradient echo", "GRE"),
    "FLAIR": ("FLAIR-like inversion-recovery fast spin echo", "FLAIR"),
    "DWI": ("diffusion-weighted imaging", "DWI"),
}


class ConversionError(ValueError):
    """The input cannot be converted (not a .mat file, no k-space variable, wrong shape)."""


@dataclass
class ConversionResult:
    path: Path
    sequence: str
    shape: tuple[int, int, int]  # (lines, samples, slices)
    measurement_id: str
    n_acquisitions: int


def guess_sequence(path: str | os.PathLike) -> str:
    """FSE / GRE / FLAIR / DWI from the file name (e.g. subjectA_FSE_kspace.mat), else UNKNOWN."""
    tokens = re.split(r"[^A-Za-z0-9]+", Path(path).stem.upper())
    for name in ("FLAIR", "FSE", "GRE", "DWI"):
        if name in tokens:
            return name
    return "UNKNOWN"


def _load_v73(path: Path, variable: str) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        if variable not in f:
            names = sorted(k for k in f.keys() if not k.startswith("#"))
            raise ConversionError(
                f"{path}: no variable {variable!r} (variables: {', '.join(names) or 'none'})"
            )
        raw = f[variable][()]
    if raw.dtype.names and {"real", "imag"} <= set(raw.dtype.names):
        raw = raw["real"] + 1j * raw["imag"]
    return np.asarray(raw).transpose()  # MATLAB is column-major


def load_kspace(path: str | os.PathLike, variable: str = "kspace") -> np.ndarray:
    """The k-space array of a .mat file as complex128 (lines, samples, slices).

    A 2-D array is taken as one slice (MATLAB drops a trailing singleton slice axis). Raises FileNotFoundError for a missing file and
    ConversionError for a file that is not a MATLAB .mat file, lacks `variable`, or holds an
    array that is not numeric, empty, or not 2-D/3-D.
    """
    import scipy.io

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if not path.is_file():
        raise ConversionError(f"{path} is not a file")
    try:
        contents = scipy.io.loadmat(str(path), variable_names=None)
    except NotImplementedError:  # MATLAB v7.3 files are HDF5
        try:
            data = _load_v73(path, variable)
        except ConversionError:
            raise
        except Exception as exc:
            raise ConversionError(f"{path}: cannot read MATLAB v7.3 file ({exc})") from exc
    except Exception as exc:  # scipy raises ValueError/TypeError/... for non-.mat input
        raise ConversionError(f"{path} is not a readable MATLAB .mat file ({exc})") from exc
    else:
        if variable not in contents:
            names = sorted(k for k in contents if not k.startswith("__"))
            raise ConversionError(
                f"{path}: no variable {variable!r} (variables: {', '.join(names) or 'none'})"
            )
        data = contents[variable]

    data = np.asarray(data)
    if data.dtype.kind not in "fciu" or data.dtype.names:
        raise ConversionError(f"{path}: {variable!r} is not a numeric array (dtype {data.dtype})")
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise ConversionError(
            f"{path}: {variable!r} must be (line, sample, slice) or (line, sample), got shape {data.shape}"
        )
    if min(data.shape) < 1:
        raise ConversionError(f"{path}: {variable!r} is empty (shape {data.shape})")
    if min(data.shape[:2]) < 2:
        raise ConversionError(
            f"{path}: {variable!r} must be (line, sample, slice) with at least 2 lines and 2 samples, "
            f"got shape {data.shape} (a vector?)"
        )
    if max(data.shape[:2]) > 32767:
        raise ConversionError(f"{path}: {variable!r} too large for ISMRMRD counters ({data.shape})")
    if data.dtype.kind != "c":
        log.warning("%s: %r is real-valued; converting to complex", path, variable)
    return data.astype(np.complex128)


def kspace_to_acquisitions(
    kspace: np.ndarray,
    *,
    dwell_us: float,
    slice_spacing_mm: float,
    uid: int,
):
    """Acquisitions for k-space (lines, samples, slices): slice by slice, line by line."""
    n_lines, n_samples, n_slices = kspace.shape
    positions = hb.slice_positions_mm(n_slices, slice_spacing_mm)
    acqs = []
    counter = 1
    for s in range(n_slices):
        for line in range(n_lines):
            last = s == n_slices - 1 and line == n_lines - 1
            acqs.append(
                hb.cartesian_readout(
                    kspace[line, :, s][None, :],
                    line=line,
                    slice_index=s,
                    center_sample=n_samples // 2,
                    sample_time_us=dwell_us,
                    flags=hb.cartesian_flags(line, n_lines, last_in_measurement=last),
                    scan_counter=counter,
                    time_stamp=counter,
                    measurement_uid=uid,
                    position_mm=(0.0, 0.0, float(positions[s])),
                )
            )
            counter += 1
    return acqs


def convert_lowfield_mat(
    mat_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    sequence: str | None = None,
    variable: str = "kspace",
    fov_mm: tuple[float, float] = DEFAULT_FOV_MM,
    slice_thickness_mm: float = DEFAULT_SLICE_THICKNESS_MM,
    dwell_us: float = DEFAULT_DWELL_US,
) -> ConversionResult:
    """Convert one .mat k-space file to an ISMRMRD file at `out_path` (overwritten)."""
    mat_path = Path(mat_path)
    kspace = load_kspace(mat_path, variable)
    n_lines, n_samples, n_slices = kspace.shape
    seq = (sequence or guess_sequence(mat_path)).upper()
    description, seq_type = SEQUENCES.get(seq, (f"{seq} (0.055 T)", seq))
    if min(fov_mm) <= 0 or slice_thickness_mm <= 0 or dwell_us <= 0:
        raise ConversionError("field of view, slice thickness and dwell time must be positive")

    data64 = np.ascontiguousarray(kspace.astype(np.complex64))
    crc = zlib.crc32(data64.tobytes())
    stem = re.sub(r"[^A-Za-z0-9]+", "", mat_path.stem) or "scan"
    measurement_id = f"LF0055T_{stem}_{crc % 100000:05d}_1"
    fov = (float(fov_mm[0]), float(fov_mm[1]), float(slice_thickness_mm))
    header = hb.build_header(
        field_T=FIELD_T,
        coil_names=[COIL_NAME],
        encoded_matrix=(n_samples, n_lines, 1),
        encoded_fov_mm=fov,
        recon_matrix=(n_samples, n_lines, 1),
        recon_fov_mm=fov,
        n_lines=n_lines,
        n_slices=n_slices,
        measurement_id=measurement_id,
        relative_noise_bandwidth=hb.DEFAULT_RELATIVE_NOISE_BANDWIDTH,
        system_model=SYSTEM_MODEL,
        protocol_name=f"lowfield_0055T_{seq}",
        series_description=description,
        sequence_type=seq_type,
        user_strings={
            "source_file": mat_path.name,
            "source": "Liu et al., Nat Commun 2021 (CC0 1.0)",
            "noise_readouts": "none",
        },
    )
    acqs = kspace_to_acquisitions(
        data64, dwell_us=dwell_us, slice_spacing_mm=slice_thickness_mm,
        uid=hb.measurement_uid(measurement_id),
    )
    out = hb.write_ismrmrd(out_path, header, acqs)
    log.info(
        "converted %s -> %s: %s, %d lines x %d samples x %d slices, measurementID %s "
        "(no noise readouts in this data)",
        mat_path, out, seq, n_lines, n_samples, n_slices, measurement_id,
    )
    return ConversionResult(
        path=out, sequence=seq, shape=(n_lines, n_samples, n_slices),
        measurement_id=measurement_id, n_acquisitions=len(acqs),
    )
