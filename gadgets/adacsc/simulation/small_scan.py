"""Small synthetic scans in seconds, for the tests of the streaming paths and the server
benchmarks: an ellipse seen by a few coils, 2-D Cartesian multi-slice, 2x oversampled readouts,
noise readouts first. Built with adacsc.io.header_builder like every scan we write (the full
simulator, adacsc.simulation.scanner, makes the realistic ones with ground truth).

Per slice s the k-space is fftc(object x coil c) x (5 + s) plus white noise of std
`kspace_noise` per real and imaginary part; coil c sees the object with gain 1 + 0.2 c and a
linear phase along the readout. Readouts carry the loop flags of the ISMRMRD reference tools
(`cartesian_flags`), scan counters and time stamps one TR apart.
"""

from pathlib import Path

import ismrmrd
import numpy as np

from adacsc.io.header_builder import (
    TIME_STAMP_TICK_MS, build_header, cartesian_flags, cartesian_readout, measurement_uid, write_ismrmrd,
)
from adacsc.mr.fft import fftc

FIELD_T = 0.055
NOISE_DWELL_US = 5.0
DWELL_US = 10.0
NOISE_TIME_STAMP = 1000
"""the first noise readout's time stamp (2.5 ms ticks); imaging readouts start at 2000"""
IMAGING_TIME_STAMP = 2000


def write_small_scan(path: Path, coils: int = 4, lines: int = 16, slices: int = 2, noise: int = 16,
                     seed: int = 0, tr_ms: float = 5.0, kspace_noise: float = 0.1,
                     fov_mm: float = 200.0) -> Path:
    """Write the scan to `path` (ISMRMRD HDF5, group "dataset"): readouts of 2 x `lines` samples,
    `lines` lines per slice (a `lines` x `lines` image of `fov_mm`), `slices` slices, `noise`
    noise readouts of unit white noise first; kspace_noise 0 gives noise-free imaging readouts."""
    if min(coils, lines, slices) < 1 or noise < 0:
        raise ValueError("coils, lines and slices must be >= 1 and noise >= 0")
    samples = 2 * lines
    rng = np.random.default_rng(seed)
    measurement = f"small_{Path(path).stem}_{seed}"
    header = build_header(field_T=FIELD_T, coil_names=[f"c{c}" for c in range(coils)],
                          encoded_matrix=(samples, lines, 1), encoded_fov_mm=(2 * fov_mm, fov_mm, 5.0),
                          recon_matrix=(lines, lines, 1), recon_fov_mm=(fov_mm, fov_mm, 5.0), n_lines=lines,
                          n_slices=slices, measurement_id=measurement, tr_ms=tr_ms)
    uid = measurement_uid(measurement)
    readouts = []
    for n in range(noise):
        white = (rng.standard_normal((coils, samples)) + 1j * rng.standard_normal((coils, samples))) / np.sqrt(2)
        readouts.append(cartesian_readout(white, sample_time_us=NOISE_DWELL_US, scan_counter=n + 1,
                                          time_stamp=NOISE_TIME_STAMP + n, measurement_uid=uid,
                                          flags=[ismrmrd.ACQ_IS_NOISE_MEASUREMENT]))
    yy, xx = np.mgrid[:lines, :samples]
    ellipse = ((((xx - lines) / (lines / 2)) ** 2 + ((yy - lines / 2) / (lines / 2.5)) ** 2) < 1).astype(complex)
    for s in range(slices):
        coil_images = np.stack([ellipse * (1 + 0.2 * c) * np.exp(1j * c * xx / samples) for c in range(coils)])
        kspace = fftc(coil_images) * (5 + s)
        kspace += kspace_noise * (rng.standard_normal(kspace.shape) + 1j * rng.standard_normal(kspace.shape))
        for line in range(lines):
            acquired = s * lines + line
            readouts.append(cartesian_readout(
                kspace[:, line, :], line=line, slice_index=s, sample_time_us=DWELL_US,
                flags=cartesian_flags(line, lines, last_in_measurement=acquired == slices * lines - 1),
                scan_counter=noise + acquired + 1, measurement_uid=uid,
                time_stamp=int(IMAGING_TIME_STAMP + acquired * tr_ms / TIME_STAMP_TICK_MS)))
    return write_ismrmrd(path, header, readouts)
