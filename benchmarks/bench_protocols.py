"""Scanner protocols through the default chain, scored on simulated scans the tests never see
(Colin27 brain when mricron-data is installed, seeds 101.., 128 x 128, 8 coils), against the issue's
"Done when" figures (issue 18):

  nex          NEX 4 (averages innermost and outermost) against NEX 1: PSNR gain of the combined
               image (the data the zero-filled series interpolates) and of the zero-filled series
               (series 2, against the truth interpolated to its grid, least-squares scaled), images
               per slice, and the ratio of the QA meta NoiseLevel (ideal 0.5).
  contrasts    two interleaved contrasts: images per slice with their contrast index, each against
               its own single-contrast reference (the same readouts of that contrast sent alone).
  partitions   a 3-D slab of 16 partitions against the same partitions sent as 2-D slices (the
               slab's k-space inverse-Fourier-transformed along kz and written as 16 slices): PSNR
               per partition, position spacing, and the wall time of the slab against 16 x one
               slice (same run; the slice pool runs partitions side by side).
  extras       navigators, phase correction, dummy scans, feedback, calibration-only lines and
               reversed readouts: PSNR difference to the same scan without them, and the tally.
  budget       a slab over a small scan budget fails before its buffer is allocated.
  shepp_logan  ismrmrd-tools' generator (128 x 128, 8 coils) with -a 2, -r 3 and -a 4 -w 16: every
               image back from replay and from `adacsc serve --strict` + send, pixels compared.

Usage:
    python benchmarks/bench_protocols.py [--sections nex contrasts partitions extras budget] [--out DIR]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ismrmrd
import numpy as np

from adacsc.chain.config import load_chain
from adacsc.client import send_scan
from adacsc.io import header_builder as hb
from adacsc.io.dataset import InputScan, read_images
from adacsc.io.header import parse_header
from adacsc.mr.fft import fftc, ifftc
from adacsc.replay import replay
from adacsc.simulation.ground_truth import ideal_combined_magnitude, read_ground_truth
from adacsc.simulation.scanner import SimulationConfig, simulate_scan

log = logging.getLogger("bench_protocols")

BASE = {"matrix": 128, "coils": 8, "slices": 4, "noise": 0.02, "object": None}


def run(scan: Path, out: Path, chain: str = "adacsc_lowfield", **overrides: str) -> tuple[dict, float]:
    if out.exists():
        out.unlink()
    started = time.perf_counter()
    replay(scan, out, load_chain(chain).with_overrides(overrides) if overrides else load_chain(chain))
    return read_images(out), time.perf_counter() - started


def stack(images: list[ismrmrd.Image]) -> np.ndarray:
    ordered = sorted(images, key=lambda im: (im.contrast, im.slice))
    return np.stack([np.abs(im.data[0, 0]).astype(np.float64) for im in ordered])


def psnr(images: np.ndarray, truth: np.ndarray, fit: bool = False) -> np.ndarray:
    """PSNR per image [K, Y, X] against `truth` (peak of the truth); `fit`: least-squares scale first."""
    if fit:
        scale = (images * truth).sum(axis=(1, 2)) / (images ** 2).sum(axis=(1, 2))
        images = images * scale[:, None, None]
    mse = ((images - truth) ** 2).mean(axis=(1, 2))
    return 10 * np.log10(truth.max(axis=(1, 2)) ** 2 / mse)


def upsampled(truth: np.ndarray, factor: int = 2) -> np.ndarray:
    """|truth| sinc-interpolated to the super-resolved grid (k-space zero-padding)."""
    k = fftc(truth.astype(np.complex128))
    y, x = truth.shape[1:]
    padded = np.zeros((truth.shape[0], factor * y, factor * x), complex)
    padded[:, (factor - 1) * y // 2:(factor - 1) * y // 2 + y, (factor - 1) * x // 2:(factor - 1) * x // 2 + x] = k
    return np.abs(ifftc(padded))


def simulate(folder: Path, name: str, **options: object) -> Path:
    path = folder / f"{name}.h5"
    simulate_scan(path, SimulationConfig(**{**BASE, **options}))
    return path


def section_nex(folder: Path) -> None:
    one = simulate(folder, "nex1", seed=101)
    truth = ideal_combined_magnitude(read_ground_truth(one))
    results = {}
    for name, options in (("NEX 1", {}), ("NEX 4 inner", {"averages": 4, "average_loop": "inner"}),
                          ("NEX 4 outer", {"averages": 4, "average_loop": "outer"})):
        scan = one if not options else simulate(folder, name.replace(" ", "_"), seed=101, **options)
        combined, _ = run(scan, folder / f"{scan.stem}_fe.h5", "adacsc_frontend")
        series, _ = run(scan, folder / f"{scan.stem}_out.h5")
        zero_filled = series["image_2"]
        results[name] = (psnr(stack(combined["image_1"]), truth).mean(),
                         psnr(stack(zero_filled), upsampled(truth), fit=True).mean(),
                         np.mean([float(im.meta["NoiseLevel"]) for im in zero_filled]),
                         len(series["image_1"]) / BASE["slices"])
    base = results["NEX 1"]
    for name, (combined, zero_filled, noise, per_slice) in results.items():
        log.info("%-12s combined %.2f dB (%+.2f), zero-filled series %.2f dB (%+.2f), NoiseLevel %.4g "
                 "(ratio %.4f), %.0f image(s) per slice per series", name, combined, combined - base[0],
                 zero_filled, zero_filled - base[1], noise, noise / base[2], per_slice)


def single_contrast(scan: Path, contrast: int, out: Path) -> Path:
    """The readouts of one contrast of `scan` as a scan of their own (contrast index 0)."""
    with InputScan(scan) as source:
        header = parse_header(source.header_bytes())
        readouts = [a for a in source.acquisitions()
                    if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) or a.idx.contrast == contrast]
    for acquisition in readouts:
        acquisition.idx.contrast = 0
    header.encoding[0].encodingLimits.contrast.maximum = 0
    return hb.write_ismrmrd(out, header, readouts)


def section_contrasts(folder: Path) -> None:
    scan = simulate(folder, "contrasts", seed=102, contrasts=2)
    both, _ = run(scan, folder / "contrasts_out.h5")
    images = both["image_1"]
    per_slice = {s: sorted(im.contrast for im in images if im.slice == s) for s in range(BASE["slices"])}
    truth = upsampled(ideal_combined_magnitude(read_ground_truth(scan)))
    scores = psnr(stack(images), truth, fit=True)
    for contrast in range(2):
        alone, _ = run(single_contrast(scan, contrast, folder / f"contrast{contrast}.h5"),
                       folder / f"contrast{contrast}_out.h5")
        mine = scores[contrast * BASE["slices"]:(contrast + 1) * BASE["slices"]]
        reference = psnr(stack(alone["image_1"]), truth[contrast * BASE["slices"]:(contrast + 1) * BASE["slices"]],
                         fit=True)
        log.info("contrast %d (CSC series): %.2f dB in the two-contrast scan, %.2f dB alone (max difference %.3f dB)",
                 contrast, mine.mean(), reference.mean(), np.abs(mine - reference).max())
    log.info("contrast indices per slice: %s", per_slice)


def as_2d_slices(scan: Path, out: Path) -> Path:
    """A 3-D slab's k-space inverse-Fourier-transformed along kz and written as one 2-D slice per
    partition (the same samples, the same noise), partition p at the slab position + (p - P/2) x
    thickness."""
    with InputScan(scan) as source:
        header = parse_header(source.header_bytes())
        readouts = list(source.acquisitions())
    noise = [a for a in readouts if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    imaging = [a for a in readouts if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    encoding = header.encoding[0]
    partitions, lines = encoding.encodedSpace.matrixSize.z, encoding.encodedSpace.matrixSize.y
    thickness = encoding.encodedSpace.fieldOfView_mm.z / partitions
    kspace = np.zeros((partitions, lines) + imaging[0].data.shape, np.complex64)
    for a in imaging:
        kspace[a.idx.kspace_encode_step_2, a.idx.kspace_encode_step_1] = a.data
    hybrid = ifftc(kspace, axes=(0,)).astype(np.complex64)
    written = list(noise)
    for p in range(partitions):
        for line in range(lines):
            template = imaging[0]
            flags = hb.cartesian_flags(line, lines, last_in_measurement=p == partitions - 1 and line == lines - 1)
            position = tuple(template.position[i] + (p - partitions // 2) * thickness * template.slice_dir[i]
                             for i in range(3))
            written.append(hb.cartesian_readout(
                hybrid[p, line], line=line, slice_index=p, center_sample=template.center_sample,
                sample_time_us=template.sample_time_us, flags=flags, scan_counter=len(written) + 1,
                measurement_uid=template.measurement_uid, position_mm=position))
    for space in (encoding.encodedSpace, encoding.reconSpace):
        space.matrixSize.z = 1
        space.fieldOfView_mm.z = thickness
    encoding.encodingLimits.kspace_encoding_step_2.maximum = encoding.encodingLimits.kspace_encoding_step_2.center = 0
    encoding.encodingLimits.slice.maximum = partitions - 1
    return hb.write_ismrmrd(out, header, written)


def section_partitions(folder: Path) -> None:
    slab = simulate(folder, "slab16", seed=103, slices=1, partitions=16)
    truth = ideal_combined_magnitude(read_ground_truth(slab))
    two_d = as_2d_slices(slab, folder / "slab16_as_2d.h5")
    one = simulate(folder, "one_slice", seed=104, slices=1)
    times = {"slab": [], "2d": [], "one": []}
    for _ in range(3):  # alternated, so each sees the same machine
        volume, seconds = run(slab, folder / "slab_out.h5")
        times["slab"].append(seconds)
        slices, seconds = run(two_d, folder / "slab_2d_out.h5")
        times["2d"].append(seconds)
        _, seconds = run(one, folder / "one_out.h5")
        times["one"].append(seconds)
    for series in ("image_1", "image_2"):
        mine = psnr(stack(volume[series]), upsampled(truth), fit=True)
        reference = psnr(stack(slices[series]), upsampled(truth), fit=True)
        inside = truth.max(axis=(1, 2)) > 0.05 * truth.max()
        log.info("3-D %s: %d images; PSNR per partition inside the object %.2f..%.2f dB, as 2-D slices "
                 "%.2f..%.2f dB, max difference %.3f dB", series, len(volume[series]), mine[inside].min(),
                 mine[inside].max(), reference[inside].min(), reference[inside].max(),
                 np.abs(mine - reference)[inside].max())
    positions = sorted(im.position[2] for im in volume["image_1"])
    log.info("partition positions (mm): %s; spacing %s", [round(p, 2) for p in positions],
             sorted({round(b - a, 4) for a, b in zip(positions, positions[1:])}))
    slab_s, one_s = min(times["slab"]), min(times["one"])
    log.info("wall time: slab of 16 %.1f s, the 16 partitions as 2-D slices %.1f s, one slice %.1f s; "
             "slab / (16 x one slice) = %.3f, slab / (16 partitions as 2-D slices) = %.3f (whole replays, "
             "best of %d, alternated in the same run; shared CPU, %d cores)", slab_s, min(times["2d"]), one_s,
             slab_s / (16 * one_s), slab_s / min(times["2d"]), len(times["slab"]), os.cpu_count() or 1)


def section_extras(folder: Path) -> None:
    clean = simulate(folder, "clean", seed=105)
    truth = ideal_combined_magnitude(read_ground_truth(clean))
    reference, _ = run(clean, folder / "clean_out.h5")
    for name, options in (("navigators", {"navigators": 8}), ("phase correction", {"phase_correction": 3}),
                          ("dummy scans", {"dummy_scans": 10}), ("feedback", {"feedback": 2}),
                          ("calibration-only", {"calibration_lines": 24}), ("reversed", {"reverse": True}),
                          ("all", {"navigators": 8, "phase_correction": 3, "dummy_scans": 10, "feedback": 2,
                                   "calibration_lines": 24, "reverse": True})):
        scan = simulate(folder, "extra_" + name.replace(" ", "_"), seed=105, **options)
        images, _ = run(scan, folder / f"{scan.stem}_out.h5")
        for series in ("image_1", "image_2"):
            delta = psnr(stack(images[series]), upsampled(truth), fit=True) \
                - psnr(stack(reference[series]), upsampled(truth), fit=True)
            log.info("%-17s %s: PSNR difference to the clean scan %.4f dB (max |pixel difference| %.3g)", name,
                     series, np.abs(delta).max(),
                     max(float(np.abs(a.data - b.data).max()) for a, b in
                         zip(sorted(images[series], key=lambda i: i.slice),
                             sorted(reference[series], key=lambda i: i.slice))))


def section_budget(folder: Path) -> None:
    slab = simulate(folder, "slab_budget", seed=106, slices=1, partitions=16)
    os.environ["ADACSC_MAX_SCAN_GB"] = "0.01"
    try:
        run(slab, folder / "budget_out.h5")
        log.info("budget: the slab was NOT refused")
    except Exception as err:  # the chain reports the gadget's LimitError
        log.info("budget 0.01 GB: %s", err)
    finally:
        del os.environ["ADACSC_MAX_SCAN_GB"]


def section_shepp_logan(folder: Path) -> None:
    generator = shutil.which("ismrmrd_generate_cartesian_shepp_logan")
    if generator is None:
        log.info("shepp_logan: ismrmrd_generate_cartesian_shepp_logan not installed (Debian ismrmrd-tools)")
        return
    port = 9390
    server = subprocess.Popen([sys.executable, "-m", "adacsc", "serve", "--port", str(port), "--strict"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(8)
        for options in (["-a", "2"], ["-r", "3"], ["-a", "4", "-w", "16"]):
            scan = folder / f"shepp{''.join(options)}.h5"
            scan.unlink(missing_ok=True)  # the generator appends to an existing file
            subprocess.run([generator, "-m", "128", "-c", "8", *options, "-o", str(scan)], check=True,
                           capture_output=True)
            replayed, _ = run(scan, folder / f"{scan.stem}_recon.h5")
            sent_path = folder / f"{scan.stem}_send.h5"
            sent_path.unlink(missing_ok=True)
            send_scan(scan, sent_path, port=port, config_name="adacsc_lowfield")
            sent = read_images(sent_path)
            same = all(np.array_equal(a.data, b.data) for name in replayed
                       for a, b in zip(sorted(replayed[name], key=lambda i: i.image_index),
                                       sorted(sent.get(name, []), key=lambda i: i.image_index)))
            log.info("shepp-logan %s: replay %s, send %s; pixels identical: %s; all finite: %s", " ".join(options),
                     {n: len(v) for n, v in replayed.items()}, {n: len(v) for n, v in sent.items()}, same,
                     all(np.isfinite(im.data).all() for v in replayed.values() for im in v))
    finally:
        server.terminate()
        server.wait(30)


SECTIONS = {"nex": section_nex, "contrasts": section_contrasts, "partitions": section_partitions,
            "extras": section_extras, "budget": section_budget, "shepp_logan": section_shepp_logan}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--out", type=Path, default=None, help="keep the scans and images here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    folder = args.out or Path(tempfile.mkdtemp(prefix="bench_protocols_"))
    folder.mkdir(parents=True, exist_ok=True)
    for name in args.sections:
        SECTIONS[name](folder)


if __name__ == "__main__":
    main()
