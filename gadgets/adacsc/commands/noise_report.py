"""`adacsc noise-report`: the noise and EMI report of a scan's noise readouts (levels, ratio to the
site reference, narrowband lines, channel correlations), printed, and drawn with -o.

    adacsc noise-report scan.h5                    print the report
    adacsc noise-report scan.h5 -o report.png      also draw the spectra and the correlation matrix
    adacsc noise-report quiet.h5 --save-reference  store its levels as the scanner's noise reference

The reference is kept with the stored noise covariances ($ADACSC_NOISE_DIR), one per scanner
(the header's deviceSerialNumber, else stationName, else systemModel); the noise_adjust gadget
reports every later scan of that scanner against it.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)

MATPLOTLIB_HINT = 'drawing the report needs matplotlib: pip install "adacsc[report]" (or pip install matplotlib)'


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `noise-report` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "noise-report", help="noise and EMI report of a scan's noise readouts",
        description="Report the noise readouts of an ISMRMRD scan: per channel the noise level, its ratio "
                    "to the scanner's stored reference, the strongest narrowband lines (offset from the centre "
                    "frequency, dB over the floor) and the channel correlations.")
    p.add_argument("scan", type=Path, help="ISMRMRD file with noise readouts (ACQ_IS_NOISE_MEASUREMENT)")
    p.add_argument("-o", "--output", type=Path, metavar="REPORT.png",
                   help="draw the spectra and the correlation matrix into this image (needs matplotlib)")
    p.add_argument("--lines", type=int, default=5, metavar="N", help="strongest lines per channel [5]")
    p.add_argument("--save-reference", action="store_true",
                   help="store this scan's levels as the scanner's noise reference ($ADACSC_NOISE_DIR)")
    p.set_defaults(func=run)
    return p


def read_noise(path: Path) -> tuple[object, list[tuple[object, float]]]:
    """(parsed header, [(noise readout [CHA, S], dwell us)]) of a scan."""
    import ismrmrd

    from adacsc.io.dataset import InputScan
    from adacsc.io.header import parse_header

    with InputScan(path) as scan:
        header = parse_header(scan.header_bytes())
        readouts = [(acq.data.copy(), float(acq.sample_time_us)) for acq in scan.acquisitions()
                    if acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    return header, readouts


def run(args: argparse.Namespace) -> int:
    from adacsc.gadgets.site_qa import report_from_readouts
    from adacsc.io import header as hdr
    from adacsc.io.noise_store import NoiseReference, NoiseStore, save_reference

    if args.output is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            log.error("noise-report: %s", MATPLOTLIB_HINT)
            return 2
    header, readouts = read_noise(args.scan)
    if not readouts:
        log.error("noise-report: %s has no noise readouts (ACQ_IS_NOISE_MEASUREMENT)", args.scan)
        return 2
    labels = hdr.coil_labels(header, readouts[0][0].shape[0])
    site = hdr.scanner_identity(header)
    store = NoiseStore()
    report = report_from_readouts(readouts, labels, store, site, args.lines)
    if report is None:
        return 2
    print("\n".join(report.text()))
    if args.save_reference:
        if site is None:
            log.error("noise-report: the header names no scanner (deviceSerialNumber, stationName, systemModel): "
                      "no reference stored")
            return 2
        source = f"{args.scan.name} ({hdr.measurement_id(header) or 'no measurementID'})"
        path = save_reference(store, site, NoiseReference(dict(zip(labels, report.density.tolist())), source))
        log.info("noise reference of scanner %s stored in %s", site, path)
    if args.output is not None:
        draw_report(report, args.output, title=args.scan.name)
        log.info("wrote %s", args.output)
    return 0


def draw_report(report, path: Path, title: str = "") -> None:
    """Spectra of every channel (dB over its floor, lines marked) beside the correlation matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (spectra, matrix) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [2.2, 1]})
    khz = report.freq_hz / 1000
    for c, label in enumerate(report.labels):
        floor = max(float(report.floor[c]) ** 2, 1e-30)
        spectra.plot(khz, 10 * np.log10(np.maximum(report.spectrum[c], 1e-30) / floor), lw=0.8, label=label)
    marked: list[float] = []
    for line in report.lines:
        if any(abs(line.offset_hz - other) < 2 * abs(report.freq_hz[1] - report.freq_hz[0]) * 4 for other in marked):
            continue
        marked.append(line.offset_hz)
        spectra.annotate(f"{line.offset_hz:+.0f} Hz", (line.offset_hz / 1000, spectra.get_ylim()[1]), fontsize=7,
                         ha="center", va="top", rotation=90)
    spectra.set_xlabel("offset from the centre frequency (kHz)")
    spectra.set_ylabel("power over the channel's floor (dB)")
    spectra.set_title(f"noise spectra: {report.readouts} readouts x {report.samples} samples, dwell "
                      f"{report.dwell_us:g} us")
    spectra.legend(fontsize=7, loc="upper right")
    image = matrix.imshow(report.correlation, vmin=0, vmax=1, cmap="viridis")
    matrix.set_xticks(range(len(report.labels)), report.labels, rotation=90, fontsize=7)
    matrix.set_yticks(range(len(report.labels)), report.labels, fontsize=7)
    matrix.set_title("channel correlation |rho|")
    fig.colorbar(image, ax=matrix, fraction=0.046)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
