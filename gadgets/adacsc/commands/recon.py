"""`adacsc recon`: offline replay of an ISMRMRD file through a chain XML."""

import argparse
import importlib.resources
import logging
from pathlib import Path

from adacsc.chain.config import config_dirs, load_chain
from adacsc.replay import replay

log = logging.getLogger(__name__)

DEFAULT_SCAN = "lowfield_0055T_FSE.h5"
DEFAULT_CONFIG = "adacsc_lowfield"


def bundled_scan(name: str = DEFAULT_SCAN) -> Path:
    """Path of a scan shipped with the package."""
    return Path(str(importlib.resources.files("adacsc") / "data" / "scans" / name))


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """`--set name=value` pairs as a dict; a pair without '=' is an error."""
    overrides = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--set expects property=value, got {pair!r}")
        overrides[name.strip()] = value.strip()
    return overrides


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `recon`."""
    parser = subparsers.add_parser("recon", help="reconstruct an ISMRMRD file offline through a chain")
    parser.add_argument("input", nargs="?", type=Path,
                        help=f"ISMRMRD file (default: the bundled real 0.055 T scan {DEFAULT_SCAN})")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output ISMRMRD file for the images")
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="chain XML: a path or a name in the config folders")
    parser.add_argument("--config-dir", type=Path, action="append", default=[], help="extra folder of chain XMLs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="PROPERTY=VALUE",
                        help="override a chain property (name=value or target.name=value); repeatable")
    parser.add_argument("-G", "--group", help="output group name (default: current date and time)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Replay one file."""
    source = args.input or bundled_scan()
    if args.input is None:
        log.info("no input given: using the bundled scan %s", source)
    chain = load_chain(args.config, config_dirs(args.config_dir)).with_overrides(parse_overrides(args.overrides))
    result = replay(source, args.output, chain, args.group)
    log.info("%s -> %s: %s", source, args.output,
             ", ".join(f"{name} x{count}" for name, count in sorted(result.images.items())) or "no images")
    return 0
