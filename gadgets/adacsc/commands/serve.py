"""`adacsc serve`: the streaming reconstruction server (ISMRMRD/Gadgetron stream protocol)."""

import argparse
import logging
import os
from pathlib import Path

from adacsc import resources
from adacsc.limits import GiB, ScanLimits
from adacsc.server import Limits, Server, ServerSettings, SessionSettings
from adacsc.server.host import log_host_resources
from adacsc.server.protocol import MiB
from adacsc.server.signals import exit_now, serve_until_signalled

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `serve`."""
    parser = subparsers.add_parser(
        "serve", help="serve reconstructions over TCP like Gadgetron (one scan per connection)",
        description="Listen for ISMRMRD streams (gadgetron_ismrmrd_client, python-ismrmrd-server clients, "
                    "`adacsc send`) and run the chain each one names. SIGTERM/SIGINT: stop accepting, "
                    "let running scans finish within --grace seconds, then cancel them and exit; a second "
                    "signal cancels at once.")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--port", type=int, default=9002, help="TCP port (default 9002, 0: any free port)")
    parser.add_argument("--config-dir", type=Path, action="append", default=[],
                        help="folder of chain XMLs clients may name (repeatable; searched before the shipped ones)")
    parser.add_argument("--dictionary-dir", type=Path,
                        help=f"folder of extra dictionary files clients may name (sets ${resources.DICTIONARY.environment})")
    parser.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                        help="scans reconstructed at once (default: up to 4); further connections wait")
    parser.add_argument("--max-waiting", type=int, help="connections that may wait for a worker (default 4 x workers)")
    parser.add_argument("--wait", type=float, default=120.0, help="seconds a connection may wait for a worker")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a client may stay silent mid-scan")
    parser.add_argument("--header-timeout", type=float, default=10.0,
                        help="seconds a connection may take to send its config and header (it holds no worker "
                             "meanwhile)")
    parser.add_argument("--message-timeout", type=float, default=10.0,
                        help="seconds one message may take from its first byte (plus 1 s per MiB)")
    parser.add_argument("--write-stall", type=float, default=20.0,
                        help="seconds a client may leave its results unread before its scan is cancelled")
    parser.add_argument("--scan-timeout", type=float, default=1800.0,
                        help="deadline of one scan in seconds; a scan past it is cancelled")
    parser.add_argument("--grace", type=float, default=60.0,
                        help="on SIGTERM, seconds running scans may take to finish before they are cancelled")
    parser.add_argument("--strict", action="store_true",
                        help="round-trip every item between gadgets through gadgetron-python's serialisers")
    parser.add_argument("--error-format", choices=("text", "error"), default="text",
                        help="report errors as TEXT 'ERROR: ...' (Gadgetron's server, default) or ERROR (id 8, "
                             "what Gadgetron's external nodes send; python-ismrmrd-server's client does not "
                             "know it)")
    parser.add_argument("--allow-module", action="append", default=[],
                        help="extra Python module a client-sent chain XML may run (repeatable)")
    parser.add_argument("--max-text-mb", type=float, default=8, help="limit for config, header and text messages")
    parser.add_argument("--max-readout-mb", type=float, default=64, help="limit for one acquisition")
    defaults = ScanLimits()
    parser.add_argument("--max-scan-gb", type=float, default=defaults.max_scan_bytes / GiB,
                        help="budget of one scan: bytes received plus buffers the gadgets allocate")
    parser.add_argument("--max-matrix", type=int, default=defaults.max_matrix,
                        help="largest encoded or recon matrix size along any axis a header may declare")
    parser.add_argument("--max-channels", type=int, default=defaults.max_channels,
                        help="most receiver channels a scan may have")
    parser.add_argument("--max-iterations", type=int, default=defaults.max_iterations,
                        help="most solver iterations a client's chain properties may ask for")
    parser.add_argument("--no-preload", action="store_true", help="do not import the gadgets (and torch) at start")
    parser.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """ServerSettings from the command line."""
    if args.workers < 1:
        raise ValueError("--workers must be at least 1")
    for option in ("timeout", "header_timeout", "message_timeout", "write_stall", "scan_timeout", "max_scan_gb",
                   "max_matrix", "max_channels", "max_iterations"):
        if getattr(args, option) <= 0:
            raise ValueError(f"--{option.replace('_', '-')} must be positive")
    if args.grace < 0:
        raise ValueError("--grace must be >= 0")
    limits = Limits(max_text_bytes=int(args.max_text_mb * MiB), max_readout_bytes=int(args.max_readout_mb * MiB))
    session = SessionSettings(config_dirs=(), strict=args.strict, io_timeout_s=args.timeout,
                              message_timeout_s=args.message_timeout, write_stall_s=args.write_stall,
                              scan_timeout_s=args.scan_timeout, limits=limits,
                              max_scan_bytes=int(args.max_scan_gb * GiB), error_format=args.error_format)
    return ServerSettings(host=args.host, port=args.port, workers=args.workers, max_waiting=args.max_waiting,
                          wait_s=args.wait, header_timeout_s=args.header_timeout,
                          extra_config_dirs=tuple(args.config_dir),
                          allow_modules=tuple(args.allow_module), preload=not args.no_preload,
                          grace_s=args.grace, session=session)


def scan_limits_from_args(args: argparse.Namespace) -> ScanLimits:
    """The operator limits the gadgets read (from the environment, which `run` sets)."""
    return ScanLimits(max_matrix=args.max_matrix, max_channels=args.max_channels,
                      max_iterations=args.max_iterations, max_scan_bytes=int(args.max_scan_gb * GiB))


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT."""
    for folder in args.config_dir:
        if not folder.is_dir():
            raise ValueError(f"--config-dir {folder}: not a folder")
    if args.dictionary_dir is not None:
        if not args.dictionary_dir.is_dir():
            raise ValueError(f"--dictionary-dir {args.dictionary_dir}: not a folder")
        os.environ[resources.DICTIONARY.environment] = str(args.dictionary_dir.resolve())
    log.info("dictionary folders for client-named dictionaries: %s",
             ", ".join(str(folder) for folder in resources.folders(resources.DICTIONARY)))
    log_host_resources()
    os.environ.update(scan_limits_from_args(args).environment())
    server = Server(settings_from_args(args))
    server.start()
    serve_until_signalled(server, server.active_sessions)
    log.info("served %d scans (%d with errors)", server.sessions_served, server.sessions_failed)
    exit_now(0)
