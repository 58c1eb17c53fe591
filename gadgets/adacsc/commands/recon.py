"""`adacsc recon`: offline replay of ISMRMRD files through a chain XML.

One file with `-o FILE` replays it into that file. Several files, folders, an existing output
folder, `--workers` or `--scheduler` make it a batch (adacsc.batch): `-o` is then a folder, files
run on a local process pool or a Dask cluster, outputs already complete are skipped, and a file
that fails is reported at the end (exit status 1) without stopping the others.
"""

import argparse
import logging
from pathlib import Path

from adacsc import resources
from adacsc.chain.config import load_chain
from adacsc.io.output_file import atomic_output
from adacsc.replay import replay

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "adacsc_lowfield"


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
    parser = subparsers.add_parser(
        "recon", help="reconstruct ISMRMRD files offline through a chain (one file, or a batch)",
        description="Replay ISMRMRD files through a chain XML and store the images. One input file with -o FILE: "
                    "that file. Several inputs, folders, an existing folder as -o, --workers or --scheduler: a "
                    "batch into the folder -o (resumable: complete outputs are skipped; failures are listed at "
                    "the end and make the exit status 1).")
    parser.add_argument("inputs", nargs="*", type=Path, metavar="INPUT",
                        help=f"ISMRMRD file(s) or folder(s) of them (default: the bundled real 0.055 T scan "
                             f"{resources.DEFAULT_SCAN})")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="output ISMRMRD file for the images; a folder for a batch")
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="chain XML: a path or a name in the config folders")
    parser.add_argument("--config-dir", type=Path, action="append", default=[], help="extra folder of chain XMLs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="PROPERTY=VALUE",
                        help="override a chain property (name=value or target.name=value); repeatable")
    parser.add_argument("-G", "--group", help="output group name (default: current date and time)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output file; in a batch, redo files whose output exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    batch = parser.add_argument_group("batch")
    batch.add_argument("--workers", type=int, help="local worker processes (default: up to 4, one per core)")
    batch.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                       help="run the files on this Dask distributed scheduler instead of a local pool "
                            "(needs adacsc[cluster]; paths must be visible to every worker)")
    batch.add_argument("--report", type=Path, help="write a JSON report of every file's outcome here")
    parser.set_defaults(func=run)


def is_batch(args: argparse.Namespace) -> bool:
    """Whether the command line asks for a batch rather than one file into one file."""
    inputs = args.inputs or []
    return (len(inputs) > 1 or any(p.is_dir() for p in inputs) or args.output.is_dir()
            or args.workers is not None or args.scheduler is not None)


def run(args: argparse.Namespace) -> int:
    """Replay one file, or a batch."""
    chain = load_chain(args.config, args.config_dir).with_overrides(parse_overrides(args.overrides))
    if is_batch(args):
        return run_batch(args, chain)
    source = args.inputs[0] if args.inputs else resources.bundled_scan()
    if not args.inputs:
        log.info("no input given: using the bundled scan %s", source)
    with atomic_output(args.output, args.overwrite, [source]) as temporary:
        result = replay(source, temporary, chain, args.group, progress=not args.no_progress)
    log.info("%s -> %s: %s", source, args.output,
             ", ".join(f"{name} x{count}" for name, count in sorted(result.images.items())) or "no images")
    return 0


def run_batch(args: argparse.Namespace, chain: object) -> int:
    """The batch: plan, run, summarise; 1 when any file failed."""
    from adacsc import batch

    if not args.inputs:
        raise ValueError("a batch needs input files or folders")
    if args.output.exists() and not args.output.is_dir():
        raise ValueError(f"-o {args.output}: a batch writes into a folder, and this is a file")
    if not args.output.exists() and args.output.suffix.lower() in batch.SCAN_SUFFIXES:
        raise ValueError(f"-o {args.output}: a batch writes into a folder; this name looks like a file")
    jobs = batch.plan_jobs(args.inputs, args.output)
    if not jobs:
        raise ValueError("no ISMRMRD files to reconstruct in " + ", ".join(str(p) for p in args.inputs))
    args.output.mkdir(parents=True, exist_ok=True)
    report = batch.run_batch(jobs, chain, workers=args.workers, scheduler=args.scheduler, group=args.group,
                             overwrite=args.overwrite, progress=not args.no_progress)
    for line in batch.summarise(report):
        (log.error if line.startswith("failed") else log.info)("%s", line)
    if args.report:
        report.write_json(args.report)
    return 0 if report.ok else 1
