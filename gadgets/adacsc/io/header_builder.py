"""Building ISMRMRD headers and writing raw-data files, the way a scanner would stream them.

Shared by the low-field simulator (`adacsc.simulation.scanner`) and the converter of the 0.055 T
.mat k-space (`adacsc.conversion.lowfield_mat`):

- `build_header(...)` returns an `ismrmrd.xsd.ismrmrdHeader` (the strict xsdata classes, so what we
  write is what Gadgetron's own parser accepts); `header_to_xml` serialises it.
- `cartesian_readout(...)` returns one `ismrmrd.Acquisition` with the header fields a Cartesian 2-D
  multi-slice readout carries (idx, flags, geometry, dwell time, counters).
- `cartesian_flags(line, n_lines, ...)` gives the loop flags of one readout (first/last in encode
  step 1, slice, repetition, measurement), following the ISMRMRD reference tools.
- `write_ismrmrd(path, header, acquisitions)` writes a standard ISMRMRD HDF5 file (group "dataset":
  `xml` and `data`, the exact layout `ismrmrd.Dataset` reads and appends to) in one go.

Geometry convention: axial slices, readout along the patient x axis (read_dir (1,0,0)), phase
encoding along y (phase_dir (0,1,0)), slices stacked along z (slice_dir (0,0,1)); positions in mm.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import h5py
import ismrmrd
import ismrmrd.xsd as xsd
import numpy as np
from ismrmrd.hdf5 import acquisition_dtype, acquisition_header_dtype

#: Proton gyromagnetic ratio over 2 pi, Hz/T (CODATA 2018: 42.577 478 518 MHz/T).
GAMMA_BAR_HZ_PER_T = 42.577478e6

#: Gadgetron's default relative receiver noise bandwidth (used when a header lacks it).
DEFAULT_RELATIVE_NOISE_BANDWIDTH = 0.793

READ_DIR = (1.0, 0.0, 0.0)
PHASE_DIR = (0.0, 1.0, 0.0)
SLICE_DIR = (0.0, 0.0, 1.0)

#: Siemens-style acquisition time stamps count 2.5 ms ticks.
TIME_STAMP_TICK_MS = 2.5


def h1_frequency_hz(field_T: float) -> int:
    """Proton Larmor frequency in Hz (integer, as the ISMRMRD schema requires) at `field_T` tesla."""
    if not field_T > 0:
        raise ValueError(f"field strength must be positive, got {field_T!r} T")
    return int(round(GAMMA_BAR_HZ_PER_T * field_T))


def measurement_uid(measurement_id: str) -> int:
    """A stable uint32 `measurement_uid` for the acquisition headers, derived from the measurementID."""
    return zlib.crc32(measurement_id.encode("utf-8")) & 0xFFFFFFFF


def _limit(maximum: int, center: int = 0) -> xsd.limitType:
    return xsd.limitType(minimum=0, maximum=int(maximum), center=int(center))


def _space(matrix: Sequence[int], fov_mm: Sequence[float]) -> xsd.encodingSpaceType:
    if len(matrix) != 3 or len(fov_mm) != 3:
        raise ValueError("matrix and field of view need three entries (x, y, z)")
    if min(matrix) < 1 or min(fov_mm) <= 0:
        raise ValueError(f"invalid encoding space: matrix {tuple(matrix)}, fov {tuple(fov_mm)} mm")
    return xsd.encodingSpaceType(
        matrixSize=xsd.matrixSizeType(x=int(matrix[0]), y=int(matrix[1]), z=int(matrix[2])),
        fieldOfView_mm=xsd.fieldOfViewMm(x=float(fov_mm[0]), y=float(fov_mm[1]), z=float(fov_mm[2])),
    )


def build_header(
    *,
    field_T: float,
    coil_names: Sequence[str],
    encoded_matrix: Sequence[int],
    encoded_fov_mm: Sequence[float],
    recon_matrix: Sequence[int],
    recon_fov_mm: Sequence[float],
    n_lines: int,
    n_slices: int,
    measurement_id: str,
    n_repetitions: int = 1,
    n_partitions: int = 1,
    n_averages: int = 1,
    n_contrasts: int = 1,
    noise_dependency_id: str | None = None,
    relative_noise_bandwidth: float | None = DEFAULT_RELATIVE_NOISE_BANDWIDTH,
    system_vendor: str | None = None,
    system_model: str | None = None,
    institution_name: str | None = None,
    device_serial: str | None = None,
    protocol_name: str | None = None,
    sequence_type: str | None = None,
    series_description: str | None = None,
    tr_ms: float | None = None,
    te_ms: float | None = None,
    ti_ms: float | None = None,
    flip_angle_deg: float | None = None,
    patient_position: str = "HFS",
    user_strings: Mapping[str, str] | None = None,
    user_longs: Mapping[str, int] | None = None,
    user_doubles: Mapping[str, float] | None = None,
) -> xsd.ismrmrdHeader:
    """An ISMRMRD header for a 2-D Cartesian multi-slice scan.

    `encoded_matrix`/`encoded_fov_mm` describe the acquired grid (x = readout samples including any
    oversampling), `recon_matrix`/`recon_fov_mm` the image grid. `n_lines` phase-encoding lines
    (kspace_encoding_step_1 0..n_lines-1, centre n_lines // 2), `n_slices` slices, `n_repetitions`
    repetitions; a 3-D scan has `n_partitions` along kspace_encoding_step_2 (centre n_partitions // 2,
    encoded_matrix z the same), `n_averages` averages and `n_contrasts` contrasts. Coils are labelled `coilNumber` 0..C-1 with `coil_names`. `noise_dependency_id`
    declares a separate noise scan (measurementDependency of type "Noise").
    """
    if not coil_names:
        raise ValueError("at least one coil is needed")
    if min(n_lines, n_slices, n_repetitions, n_partitions, n_averages, n_contrasts) < 1:
        raise ValueError("n_lines, n_slices, n_repetitions, n_partitions, n_averages and n_contrasts must be >= 1")
    if not measurement_id:
        raise ValueError("a measurementID is required")

    limits = xsd.encodingLimitsType(
        kspace_encoding_step_0=_limit(int(encoded_matrix[0]) - 1, int(encoded_matrix[0]) // 2),
        kspace_encoding_step_1=_limit(n_lines - 1, n_lines // 2),
        kspace_encoding_step_2=_limit(n_partitions - 1, n_partitions // 2),
        average=_limit(n_averages - 1),
        slice=_limit(n_slices - 1),
        contrast=_limit(n_contrasts - 1),
        phase=_limit(0),
        repetition=_limit(n_repetitions - 1),
        set=_limit(0),
        segment=_limit(0),
    )
    encoding = xsd.encodingType(
        encodedSpace=_space(encoded_matrix, encoded_fov_mm),
        reconSpace=_space(recon_matrix, recon_fov_mm),
        encodingLimits=limits,
        trajectory=xsd.trajectoryType.CARTESIAN,
    )

    dependencies = []
    if noise_dependency_id:
        dependencies.append(
            xsd.measurementDependencyType(dependencyType="Noise", measurementID=noise_dependency_id)
        )
    measurement = xsd.measurementInformationType(
        measurementID=measurement_id,
        patientPosition=xsd.patientPositionType(patient_position),
        protocolName=protocol_name,
        seriesDescription=series_description,
        measurementDependency=dependencies,
    )

    system = xsd.acquisitionSystemInformationType(
        systemVendor=system_vendor,
        systemModel=system_model,
        systemFieldStrength_T=float(field_T),
        relativeReceiverNoiseBandwidth=(
            None if relative_noise_bandwidth is None else float(relative_noise_bandwidth)
        ),
        receiverChannels=len(coil_names),
        coilLabel=[xsd.coilLabelType(coilNumber=i, coilName=str(n)) for i, n in enumerate(coil_names)],
        institutionName=institution_name,
        deviceSerialNumber=device_serial,
    )

    sequence = None
    if any(v is not None for v in (sequence_type, tr_ms, te_ms, ti_ms, flip_angle_deg)):
        sequence = xsd.sequenceParametersType(
            TR=[float(tr_ms)] if tr_ms is not None else [],
            TE=[float(te_ms)] if te_ms is not None else [],
            TI=[float(ti_ms)] if ti_ms is not None else [],
            flipAngle_deg=[float(flip_angle_deg)] if flip_angle_deg is not None else [],
            sequence_type=sequence_type,
        )

    user = None
    if user_strings or user_longs or user_doubles:
        user = xsd.userParametersType(
            userParameterString=[
                xsd.userParameterStringType(name=k, value=str(v)) for k, v in (user_strings or {}).items()
            ],
            userParameterLong=[
                xsd.userParameterLongType(name=k, value=int(v)) for k, v in (user_longs or {}).items()
            ],
            userParameterDouble=[
                xsd.userParameterDoubleType(name=k, value=float(v)) for k, v in (user_doubles or {}).items()
            ],
        )

    return xsd.ismrmrdHeader(
        version=1,
        measurementInformation=measurement,
        acquisitionSystemInformation=system,
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=h1_frequency_hz(field_T)),
        encoding=[encoding],
        sequenceParameters=sequence,
        userParameters=user,
    )


def header_to_xml(header: xsd.ismrmrdHeader) -> str:
    """Serialise a header; the result parses back with `ismrmrd.xsd.CreateFromDocument`."""
    return xsd.ToXML(header)


def slice_positions_mm(n_slices: int, spacing_mm: float) -> np.ndarray:
    """Slice centre offsets along slice_dir, centred on isocentre: (s - (S-1)/2) * spacing."""
    return (np.arange(n_slices) - (n_slices - 1) / 2.0) * float(spacing_mm)


def cartesian_flags(
    line_index: int,
    n_lines: int,
    *,
    last_in_measurement: bool = False,
) -> list[int]:
    """Loop flags of the `line_index`-th readout (in acquisition order) of one slice of `n_lines`.

    The first readout of a slice is FIRST_IN_ENCODE_STEP1 / FIRST_IN_SLICE / FIRST_IN_REPETITION,
    the last one LAST_IN_ENCODE_STEP1 / LAST_IN_SLICE / LAST_IN_REPETITION (as the ISMRMRD
    reference tools do); `last_in_measurement` adds ACQ_LAST_IN_MEASUREMENT.
    """
    flags = []
    if line_index == 0:
        flags += [ismrmrd.ACQ_FIRST_IN_ENCODE_STEP1, ismrmrd.ACQ_FIRST_IN_SLICE, ismrmrd.ACQ_FIRST_IN_REPETITION]
    if line_index == n_lines - 1:
        flags += [ismrmrd.ACQ_LAST_IN_ENCODE_STEP1, ismrmrd.ACQ_LAST_IN_SLICE, ismrmrd.ACQ_LAST_IN_REPETITION]
    if last_in_measurement:
        flags.append(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    return flags


def cartesian_readout(
    data: np.ndarray,
    *,
    line: int = 0,
    slice_index: int = 0,
    repetition: int = 0,
    partition: int = 0,
    average: int = 0,
    contrast: int = 0,
    center_sample: int | None = None,
    sample_time_us: float,
    flags: Iterable[int] = (),
    scan_counter: int = 0,
    time_stamp: int = 0,
    measurement_uid: int = 0,
    position_mm: Sequence[float] = (0.0, 0.0, 0.0),
    read_dir: Sequence[float] = READ_DIR,
    phase_dir: Sequence[float] = PHASE_DIR,
    slice_dir: Sequence[float] = SLICE_DIR,
) -> ismrmrd.Acquisition:
    """One readout: `data` [channels, samples] complex64 with a complete Cartesian header.

    All channels are active (channel_mask set); no trajectory; discard_pre/post 0;
    `center_sample` defaults to samples // 2 (the k-space centre of a centred FFT grid).
    """
    data = np.ascontiguousarray(data, dtype=np.complex64)
    if data.ndim != 2:
        raise ValueError(f"readout data must be [channels, samples], got shape {data.shape}")
    n_channels, n_samples = data.shape
    acq = ismrmrd.Acquisition.from_array(data)
    acq.version = 1
    acq.available_channels = n_channels
    acq.center_sample = n_samples // 2 if center_sample is None else int(center_sample)
    acq.discard_pre = 0
    acq.discard_post = 0
    acq.sample_time_us = float(sample_time_us)
    acq.scan_counter = int(scan_counter)
    acq.acquisition_time_stamp = int(time_stamp) & 0xFFFFFFFF
    acq.measurement_uid = int(measurement_uid) & 0xFFFFFFFF
    acq.idx.kspace_encode_step_1 = int(line)
    acq.idx.slice = int(slice_index)
    acq.idx.repetition = int(repetition)
    acq.idx.kspace_encode_step_2 = int(partition)
    acq.idx.average = int(average)
    acq.idx.contrast = int(contrast)
    for i in range(3):
        acq.position[i] = float(position_mm[i])
        acq.read_dir[i] = float(read_dir[i])
        acq.phase_dir[i] = float(phase_dir[i])
        acq.slice_dir[i] = float(slice_dir[i])
    for c in range(n_channels):
        word, bit = divmod(c, 64)
        acq.channel_mask[word] |= 1 << bit
    for flag in flags:
        acq.set_flag(flag)
    return acq


def with_channels(acquisition: ismrmrd.Acquisition, data: np.ndarray) -> ismrmrd.Acquisition:
    """A copy of `acquisition` (every header field, trajectory) holding `data` [CHA', samples],
    channels 0..CHA'-1 active: for readouts that gain or lose channels (EMI sensing coils)."""
    head = acquisition.getHead()
    head.active_channels = head.available_channels = data.shape[0]
    head.number_of_samples = data.shape[1]
    for word in range(len(head.channel_mask)):
        head.channel_mask[word] = 0
    for channel in range(data.shape[0]):
        head.channel_mask[channel // 64] |= 1 << (channel % 64)
    copy = ismrmrd.Acquisition(head)
    copy.data[:] = data
    copy.traj[:] = acquisition.traj
    return copy


def write_ismrmrd(
    path: str | os.PathLike,
    header: xsd.ismrmrdHeader | str,
    acquisitions: Sequence[ismrmrd.Acquisition],
    *,
    group: str = "dataset",
    overwrite: bool = True,
) -> Path:
    """Write a standard ISMRMRD file: `/<group>/xml` and `/<group>/data` (one bulk write).

    The layout (dtypes, a resizable `data` dataset) is the one `ismrmrd.Dataset` writes, so the
    file opens with `ismrmrd.Dataset(path, group, create_if_needed=False)`, gadgetron_ismrmrd_client
    and can be appended to. Parent folders are created. Returns the path.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (refusing to overwrite)")
    path.parent.mkdir(parents=True, exist_ok=True)
    xml = header if isinstance(header, str) else header_to_xml(header)

    records = np.empty(len(acquisitions), dtype=acquisition_dtype)
    for i, acq in enumerate(acquisitions):
        records[i]["head"] = np.frombuffer(acq.getHead(), dtype=acquisition_header_dtype)
        records[i]["data"] = acq.data.view(np.float32).reshape(-1)
        records[i]["traj"] = acq.traj.astype(np.float32).reshape(-1)

    with h5py.File(path, "w") as f:
        g = f.create_group(group)
        xml_ds = g.create_dataset(
            "xml", shape=(1,), dtype=h5py.special_dtype(vlen=bytes), track_times=False
        )
        xml_ds[0] = xml.encode("utf-8")
        if len(records):
            g.create_dataset(
                "data", data=records, maxshape=(None,), chunks=(min(len(records), 256),),
                track_times=False,
            )
    return path
