"""The `adacsc` command line: one subcommand per module in adacsc.commands."""

import argparse
import importlib
import logging
import os
import shlex
import sys

COMMANDS = ("simulate", "convert", "recon", "serve", "send", "external", "properties", "package", "learn_dictionary",
            "train", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="adacsc", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"adacsc.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, set up logging, run; expected errors become one clear log line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command_line = "adacsc " + " ".join(shlex.quote(a) for a in argv)
    level = "DEBUG" if args.verbose else os.environ.get("ADACSC_LOG_LEVEL", "INFO")
    logging.basicConfig(level=level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, RuntimeError) as err:
        logging.getLogger("adacsc").error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
