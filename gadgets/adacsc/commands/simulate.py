"""`adacsc simulate`: write a simulated low-field multi-coil scan (ISMRMRD + ground truth)."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `simulate` on an argparse subparsers object (imports the simulator: scipy)."""
    from adacsc.simulation.objects import OBJECT_KINDS
    from adacsc.simulation.scanner import SimulationConfig

    defaults = SimulationConfig()
    p = subparsers.add_parser(
        "simulate",
        help="simulate a low-field multi-coil scan as an ISMRMRD file with ground truth",
        description=(
            "Simulate a 2-D multi-slice Cartesian scan (2x readout oversampling, noise readouts "
            "first, coil-correlated noise) and write it as an ISMRMRD file; the ground truth "
            "(object, coil maps, noise covariance) is stored beside the ISMRMRD data."
        ),
    )
    p.add_argument("-o", "--output", required=True, metavar="SCAN.h5", help="output ISMRMRD file")
    p.add_argument("--matrix", type=int, default=defaults.matrix, metavar="N",
                   help=f"image matrix N (even; readouts have 2N samples) [{defaults.matrix}]")
    p.add_argument("--coils", type=int, default=defaults.coils, metavar="C",
                   help=f"receiver channels [{defaults.coils}]")
    p.add_argument("--slices", type=int, default=defaults.slices, metavar="S",
                   help=f"slices [{defaults.slices}]")
    p.add_argument("--field-T", type=float, default=defaults.field_T, metavar="F", dest="field_T",
                   help=f"field strength in tesla [{defaults.field_T}]")
    p.add_argument("--noise", type=float, default=defaults.noise, metavar="SIGMA",
                   help="per-sample noise std of the imaging readouts relative to image max 1 "
                        f"[{defaults.noise}]")
    p.add_argument("--seed", type=int, default=defaults.seed, help=f"random seed [{defaults.seed}]")
    p.add_argument("--object", choices=OBJECT_KINDS, default=None,
                   help="object: real brain volume slices or analytic phantom "
                        "[brain when the volume is installed, else phantom]")
    p.add_argument("--fov-mm", type=float, default=defaults.fov_mm, dest="fov_mm",
                   help=f"in-plane field of view (mm) of the reconstructed image [{defaults.fov_mm}]")
    p.add_argument("--noise-file", default=None, metavar="PATH",
                   help="write the noise readouts to this separate noise scan; the scan then names "
                        "it as its measurementDependency of type Noise")
    protocol = p.add_argument_group("protocol", "what a real scanner stream carries beyond a plain 2-D scan")
    protocol.add_argument("--averages", type=int, default=defaults.averages, metavar="N",
                          help=f"averages (NEX) [{defaults.averages}]")
    protocol.add_argument("--average-loop", choices=("inner", "outer"), default=defaults.average_loop,
                          dest="average_loop", help="inner: each line's averages in a row; outer: the whole "
                          f"slice again per average [{defaults.average_loop}]")
    protocol.add_argument("--contrasts", type=int, default=defaults.contrasts, metavar="N",
                          help=f"contrasts (echoes) interleaved per line [{defaults.contrasts}]")
    protocol.add_argument("--partitions", type=int, default=defaults.partitions, metavar="P",
                          help="3-D: partitions along kspace_encode_step_2 per slab (each slice a slab) "
                               f"[{defaults.partitions}]")
    for name, what in (("navigators", "navigator readouts per slice"),
                       ("phase-correction", "phase-correction readouts per slice"),
                       ("dummy-scans", "dummy scans at the start"),
                       ("feedback", "RT/HP feedback readouts per slice"),
                       ("calibration-lines", "calibration-only (ACS) lines per slice")):
        protocol.add_argument(f"--{name}", type=int, default=0, metavar="N", dest=name.replace("-", "_"),
                              help=f"{what} [0]")
    protocol.add_argument("--reverse", action="store_true", help="every second readout reversed (ACQ_IS_REVERSE)")
    emi = p.add_argument_group("electromagnetic interference (adacsc.simulation.emi)")
    emi.add_argument("--sensing-coils", type=int, default=0, metavar="N",
                     help="EMI sensing coils appended to the receive coils (labels EMI_SENSE_01...); with "
                          "N > 0 the scan carries EMI at --emi-ratio, with ground truth [0]")
    emi.add_argument("--emi-ratio", type=float, default=10.0, metavar="R",
                     help="EMI power in the receive coils relative to their thermal noise power; 0: the "
                          "sensing coils hold thermal noise only [10]")
    emi.add_argument("--emi-tones", type=_frequencies, default=None, metavar="HZ,HZ,...",
                     help="narrowband tone offsets from the centre frequency in Hz [2500,-9400,17300]")
    emi.add_argument("--emi-tone-fraction", type=float, default=None, metavar="F",
                     help="share of the EMI power in the tones, the rest broadband [0.5]")
    p.set_defaults(func=run)
    return p


def _frequencies(text: str) -> tuple[float, ...]:
    """A comma-separated list of frequencies in Hz."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of frequencies in Hz") from None


def emi_config(args: argparse.Namespace):
    """The EMIConfig the options ask for, or None without sensing coils."""
    from adacsc.simulation.emi import EMIConfig

    if args.sensing_coils <= 0:
        if args.emi_tones is not None or args.emi_tone_fraction is not None:
            raise ValueError("EMI options need --sensing-coils N (N > 0)")
        return None
    defaults = EMIConfig()
    return EMIConfig(sensing_coils=args.sensing_coils, power_ratio=args.emi_ratio,
                     tones_hz=defaults.tones_hz if args.emi_tones is None else args.emi_tones,
                     tone_fraction=defaults.tone_fraction if args.emi_tone_fraction is None else args.emi_tone_fraction)


def run(args: argparse.Namespace) -> int:
    from adacsc.simulation.scanner import SimulationConfig, simulate_scan

    try:
        config = SimulationConfig(
            matrix=args.matrix,
            coils=args.coils,
            slices=args.slices,
            field_T=args.field_T,
            noise=args.noise,
            seed=args.seed,
            object=args.object,
            fov_mm=args.fov_mm,
            averages=args.averages,
            average_loop=args.average_loop,
            contrasts=args.contrasts,
            partitions=args.partitions,
            navigators=args.navigators,
            phase_correction=args.phase_correction,
            dummy_scans=args.dummy_scans,
            feedback=args.feedback,
            calibration_lines=args.calibration_lines,
            reverse=args.reverse,
        )
        emi = emi_config(args)
        if emi is not None:
            emi.validate()
        result = simulate_scan(args.output, config, noise_file=args.noise_file, emi=emi)
    except (ValueError, FileNotFoundError, OSError) as exc:
        log.error("simulate: %s", exc)
        return 2
    log.info("simulated %s (object %s, measurementID %s)", result.path, result.object_kind,
             result.measurement_id)
    return 0
