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

from adacsc.core import cancel
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
    set up logging, run; expected errors become one clear log line.

    SIGTERM and Ctrl-C stop a command with one line and status 128 + the signal, leaving no
    temporary file, even when the signal's exception was lost on the way (adacsc.core.cancel).
    A signal that arrives once the command's output is complete and published still gives that
    status (the output is kept: it is complete); one that arrives after the handlers were put
    back, as the process exits, ends it by the signal's default action (SIGTERM: killed by the
    signal, which a shell also shows as 143)."""
    configure_process()
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    args.command_line = "adacsc " + " ".join(shlex.quote(a) for a in argv)
    level = "DEBUG" if args.verbose else os.environ.get("ADACSC_LOG_LEVEL", "INFO")
    logging.basicConfig(level=level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    previous = _stop_on_signals()
    try:
        code = int(args.func(args) or 0)
    except (ValueError, OSError, RuntimeError) as err:
        if cancel.stop_signal() is None:  # else a consequence of the stop (e.g. Cancelled)
            logging.getLogger("adacsc").error("%s", err)
        code = 2
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: `finally` blocks have removed temporary files
        return _stopped(signal.SIGTERM if isinstance(err, cancel.Terminated) else signal.SIGINT)
    finally:
        _restore(previous)
    stopped = cancel.stop_signal()
    if stopped is not None:  # its exception was lost (in a finalizer) or turned into an error
        return _stopped(stopped)
    return code


def _stopped(signum: int) -> int:
    """The one line a stopped command ends with, and its exit status (128 + the signal)."""
    name = signal.Signals(signum).name
    logging.getLogger("adacsc").error("stopped by %s; unfinished outputs were removed", name)
    return 128 + signum


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_NOT_SET = object()


def _on_stop_signal(signum: int, _frame: object) -> None:
    cancel.stop_by_signal(signum)


def _quiet_lost_stop(unraisable: "sys.UnraisableHookArgs") -> None:
    """A stop signal's exception raised inside a finalizer, where Python can only print it: the
    stop is recorded (adacsc.core.cancel) and the command ends as stopped, without a traceback."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and cancel.stop_signal() is not None:
        logging.getLogger("adacsc").debug("%s raised in %r: the stop goes on", cancel.stop_signal().name,
                                          unraisable.object)
        return
    sys.__unraisablehook__(unraisable)


def _stop_on_signals() -> object:
    """SIGTERM and SIGINT record the stop and raise Terminated or KeyboardInterrupt (see
    adacsc.core.cancel; a server replaces them with its own, adacsc.server.signals): the previous
    handlers, to restore (_NOT_SET off the main thread, where no handler can be set)."""
    if threading.current_thread() is not threading.main_thread():
        return _NOT_SET
    cancel.clear_stop_signal()
    previous = {signum: signal.signal(signum, _on_stop_signal) for signum in _STOP_SIGNALS}
    previous["unraisable"] = sys.unraisablehook
    sys.unraisablehook = _quiet_lost_stop
    return previous


def _restore(previous: object) -> None:
    """Put back the handlers `_stop_on_signals` replaced."""
    if previous is _NOT_SET:
        return
    sys.unraisablehook = previous.pop("unraisable")
    for signum, handler in previous.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
