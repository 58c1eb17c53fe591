"""`adacsc convert`: 0.055 T .mat k-space (Liu et al. 2021) -> ISMRMRD raw data file."""

from __future__ import annotations

import argparse
import logging

from adacsc.conversion.lowfield_mat import (
    DEFAULT_DWELL_US,
    DEFAULT_FOV_MM,
    DEFAULT_SLICE_THICKNESS_MM,
    ConversionError,
    convert_lowfield_mat,
)

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `convert` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "convert",
        help="convert 0.055 T .mat k-space (line, sample, slice) to an ISMRMRD file",
        description=(
            "Convert a .mat file of the public 0.055 T brain data (variable 'kspace', axes "
            "(line, sample, slice), centred, single channel) into an ISMRMRD raw data file with a "
            "plausible low-field header. The data has no noise readouts."
        ),
    )
    p.add_argument("input", metavar="IN.mat", help="input .mat file")
    p.add_argument("-o", "--output", required=True, metavar="OUT.h5", help="output ISMRMRD file")
    p.add_argument("--sequence", default=None, metavar="NAME",
                   help="sequence name for the header (FSE, GRE, FLAIR, ...) [from the file name]")
    p.add_argument("--variable", default="kspace", help="variable holding the k-space [kspace]")
    p.add_argument("--fov-mm", type=float, nargs=2, default=list(DEFAULT_FOV_MM), dest="fov_mm",
                   metavar=("READOUT", "PHASE"),
                   help=f"in-plane field of view in mm [{DEFAULT_FOV_MM[0]:g} {DEFAULT_FOV_MM[1]:g}]")
    p.add_argument("--slice-thickness-mm", type=float, default=DEFAULT_SLICE_THICKNESS_MM,
                   dest="slice_thickness_mm", help=f"slice thickness = spacing [{DEFAULT_SLICE_THICKNESS_MM:g}]")
    p.add_argument("--dwell-us", type=float, default=DEFAULT_DWELL_US, dest="dwell_us",
                   help=f"readout dwell time in microseconds [{DEFAULT_DWELL_US:g}]")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    try:
        result = convert_lowfield_mat(
            args.input,
            args.output,
            sequence=args.sequence,
            variable=getattr(args, "variable", "kspace"),
            fov_mm=tuple(getattr(args, "fov_mm", DEFAULT_FOV_MM)),
            slice_thickness_mm=getattr(args, "slice_thickness_mm", DEFAULT_SLICE_THICKNESS_MM),
            dwell_us=getattr(args, "dwell_us", DEFAULT_DWELL_US),
        )
    except (ConversionError, FileNotFoundError, OSError) as exc:
        log.error("convert: %s", exc)
        return 2
    log.info("wrote %s (%s, %d acquisitions, measurementID %s)", result.path, result.sequence,
             result.n_acquisitions, result.measurement_id)
    return 0
