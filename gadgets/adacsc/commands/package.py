"""`adacsc package openrecon`: the OpenRecon label of an adacsc image (JSON, base64 for the Docker
LABEL, a build-argument file for docker/Dockerfile.openrecon) and the JSON parameters a scanner
would send with the UI left at its defaults (python-ismrmrd-server's client reads them from
`<config>.json`). Upload steps: docs/DEPLOYMENT.md, section OpenRecon."""

import argparse
import json
import logging
from pathlib import Path

from adacsc.packaging import openrecon

log = logging.getLogger(__name__)

BUILD_ARG = "OPENRECON_LABEL"
"""The build argument of docker/Dockerfile.openrecon that carries the base64 label."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `package`."""
    parser = subparsers.add_parser("package", help="package adacsc for a scanner host (OpenRecon label)",
                                   description=__doc__)
    targets = parser.add_subparsers(dest="target", required=True)
    sub = targets.add_parser("openrecon", help="the OpenRecon label (JSON, base64, Docker build argument)",
                             description=openrecon.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = openrecon.LabelSettings()
    sub.add_argument("--json", type=Path, metavar="FILE", help="write the label JSON here")
    sub.add_argument("--base64", type=Path, metavar="FILE", help="write the base64 LABEL value here")
    sub.add_argument("--build-arg", type=Path, metavar="FILE",
                     help=f"write '{BUILD_ARG}=<base64>' here (docker build --build-arg \"$(cat FILE)\")")
    sub.add_argument("--fire-json", type=Path, metavar="FILE",
                     help="write the JSON parameters the scanner sends with the UI at its defaults")
    sub.add_argument("--name", default=defaults.name, help=f"application name [{defaults.name}]")
    sub.add_argument("--vendor", default=defaults.vendor, help=f"vendor [{defaults.vendor}]")
    sub.add_argument("--version", default=defaults.version, help=f"semantic version [{defaults.version}]")
    sub.add_argument("--injector", choices=sorted(openrecon.INJECTOR_OUTPUT), default=defaults.injector,
                     help="image: int16 magnitude series; compleximage: complex series [image]")
    sub.add_argument("--chain", default=defaults.default_chain, help=f"default chain [{defaults.default_chain}]")
    sub.add_argument("--gpu", action="store_true",
                     help="refused: OpenRecon takes CUDA <= 11.8, which no tested torch build offers (see the docs)")
    sub.add_argument("--memory-mb", type=int, default=defaults.min_memory_mb,
                     help=f"minimum host memory [{defaults.min_memory_mb}]")
    sub.add_argument("--cores", type=int, default=defaults.min_cpu_cores,
                     help=f"minimum CPU cores [{defaults.min_cpu_cores}]")
    sub.add_argument("--date", default=defaults.manufacture_date, help="manufacture date YYYY/MM/DD [today]")
    sub.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build, validate and write the label (to standard output when no file is named)."""
    settings = openrecon.LabelSettings(
        name=args.name, vendor=args.vendor, version=args.version, injector=args.injector,
        default_chain=args.chain, can_use_gpu=args.gpu, min_memory_mb=args.memory_mb,
        min_cpu_cores=args.cores, manufacture_date=args.date)
    label = openrecon.build_label(settings)
    text = json.dumps(label, indent=2) + "\n"
    encoded = openrecon.encode(label)
    outputs = {args.json: text, args.base64: encoded + "\n", args.build_arg: f"{BUILD_ARG}={encoded}\n",
               args.fire_json: json.dumps({"version": "1.1.0", "parameters": openrecon.ui_defaults(label)},
                                          indent=2) + "\n"}
    written = {path: content for path, content in outputs.items() if path is not None}
    if not written:
        print(text, end="")
    for path, content in written.items():
        path.write_text(content)
        log.info("wrote %s", path)
    log.info("label valid (%d UI parameters); image %s, upload files %s.tar/.pdf/.zip",
             len(label["parameters"]), settings.image_name, settings.package_name)
    return 0
