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
- Ground truth beside the ISMRMRD data (simulation.ground_truth).

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
from adacsc.simulation.emi import (
    EMIConfig, EMITruth, ReadoutTimes, calibrate, config_json, draw_sources, sensing_names, tone_powers,
    write_emi_truth,
)
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

    `tag` is a hash of the configuration (and the EMI, when there is any), so scans that differ
    in anything get different IDs while the same configuration always gets the same ones.
    """
    fields = dataclasses.asdict(config) | {"object": object_kind}
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
    n = config.matrix
    return hb.build_header(
        field_T=config.field_T,
        coil_names=coil_names(config.coils) + sensing_names(sensing),
        encoded_matrix=(2 * n, n, 1),
        encoded_fov_mm=(2 * config.fov_mm, config.fov_mm, config.slice_thickness_mm),
        recon_matrix=(n, n, 1),
        recon_fov_mm=(config.fov_mm, config.fov_mm, config.slice_thickness_mm),
        n_lines=n,
        n_slices=config.slices,
        measurement_id=measurement_id,
        noise_dependency_id=noise_dependency_id,
        relative_noise_bandwidth=config.relative_noise_bandwidth,
        system_vendor=SYSTEM_VENDOR,
        system_model=SYSTEM_MODEL,
        device_serial=DEVICE_SERIAL,
        protocol_name="adacsc_noise" if noise_only else f"adacsc_sim_{object_kind}",
        series_description=("noise scan" if noise_only else f"simulated {object_kind}, {config.coils} coils"),
        sequence_type="noise" if noise_only else "2D Cartesian (simulated)",
        tr_ms=None if noise_only else config.tr_ms,
        te_ms=None if noise_only else config.te_ms,
        user_strings={"adacsc_object": object_kind},
        user_longs={"adacsc_seed": config.seed},
        user_doubles={"adacsc_noise_sigma": config.noise},
    )


def _noise_readouts(config, cov_noise, rng, *, uid, counter0, last_in_measurement, position, added=None):
    """The noise-only readouts; `added` [C + N, R, 2N] (sensing coils' noise and EMI) is added
    to the receive coils' thermal noise, with N sensing channels appended."""
    acqs = []
    n_samples = 2 * config.matrix
    noise = correlated_noise(cov_noise, (config.noise_readouts, n_samples), rng)  # [C, R, 2N]
    if added is not None:
        noise = _with_added(noise, added)
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


def _with_added(data: np.ndarray, added: np.ndarray) -> np.ndarray:
    """Receive-coil data [C, ...] with the sensing channels appended and `added` [C + N, ...] summed in."""
    extended = np.zeros(added.shape, dtype=np.complex64)
    extended[: data.shape[0]] = data
    return (extended + added).astype(np.complex64)


@dataclass
class _Interference:
    """The EMI and the sensing coils' thermal noise of one scan (simulation.emi)."""

    sensing: int
    noise: np.ndarray  # [C + N, R_noise, 2N], added to the noise readouts
    imaging: np.ndarray  # [C + N, S * N, 2N], added to the imaging readouts
    truth: EMITruth


def _interference(emi: EMIConfig, config: SimulationConfig, cov: np.ndarray, rng: np.random.Generator,
                  tr_ticks: float, t0: float) -> _Interference:
    """Draw the scan's EMI (scaled to emi.power_ratio x the thermal noise) and the sensing coils' noise."""
    n, c = config.matrix, config.coils
    sources = draw_sources(emi, c, rng)
    tick_us = hb.TIME_STAMP_TICK_MS * 1000
    lines = config.slices * n
    imaging_us = (t0 - START_TICKS + np.arange(lines) * tr_ticks) * tick_us
    noise_us = np.arange(config.noise_readouts) * tick_us
    total_us = float(imaging_us[-1]) or 1.0
    imaging_times = ReadoutTimes(imaging_us, config.acq_dwell_us, 2 * n, imaging_us / total_us)
    noise_times = ReadoutTimes(noise_us, config.noise_dwell_us, 2 * n, noise_us / total_us)
    imaging = sources.interference(imaging_times, rng)
    noise = sources.interference(noise_times, rng)
    thermal = float(np.real(np.trace(cov))) / c
    scale = calibrate(sources, imaging, thermal)
    imaging *= scale
    noise *= scale
    bandwidth = bandwidth_scale_squared(config.acq_dwell_us, config.noise_dwell_us, config.relative_noise_bandwidth)
    thermal_power = np.concatenate([np.real(np.diag(cov)), np.full(emi.sensing_coils, thermal * emi.sensing_noise ** 2)])
    truth = EMITruth(noise=noise.astype(np.complex64), imaging=imaging.astype(np.complex64), attrs={
        "channel_labels": json.dumps(coil_names(c) + sensing_names(emi.sensing_coils)),
        "sensing_channels": np.arange(c, c + emi.sensing_coils),
        "tones_hz": np.asarray(emi.tones_hz, dtype=np.float64),
        "tone_power_imaging": tone_powers(sources, imaging_times.progress),
        "tone_power_noise": tone_powers(sources, noise_times.progress),
        "thermal_power_imaging": thermal_power,
        "thermal_power_noise": thermal_power * bandwidth,
        "power_ratio": emi.power_ratio,
        "config_json": config_json(emi),
    })
    sensing_std = np.sqrt(thermal) * emi.sensing_noise
    for array, factor in ((imaging, 1.0), (noise, np.sqrt(bandwidth))):
        shape = (emi.sensing_coils,) + array.shape[1:]
        array[c:] += sensing_std * factor * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)
    return _Interference(emi.sensing_coils, noise, imaging, truth)


def simulate_scan(
    path: str | os.PathLike,
    config: SimulationConfig = SimulationConfig(),
    *,
    noise_file: str | os.PathLike | None = None,
    emi: EMIConfig | None = None,
) -> SimulationResult:
    """Simulate one multi-slice, multi-coil scan into `path` (and the noise scan into `noise_file`);
    with `emi`, sensing coils are appended to the receive coils and interference is added
    (simulation.emi), its ground truth stored beside the rest."""
    config.validate()
    n, c = config.matrix, config.coils
    kind = resolve_object_kind(config.object)

    seeds = np.random.SeedSequence(config.seed).spawn(5)
    rng_obj, rng_coil, rng_cov, rng_kspace, rng_noise = (np.random.default_rng(s) for s in seeds)

    z = stack_positions_mm(config.slices, config.slice_spacing_mm)
    images, kind = object_slices(
        config.object, n, z, fov_mm=config.fov_mm, slice_thickness_mm=config.slice_thickness_mm, rng=rng_obj
    )
    maps = coil_sensitivities(n, c, z, fov_mm=config.fov_mm, rng=rng_coil)
    cov = imaging_covariance(c, config.noise, rng_cov)
    cov_noise = noise_readout_covariance(
        cov, config.acq_dwell_us, config.noise_dwell_us, config.relative_noise_bandwidth
    )

    noise_id, scan_id = measurement_ids(config, kind, emi)
    separate_noise = noise_file is not None
    uid = hb.measurement_uid(scan_id)
    positions = [(0.0, 0.0, float(zs)) for zs in z]
    tr_ticks = config.tr_ms / hb.TIME_STAMP_TICK_MS
    t0 = START_TICKS + config.noise_readouts + 10
    extra = None
    if emi is not None:
        extra = _interference(emi, config, cov, np.random.default_rng(np.random.SeedSequence(config.seed).spawn(6)[5]),
                              tr_ticks, t0)
    sensing = extra.sensing if extra else 0

    acqs = []
    counter = 1
    if not separate_noise:
        acqs += _noise_readouts(config, cov_noise, rng_noise, uid=uid, counter0=counter,
                                last_in_measurement=False, position=positions[0],
                                added=extra.noise if extra else None)
        counter += config.noise_readouts

    for s in range(config.slices):
        padded = np.zeros((c, n, 2 * n), dtype=np.complex64)
        padded[:, :, n // 2 : n // 2 + n] = maps[s] * images[s][None]
        kspace = fftc(padded).astype(np.complex64)
        kspace += correlated_noise(cov, (n, 2 * n), rng_kspace)
        if extra is not None:
            kspace = _with_added(kspace, extra.imaging[:, s * n:(s + 1) * n])
        for line in range(n):
            last = s == config.slices - 1 and line == n - 1
            acqs.append(
                hb.cartesian_readout(
                    kspace[:, line, :],
                    line=line,
                    slice_index=s,
                    center_sample=n,
                    sample_time_us=config.acq_dwell_us,
                    flags=hb.cartesian_flags(line, n, last_in_measurement=last),
                    scan_counter=counter,
                    time_stamp=int(round(t0 + (s * n + line) * tr_ticks)),
                    measurement_uid=uid,
                    position_mm=positions[s],
                )
            )
            counter += 1

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
        "slice_positions_mm": np.asarray(z, dtype=np.float64),
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
    gt = GroundTruth(image=images, coil_maps=maps, noise_covariance=cov, attrs=attrs)
    write_ground_truth(out, gt)
    if extra is not None:
        write_emi_truth(out, extra.truth)

    noise_path = None
    if separate_noise:
        noise_header = _header(config, measurement_id=noise_id, noise_dependency_id=None,
                               object_kind=kind, noise_only=True, sensing=sensing)
        noise_acqs = _noise_readouts(config, cov_noise, rng_noise, uid=hb.measurement_uid(noise_id),
                                     counter0=1, last_in_measurement=True, position=positions[0],
                                     added=extra.noise if extra else None)
        noise_path = hb.write_ismrmrd(noise_file, noise_header, noise_acqs)
        log.info("wrote noise scan %s (measurementID %s, %d readouts)", noise_path, noise_id,
                 len(noise_acqs))

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
        slice_positions_mm=np.asarray(z),
        ground_truth=gt,
    )
