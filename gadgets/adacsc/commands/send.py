"""`adacsc send`: replay an ISMRMRD file to a streaming server and store the images it returns."""

import argparse
import logging
from pathlib import Path

from adacsc.chain.config import ChainError, load_chain, parse_chain
from adacsc.client import send_scan, summarise
from adacsc.commands.recon import DEFAULT_CONFIG, parse_overrides
from adacsc.io.output_file import atomic_output, discard

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `send`."""
    parser = subparsers.add_parser(
        "send", help="stream an ISMRMRD file to a server (adacsc serve or Gadgetron) and store the images",
        description="Like gadgetron_ismrmrd_client: CONFIG, HEADER, acquisitions, CLOSE; images are written "
                    "as they arrive. Reports per-slice latency (last readout sent -> images received).")
    parser.add_argument("input", type=Path, help="ISMRMRD file")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output ISMRMRD file for the images")
    parser.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9002, help="server port (default 9002)")
    config = parser.add_mutually_exclusive_group()
    config.add_argument("-c", "--config", help=f"config name on the server (default {DEFAULT_CONFIG})")
    config.add_argument("-C", "--config-file", type=Path, help="local chain XML sent as text (CONFIG id 2)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="PROPERTY=VALUE",
                        help="override a chain property (sent as JSON parameters after the header); repeatable")
    parser.add_argument("--pace", metavar="realtime|realtime:F|N",
                        help="pace readouts: by their time stamps (F times faster), or N readouts per second")
    parser.add_argument("-G", "--group", help="output group name (default: current date and time)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the server")
    parser.set_defaults(func=run)


def check_overrides(overrides: dict[str, str], config_name: str | None, config_text: str | None) -> None:
    """Refuse property names no node of the chain accepts, as `recon` does, when the chain is
    known here (a sent XML, or a config name found in the local config folders); a name only the
    server knows is left to the server."""
    if not overrides:
        return
    try:
        chain = (parse_chain(config_text, "the -C file") if config_text is not None
                 else load_chain(config_name, allow_paths=False))
    except ChainError:
        if config_text is not None:
            raise
        log.info("config %s is not known here: the server checks the --set names", config_name)
        return
    chain.with_overrides(overrides)


def run(args: argparse.Namespace) -> int:
    """Send one file; 0 when the server answered with CLOSE and no error."""
    config_text = args.config_file.read_text() if args.config_file else None
    config_name = None if config_text is not None else (args.config or DEFAULT_CONFIG)
    overrides = parse_overrides(args.overrides)
    check_overrides(overrides, config_name, config_text)
    with atomic_output(args.output, args.overwrite, [args.input]) as temporary:
        result = send_scan(args.input, temporary, args.host, args.port, config_name=config_name,
                           config_text=config_text, overrides=overrides, pace=args.pace,
                           group=args.group, timeout=args.timeout)
        if not result.images:
            discard(temporary)
            log.warning("no images received: %s not written", args.output)
    for line in summarise(result):
        log.info("%s", line)
    if not result.ok:  # each error was logged when it arrived
        log.error("the scan did not complete cleanly: %s",
                  f"{len(result.errors)} error(s), see above" if result.errors else "no CLOSE from the server")
        return 1
    return 0
