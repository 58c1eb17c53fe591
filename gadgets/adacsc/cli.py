"""The `adacsc` command line: one subcommand per module in adacsc.commands."""

import argparse
import importlib
import logging
import os
import re
import shlex
import signal
import sys
import threading

from adacsc.runtime import configure_process

COMMANDS = ("simulate", "convert", "recon", "serve", "send", "external", "properties", "package", "dictionaries",
            "learn_dictionary", "train", "evaluate", "noise_report")
SLOW_PARSERS = ("simulate", "learn_dictionary", "train", "evaluate")
"""commands whose options come from modules that take long to import (torch, the simulator):
registered by name only unless they are the command being run, so that `adacsc --help` and the
other commands start fast"""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered (those in SLOW_PARSERS by name only,
    unless `command` names one of them)."""
    parser = argparse.ArgumentParser(prog="adacsc", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"adacsc.commands.{name}")
        cli_name = name.replace("_", "-")
        if name in SLOW_PARSERS and command != cli_name:
            paragraph = (module.__doc__ or "").split("\n\n")[0].split(": ", 1)[-1].replace("\n", " ")
            summary = re.split(r" \(|\. ", paragraph)[0].rstrip(".")
            subparsers.add_parser(cli_name, help=summary)
        else:
            module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: the process settings (adacsc.runtime, before any command loads torch), parse,
    set up logging, run; expected errors become one clear log line."""
    configure_process()
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    args.command_line = "adacsc " + " ".join(shlex.quote(a) for a in argv)
    level = "DEBUG" if args.verbose else os.environ.get("ADACSC_LOG_LEVEL", "INFO")
    logging.basicConfig(level=level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    previous = _stop_on_sigterm()
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, RuntimeError) as err:
        logging.getLogger("adacsc").error("%s", err)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: `finally` blocks have removed temporary files
        name = "SIGTERM" if isinstance(err, Terminated) else "SIGINT"
        logging.getLogger("adacsc").error("stopped by %s; unfinished outputs were removed", name)
        return 128 + (signal.SIGTERM if name == "SIGTERM" else signal.SIGINT)
    finally:
        if previous is not _NOT_SET:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as Ctrl-C is, so that a command stops the same way (a server sets its own)."""


def _raise_terminated(_signum: int, _frame: object) -> None:
    raise Terminated()


_NOT_SET = object()


def _stop_on_sigterm() -> object:
    """Have SIGTERM raise Terminated: the previous handler, to restore (_NOT_SET off the main
    thread, where no handler can be set)."""
    if threading.current_thread() is not threading.main_thread():
        return _NOT_SET
    return signal.signal(signal.SIGTERM, _raise_terminated)


if __name__ == "__main__":
    sys.exit(main())
