"""`adacsc external`: serve one gadget to Gadgetron `<external><connect port=.. address=../>` nodes
(configs/adacsc_lowfield_connect.xml), models loaded once; the server is adacsc.server.external.
`python -m adacsc external` runs it without the `adacsc` front."""

import argparse

from adacsc.gadgets import registry
from adacsc.server.external import DEFAULT_GADGET, DEFAULT_PORT, ExternalServer
from adacsc.server.signals import serve_until_signalled

DESCRIPTION = ("Serve one adacsc gadget to Gadgetron <external><connect port=.. address=../> nodes: models load "
               "once at start, each connection is one scan. SIGTERM/SIGINT: stop accepting, finish running scans, exit.")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `external`."""
    parser = subparsers.add_parser(
        "external", help="serve one gadget to Gadgetron <connect> nodes, models loaded once",
        description=DESCRIPTION)
    parser.add_argument("--host", default="localhost",
                        help="address(es) to listen on (default localhost: 127.0.0.1 and ::1; '' for all)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"TCP port of the chain's <connect port=..> (default {DEFAULT_PORT}; 0: any free port)")
    parser.add_argument("--gadget", default=DEFAULT_GADGET, choices=sorted(registry.MODULES),
                        help=f"the gadget this process runs (default {DEFAULT_GADGET})")
    parser.add_argument("--workers", type=int, default=2, help="scans served at once (default 2); others wait")
    parser.add_argument("--idle-timeout", type=float, default=1800.0,
                        help="seconds Gadgetron may stay silent in a scan before it is dropped (default 1800; 0: never)")
    parser.add_argument("--no-preload", action="store_true", help="load models on the first scan, not at start")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT."""
    server = ExternalServer(args.gadget, args.host, args.port, args.workers, args.idle_timeout,
                            preload=not args.no_preload)
    server.start()
    serve_until_signalled(server, lambda: len(server.running_threads()))
    return 0
