"""The low-field scanner simulator: writes an ISMRMRD file as a scanner would stream it.

What is written (`simulate_scan`)
---------------------------------
- Header (io.header_builder): field strength (default 0.055 T), H1 frequency 42.577478 MHz/T * B0,
  C receiver channels with coil labels, relativeReceiverNoiseBandwidth (0.793), a unique
  measurementID derived from the seed and the configuration, encodedSpace 2N x N x 1 over
  2 fov x fov x slice thickness (2x readout oversampling), reconSpace N x N x 1 over
  fov x fov x thickness, encodingLimits (kspace_encoding_step_1 0..N-1 centre N/2, slice,
  repetition), Cartesian trajectory.
- `noise_readouts` noise-only readouts first (ACQ_IS_NOISE_MEASUREMENT, dwell `noise_dwell_us`),
  unless `noise_file` is given: then they go to a separate noise scan with its own measurementID,
  and the imaging scan declares it as measurementDependency of type "Noise".
- Then, slice by slice, N Cartesian readouts (line 0..N-1) of 2N samples (center_sample N,
  dwell `acq_dwell_us`), idx.kspace_encode_step_1 / slice / repetition, the loop flags of
  `header_builder.cartesian_flags` (FIRST/LAST_IN_ENCODE_STEP1, _SLICE, _REPETITION; the very last
  readout ACQ_LAST_IN_MEASUREMENT), geometry per slice (slices stacked along slice_dir,
  `slice_spacing_mm` apart, centred on the isocentre), scan_counter from 1, time stamps in 2.5 ms
  ticks (one TR per readout), measurement_uid.
- Ground truth beside the ISMRMRD data (simulation.ground_truth): [K, Y, X] with K = contrasts x
  slices x partitions (contrast outermost).

Protocol options (all off by default; a scan with extras has exactly the imaging samples of the
same scan without them, since extras draw from their own random stream)
------------------------------------------------------------------------------------------------
- `averages` A: each line acquired A times with independent noise (idx.average, encodingLimits
  average 0..A-1); `average_loop` "inner" acquires each line's averages in a row, "outer" the whole
  slice once per average (each pass ends with ACQ_LAST_IN_SLICE). Both orders hold the same samples.
- `contrasts` C: C echoes per line, interleaved (idx.contrast); contrast k images x |x|^k.
- `partitions` P > 1: 3-D, each slice a slab of P partitions of slice_thickness_mm along slice_dir
  (encoded z = P, kspace_encode_step_2 0..P-1 centre P/2), k-space by a 3-D FFT.
- Extra readouts that would spoil an image if used (the centre line with a random amplitude and
  phase): `dummy_scans` at the start (ACQ_IS_DUMMYSCAN_DATA), `navigators` and `phase_correction`
  (ACQ_IS_NAVIGATION_DATA, ACQ_IS_PHASECORR_DATA, every second one reversed) at the start of each
  slice pass, `feedback` RT/HP feedback readouts (alternating) before each centre line;
  `calibration_lines` central lines flagged ACQ_IS_PARALLEL_CALIBRATION with their own noise.
- `reverse`: every second readout is stored reversed and flagged ACQ_IS_REVERSE.

Signal model
------------
Object x [S, N, N] (max |x| = 1 per slice, smooth phase), coil maps s [S, C, N, N] (max RSS 1).
The object occupies the central N columns of a 2N-wide readout field of view: the coil image
s_c x is zero-padded to [N, 2N] (columns N/2 .. 3N/2 - 1) and k = fftc(.) with the orthonormal,
centred FFT of adacsc.mr.fft. Imaging noise: per-sample covariance C = sigma^2 R (simulation.noise),
independent across samples, so after whitening with C, oversampling removal (ifft along the
readout, keep the central N, fft back; all orthonormal) and the image FFT, the noise is white
with unit variance per pixel, and the optimal combination has magnitude |x| sqrt(s^H C^-1 s).
Noise readouts are drawn with C_n = C * 2 * acq_dwell * relBW / noise_dwell so that Gadgetron's
NoiseAdjust rule gives exactly that whitening (derivation: simulation.noise docstring).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import ismrmrd
import numpy as np

from adacsc.io import header_builder as hb
from adacsc.mr.fft import fftc
from adacsc.simulation.coils import coil_names, coil_sensitivities
from adacsc.simulation.emi import EMIConfig, Interference, config_json, sensing_names, write_emi_truth
from adacsc.simulation.ground_truth import GroundTruth, write_ground_truth
from adacsc.simulation.noise import (
    bandwidth_scale_squared,
    correlated_noise,
    imaging_covariance,
    noise_readout_covariance,
)
from adacsc.simulation.objects import object_slices, resolve_object_kind

log = logging.getLogger(__name__)

DEVICE_SERIAL = "ADACSIM"
SYSTEM_VENDOR = "adacsc"
SYSTEM_MODEL = "adacsc low-field scanner simulator"
#: Largest distance (mm) between the first and last slice centre; more slices are packed closer.
MAX_STACK_EXTENT_MM = 100.0
#: Acquisition start, in 2.5 ms ticks since midnight (10:00:00).
START_TICKS = int(10 * 3600 * 1000 / hb.TIME_STAMP_TICK_MS)


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that determines a simulated scan (same config + seed -> identical file)."""

    matrix: int = 128
    coils: int = 8
    slices: int = 4
    field_T: float = 0.055
    noise: float = 0.02  # per-sample noise std of the imaging readouts, image max |x| = 1
    seed: int = 0
    object: str | None = None  # "brain", "phantom" or None (brain when available)
    fov_mm: float = 240.0
    slice_thickness_mm: float = 5.0
    slice_spacing_mm: float = 6.0
    noise_readouts: int = 64
    acq_dwell_us: float = 20.0  # per (oversampled) readout sample
    noise_dwell_us: float = 5.0
    relative_noise_bandwidth: float = hb.DEFAULT_RELATIVE_NOISE_BANDWIDTH
    tr_ms: float = 500.0
    te_ms: float = 20.0
    # protocol options (docs in the module docstring, "Protocol options")
    averages: int = 1
    average_loop: str = "inner"  # "inner": each line's averages in a row; "outer": the whole slice again
    contrasts: int = 1
    partitions: int = 1  # > 1: 3-D, each slice is a slab of this many partitions along kz
    navigators: int = 0
    phase_correction: int = 0
    dummy_scans: int = 0
    feedback: int = 0
    calibration_lines: int = 0
    reverse: bool = False

    def validate(self) -> None:
        if self.matrix < 8 or self.matrix % 2:
            raise ValueError(f"matrix must be an even number >= 8, got {self.matrix}")
        if self.matrix > 32767:
            raise ValueError("matrix too large for the ISMRMRD sample counters")
        if self.coils < 1:
            raise ValueError(f"coils must be >= 1, got {self.coils}")
        if self.slices < 1:
            raise ValueError(f"slices must be >= 1, got {self.slices}")
        if not self.field_T > 0:
            raise ValueError(f"field strength must be > 0 T, got {self.field_T}")
        if not self.noise > 0:
            raise ValueError(f"noise sigma must be > 0, got {self.noise}")
        if self.noise_readouts < 1:
            raise ValueError("at least one noise readout is needed")
        if min(self.fov_mm, self.slice_thickness_mm, self.acq_dwell_us, self.noise_dwell_us) <= 0:
            raise ValueError("fov, slice thickness and dwell times must be positive")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if min(self.averages, self.contrasts, self.partitions) < 1:
            raise ValueError("averages, contrasts and partitions must be >= 1")
        if self.average_loop not in ("inner", "outer"):
            raise ValueError(f"average_loop must be inner or outer, got {self.average_loop!r}")
        if min(self.navigators, self.phase_correction, self.dummy_scans, self.feedback, self.calibration_lines) < 0:
            raise ValueError("counts of extra readouts must be >= 0")
        if self.calibration_lines > self.matrix:
            raise ValueError(f"calibration_lines {self.calibration_lines} exceed the matrix {self.matrix}")

    def protocol_fields(self) -> dict[str, object]:
        """The protocol options that differ from a plain 2-D single-average scan."""
        plain = SimulationConfig()
        return {name: getattr(self, name) for name in PROTOCOL_OPTIONS if getattr(self, name) != getattr(plain, name)}


PROTOCOL_OPTIONS = ("averages", "average_loop", "contrasts", "partitions", "navigators", "phase_correction",
                    "dummy_scans", "feedback", "calibration_lines", "reverse")
"""SimulationConfig fields beyond a plain 2-D scan (left out of the measurementID hash at their defaults)."""


@dataclass
class SimulationResult:
    path: Path
    noise_path: Path | None
    object_kind: str
    measurement_id: str
    noise_measurement_id: str | None
    slice_positions_mm: np.ndarray
    ground_truth: GroundTruth


def measurement_ids(config: SimulationConfig, object_kind: str, emi: EMIConfig | None = None) -> tuple[str, str]:
    """(noise scan, imaging scan) measurementIDs, Siemens style `DEVICE_seed_tag_number`.

    `tag` is a hash of the configuration (and the EMI, when there is any), so scans that differ in
    anything get different IDs while the same configuration always gets the same ones.
    """
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in PROTOCOL_OPTIONS}
    fields |= config.protocol_fields() | {"object": object_kind}
    if emi is not None:
        fields["emi"] = config_json(emi)
    tag = zlib.crc32(json.dumps(fields, sort_keys=True).encode()) % 100000
    prefix = f"{DEVICE_SERIAL}_{config.seed}_{tag:05d}"
    return f"{prefix}_1", f"{prefix}_2"


def stack_positions_mm(n_slices: int, spacing_mm: float) -> np.ndarray:
    """Slice centre offsets (mm) from the isocentre; spacing reduced when the stack would exceed
    MAX_STACK_EXTENT_MM (logged)."""
    if n_slices > 1 and (n_slices - 1) * spacing_mm > MAX_STACK_EXTENT_MM:
        new = MAX_STACK_EXTENT_MM / (n_slices - 1)
        log.warning("%d slices x %.1f mm exceed %.0f mm: slice spacing reduced to %.2f mm",
                    n_slices, spacing_mm, MAX_STACK_EXTENT_MM, new)
        spacing_mm = new
    return hb.slice_positions_mm(n_slices, spacing_mm)


def _header(config, *, measurement_id, noise_dependency_id, object_kind, noise_only=False, sensing=0):
    n, p = config.matrix, config.partitions
    return hb.build_header(
        field_T=config.field_T,
        coil_names=coil_names(config.coils) + sensing_names(sensing),
        encoded_matrix=(2 * n, n, p),
        encoded_fov_mm=(2 * config.fov_mm, config.fov_mm, p * config.slice_thickness_mm),
        recon_matrix=(n, n, p),
        recon_fov_mm=(config.fov_mm, config.fov_mm, p * config.slice_thickness_mm),
        n_lines=n,
        n_slices=config.slices,
        n_partitions=p,
        n_averages=config.averages,
        n_contrasts=config.contrasts,
        measurement_id=measurement_id,
        noise_dependency_id=noise_dependency_id,
        relative_noise_bandwidth=config.relative_noise_bandwidth,
        system_vendor=SYSTEM_VENDOR,
        system_model=SYSTEM_MODEL,
        device_serial=DEVICE_SERIAL,
        protocol_name="adacsc_noise" if noise_only else f"adacsc_sim_{object_kind}",
        series_description=("noise scan" if noise_only else f"simulated {object_kind}, {config.coils} coils"),
        sequence_type="noise" if noise_only else f"{'3D' if p > 1 else '2D'} Cartesian (simulated)",
        tr_ms=None if noise_only else config.tr_ms,
        te_ms=None if noise_only else config.te_ms,
        user_strings={"adacsc_object": object_kind},
        user_longs={"adacsc_seed": config.seed},
        user_doubles={"adacsc_noise_sigma": config.noise},
    )


def _noise_readouts(config, cov_noise, rng, *, uid, counter0, last_in_measurement, position):
    acqs = []
    n_samples = 2 * config.matrix
    noise = correlated_noise(cov_noise, (config.noise_readouts, n_samples), rng)  # [C, R, 2N]
    for r in range(config.noise_readouts):
        flags = [ismrmrd.ACQ_IS_NOISE_MEASUREMENT]
        if last_in_measurement and r == config.noise_readouts - 1:
            flags.append(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
        acqs.append(
            hb.cartesian_readout(
                noise[:, r, :],
                sample_time_us=config.noise_dwell_us,
                flags=flags,
                scan_counter=counter0 + r,
                time_stamp=START_TICKS + r,
                measurement_uid=uid,
                position_mm=position,
            )
        )
    return acqs


def contrast_images(images: np.ndarray, contrasts: int) -> np.ndarray:
    """[contrasts, ...] objects: contrast k is x |x|^k (max |x| stays 1), a darker weighting per echo."""
    return np.stack([images * np.abs(images) ** k for k in range(contrasts)]).astype(np.complex64)


def _extra(config: SimulationConfig, samples: np.ndarray, flag: int, count: int, rng: np.random.Generator,
           **fields: object) -> list[ismrmrd.Acquisition]:
    """`count` readouts flagged `flag` that would spoil an image if used: the centre line with a
    random phase and amplitude (navigators, phase correction, dummy scans, feedback)."""
    readouts = []
    for k in range(count):
        spoilt = samples * (0.5 + rng.random()) * np.exp(2j * np.pi * rng.random())
        flags = [flag] + ([ismrmrd.ACQ_IS_REVERSE] if flag == ismrmrd.ACQ_IS_PHASECORR_DATA and k % 2 else [])
        readouts.append(hb.cartesian_readout(spoilt, center_sample=config.matrix,
                                             sample_time_us=config.acq_dwell_us, flags=flags, **fields))
    return readouts


def _imaging_readouts(config: SimulationConfig, kspaces: dict, rng: np.random.Generator, *, uid: int,
                      positions: list) -> list[ismrmrd.Acquisition]:
    """Every readout after the noise, in the protocol's loop order (module docstring)."""
    n, parts = config.matrix, config.partitions
    tr_ticks = config.tr_ms / hb.TIME_STAMP_TICK_MS
    t0 = START_TICKS + config.noise_readouts + 10
    acqs: list[ismrmrd.Acquisition] = []

    def common(s: int) -> dict:
        return {"slice_index": s, "measurement_uid": uid, "position_mm": positions[s],
                "time_stamp": int(round(t0 + len(acqs) * tr_ticks))}

    centre = kspaces[0, 0, 0][:, parts // 2, n // 2, :]
    acqs += _extra(config, centre, ismrmrd.ACQ_IS_DUMMYSCAN_DATA, config.dummy_scans, rng, **common(0))
    passes = range(config.averages) if config.average_loop == "outer" else [None]
    per_pass = parts * n
    for outer in passes:
        for s in range(config.slices):
            centre = kspaces[s, 0, 0][:, parts // 2, n // 2, :]
            acqs += _extra(config, centre, ismrmrd.ACQ_IS_NAVIGATION_DATA, config.navigators, rng, **common(s))
            acqs += _extra(config, centre, ismrmrd.ACQ_IS_PHASECORR_DATA, config.phase_correction, rng,
                           line=n // 2, **common(s))
            if outer in (None, 0):
                acqs += _calibration(config, kspaces, s, rng, common)
            for step in range(per_pass):
                partition, line = divmod(step, n)
                if config.feedback and line == n // 2:
                    for k in range(config.feedback):
                        flag = ismrmrd.ACQ_IS_RTFEEDBACK_DATA if k % 2 == 0 else ismrmrd.ACQ_IS_HPFEEDBACK_DATA
                        acqs += _extra(config, centre, flag, 1, rng, **common(s))
                for average in (range(config.averages) if outer is None else [outer]):
                    for contrast in range(config.contrasts):
                        data = kspaces[s, contrast, average][:, partition, line, :]
                        flags = hb.cartesian_flags(step, per_pass)
                        if config.reverse and len(acqs) % 2:
                            data, flags = data[:, ::-1], flags + [ismrmrd.ACQ_IS_REVERSE]
                        acqs.append(hb.cartesian_readout(
                            data, line=line, partition=partition, average=average, contrast=contrast,
                            center_sample=n, sample_time_us=config.acq_dwell_us, flags=flags, **common(s)))
    return acqs


def _calibration(config: SimulationConfig, kspaces: dict, s: int, rng: np.random.Generator,
                 common) -> list[ismrmrd.Acquisition]:
    """`calibration_lines` central lines (centre partition) flagged ACQ_IS_PARALLEL_CALIBRATION,
    from the first contrast with their own noise."""
    n, parts = config.matrix, config.partitions
    low = n // 2 - config.calibration_lines // 2
    readouts = []
    for line in range(low, low + config.calibration_lines):
        data = kspaces[s, 0, 0][:, parts // 2, line, :] * (1 + 0.05 * rng.standard_normal())
        readouts.append(hb.cartesian_readout(
            data, line=line, partition=parts // 2, center_sample=n, sample_time_us=config.acq_dwell_us,
            flags=[ismrmrd.ACQ_IS_PARALLEL_CALIBRATION], **common(s)))
    return readouts


def simulate_scan(
    path: str | os.PathLike,
    config: SimulationConfig = SimulationConfig(),
    *,
    noise_file: str | os.PathLike | None = None,
    emi: EMIConfig | None = None,
) -> SimulationResult:
    """Simulate one multi-slice, multi-coil scan into `path` (and the noise scan into `noise_file`);
    with `emi`, sensing coils are appended to the receive coils and interference is added to every
    readout (simulation.emi), its ground truth stored beside the rest."""
    config.validate()
    n, c = config.matrix, config.coils
    kind = resolve_object_kind(config.object)

    seeds = np.random.SeedSequence(config.seed).spawn(6)
    rng_obj, rng_coil, rng_cov, rng_kspace, rng_noise, rng_extra = (np.random.default_rng(s) for s in seeds)

    z = stack_positions_mm(config.slices, config.slice_spacing_mm)
    parts = config.partitions
    z_all = (z[:, None] + (np.arange(parts) - parts // 2)[None] * config.slice_thickness_mm).reshape(-1)
    images, kind = object_slices(
        config.object, n, z_all, fov_mm=config.fov_mm, slice_thickness_mm=config.slice_thickness_mm, rng=rng_obj
    )
    maps = coil_sensitivities(n, c, z_all, fov_mm=config.fov_mm, rng=rng_coil)
    cov = imaging_covariance(c, config.noise, rng_cov)
    cov_noise = noise_readout_covariance(
        cov, config.acq_dwell_us, config.noise_dwell_us, config.relative_noise_bandwidth
    )

    noise_id, scan_id = measurement_ids(config, kind, emi)
    separate_noise = noise_file is not None
    uid = hb.measurement_uid(scan_id)
    positions = [(0.0, 0.0, float(zs)) for zs in z]

    acqs = []
    if not separate_noise:
        acqs += _noise_readouts(config, cov_noise, rng_noise, uid=uid, counter0=1,
                                last_in_measurement=False, position=positions[0])

    objects = contrast_images(images, config.contrasts)  # [contrasts, S * P, N, N]
    kspaces = {}
    for s in range(config.slices):
        for contrast in range(config.contrasts):
            padded = np.zeros((c, parts, n, 2 * n), dtype=np.complex64)
            volume = slice(s * parts, (s + 1) * parts)
            padded[..., n // 2: n // 2 + n] = np.moveaxis(maps[volume], 1, 0) * objects[contrast, volume][None]
            clean = fftc(padded, axes=(-3, -2, -1)).astype(np.complex64)
            for average in range(config.averages):
                kspaces[s, contrast, average] = clean + correlated_noise(cov, (parts, n, 2 * n), rng_kspace)
    acqs += _imaging_readouts(config, kspaces, rng_extra, uid=uid, positions=positions)
    for number, acquisition in enumerate(acqs):
        acquisition.scan_counter = number + 1
    acqs[-1].set_flag(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    interference = None
    if emi is not None:
        interference = Interference(
            emi, cov, bandwidth_scale_squared(config.acq_dwell_us, config.noise_dwell_us,
                                              config.relative_noise_bandwidth),
            np.random.default_rng(np.random.SeedSequence(config.seed).spawn(7)[6]),
            origin_ticks=START_TICKS, span_ticks=acqs[-1].acquisition_time_stamp - START_TICKS)
        acqs = interference.apply(acqs)
    sensing = emi.sensing_coils if emi is not None else 0

    header = _header(config, measurement_id=scan_id,
                     noise_dependency_id=noise_id if separate_noise else None, object_kind=kind, sensing=sensing)
    out = hb.write_ismrmrd(path, header, acqs)

    attrs = {
        "object": kind,
        "noise_sigma": config.noise,
        "seed": config.seed,
        "field_T": config.field_T,
        "fov_mm": config.fov_mm,
        "slice_thickness_mm": config.slice_thickness_mm,
        "slice_positions_mm": np.asarray(z_all, dtype=np.float64),
        "acq_dwell_us": config.acq_dwell_us,
        "noise_dwell_us": config.noise_dwell_us,
        "relative_noise_bandwidth": config.relative_noise_bandwidth,
        "noise_readout_covariance_scale": bandwidth_scale_squared(
            config.acq_dwell_us, config.noise_dwell_us, config.relative_noise_bandwidth
        ),
        "measurement_id": scan_id,
        "noise_measurement_id": noise_id if separate_noise else scan_id,
        "config_json": json.dumps(dataclasses.asdict(config) | {"object": kind}, sort_keys=True),
    }
    attrs.update(config.protocol_fields())
    gt = GroundTruth(image=objects.reshape(-1, n, n), coil_maps=np.tile(maps, (config.contrasts, 1, 1, 1)),
                     noise_covariance=cov, attrs=attrs)
    write_ground_truth(out, gt)

    noise_path = None
    if separate_noise:
        noise_header = _header(config, measurement_id=noise_id, noise_dependency_id=None,
                               object_kind=kind, noise_only=True, sensing=sensing)
        noise_acqs = _noise_readouts(config, cov_noise, rng_noise, uid=hb.measurement_uid(noise_id),
                                     counter0=1, last_in_measurement=True, position=positions[0])
        if interference is not None:
            noise_acqs = interference.apply(noise_acqs)
        noise_path = hb.write_ismrmrd(noise_file, noise_header, noise_acqs)
        log.info("wrote noise scan %s (measurementID %s, %d readouts)", noise_path, noise_id,
                 len(noise_acqs))

    if interference is not None:
        noise_group = noise_acqs if separate_noise else acqs
        span = acqs[-1].acquisition_time_stamp - START_TICKS
        progress = [np.array([a.acquisition_time_stamp - START_TICKS for a in group
                              if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) == is_noise]) / span
                    for group, is_noise in ((noise_group, True), (acqs, False))]
        write_emi_truth(out, interference.truth(coil_names(c) + sensing_names(sensing), *progress))

    log.info(
        "wrote %s: %s, %dx%d, %d coils, %d slices, %.3f T, noise sigma %g, measurementID %s, "
        "%d readouts%s",
        out, kind, n, n, c, config.slices, config.field_T, config.noise, scan_id, len(acqs),
        f" (noise dependency {noise_id})" if separate_noise else f" ({config.noise_readouts} noise first)",
    )
    return SimulationResult(
        path=out,
        noise_path=noise_path,
        object_kind=kind,
        measurement_id=scan_id,
        noise_measurement_id=noise_id if separate_noise else None,
        slice_positions_mm=np.asarray(z_all),
        ground_truth=gt,
    )
