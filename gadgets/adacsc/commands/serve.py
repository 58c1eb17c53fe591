"""`adacsc serve`: the streaming reconstruction server (ISMRMRD/Gadgetron stream protocol)."""

import argparse
import logging
import os
from pathlib import Path

from adacsc import resources, settings
from adacsc.commands import site_config
from adacsc.limits import GiB, ScanLimits
from adacsc.server import Limits, Server, ServerSettings, SessionSettings
from adacsc.server.endpoints import serve_endpoints
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
    add_site_arguments(parser)
    parser.set_defaults(func=run, serve_defaults=site_config.prepare_parser(parser))


def add_site_arguments(parser: argparse.ArgumentParser) -> None:
    """The site config, the settings that are otherwise environment variables, and the metrics and
    health endpoints (docs/DEPLOYMENT.md, "More than one machine")."""
    parser.add_argument("--config", type=Path, metavar="SITE.yaml",
                        help="site config (YAML) holding any of these settings; the environment and flags "
                             "override it (adacsc.commands.site_config)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the effective settings as a site config, each with its source, and exit")
    parser.add_argument("--slice-workers", type=int,
                        help=f"slices reconstructed at once (sets ${settings.SLICE_WORKERS}; default one per core)")
    parser.add_argument("--weights-dir", type=Path,
                        help=f"folder of extra weights clients may name (sets ${resources.WEIGHTS.environment})")
    parser.add_argument("--noise-dir", type=Path,
                        help=f"folder of stored noise covariances (sets ${resources.NOISE.environment})")
    parser.add_argument("--log-level", type=str.upper, default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), help="log level (default INFO)")
    parser.add_argument("--metrics-host", default="127.0.0.1", help="bind address of the metrics and health port")
    parser.add_argument("--metrics-port", type=int,
                        help="serve Prometheus metrics at http://HOST:PORT/metrics (default: off; 0: any free port)")
    parser.add_argument("--health-port", type=int,
                        help="serve /ready and /live here (default: the metrics port; off without either)")
    parser.add_argument("--no-warm-up", action="store_true",
                        help="do not run one warm-up solve at start (then /ready turns true without it)")


def effective_settings(args: argparse.Namespace) -> list[site_config.Setting]:
    """Fill `args` with the effective settings (flag > environment > site config > default), once;
    the settings with their sources."""
    if getattr(args, "sources", None) is None:
        args.sources = site_config.resolve(args, args.serve_defaults)
    return args.sources


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """ServerSettings from the command line (and the site config)."""
    effective_settings(args)
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
                              max_scan_bytes=int(args.max_scan_gb * GiB), error_format=args.error_format,
                              scan_limits=scan_limits_from_args(args))
    return ServerSettings(host=args.host, port=args.port, workers=args.workers, max_waiting=args.max_waiting,
                          wait_s=args.wait, header_timeout_s=args.header_timeout,
                          extra_config_dirs=tuple(args.config_dir),
                          allow_modules=tuple(args.allow_module), preload=not args.no_preload,
                          warm_up=not args.no_preload and not args.no_warm_up, grace_s=args.grace,
                          collect_garbage=True, session=session)


def scan_limits_from_args(args: argparse.Namespace) -> ScanLimits:
    """The operator limits every scan's context holds (adacsc.scan_context)."""
    return ScanLimits(max_matrix=args.max_matrix, max_channels=args.max_channels,
                      max_iterations=args.max_iterations, max_scan_bytes=int(args.max_scan_gb * GiB))


def _export_environment(args: argparse.Namespace) -> None:
    """Check the operator folders and pass the settings that the gadgets read from the environment
    (folders, slice workers) on to them."""
    sources = {setting.key: setting.source for setting in effective_settings(args)}
    for folder in args.config_dir:
        if not Path(folder).is_dir():
            raise ValueError(f"folders.configs: {folder} is not a folder ({sources['folders.configs']})")
    if args.slice_workers is not None and args.slice_workers < 1:
        raise ValueError(f"server.slice_workers must be at least 1 ({sources['server.slice_workers']})")
    folders = {}
    for key, kind, folder in (("folders.dictionaries", resources.DICTIONARY, args.dictionary_dir),
                              ("folders.weights", resources.WEIGHTS, args.weights_dir),
                              ("folders.noise", resources.NOISE, args.noise_dir)):
        if folder is None:
            continue
        if kind is not resources.NOISE and not Path(folder).is_dir():
            raise ValueError(f"{key}: {folder} is not a folder ({sources[key]})")
        folders[kind.environment] = str(Path(folder).resolve())
    os.environ.update(folders)
    if args.slice_workers is not None:
        os.environ[settings.SLICE_WORKERS] = str(args.slice_workers)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT (or, with --print-config, print the effective settings)."""
    sources = effective_settings(args)
    if args.print_config:
        print(site_config.render(sources), end="")
        return 0
    if not getattr(args, "verbose", False):  # -v (debug) wins over the configured level
        logging.getLogger().setLevel(args.log_level)
    if args.config is not None:
        log.info("site config %s", args.config)
    _export_environment(args)
    log.info("dictionary folders for client-named dictionaries: %s",
             ", ".join(str(folder) for folder in resources.folders(resources.DICTIONARY)))
    log_host_resources()
    server = Server(settings_from_args(args))
    with serve_endpoints(server, args.metrics_host, args.metrics_port, args.health_port):
        server.start()
        serve_until_signalled(server, server.active_sessions)
    log.info("served %d scans (%d with errors); exiting %.2f s after the stop request", server.sessions_served,
             server.sessions_failed, server.since_stop())
    exit_now(0)
