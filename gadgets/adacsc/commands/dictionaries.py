"""`adacsc dictionaries`: list the dictionaries a chain can name, or write the analytic ones.

    adacsc dictionaries                      name, filters, size and source of every dictionary
    adacsc dictionaries --write-analytic DIR write the shipped analytic dictionaries into DIR
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from adacsc import resources

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `dictionaries` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "dictionaries", help="list the dictionaries a chain can name, or write the analytic ones",
        description="List every dictionary a chain's `dictionary` property can name (the operator's "
                    "$ADACSC_DICTIONARY_DIR first, then the shipped ones), or write the analytic ones.")
    p.add_argument("--write-analytic", type=Path, metavar="DIR",
                   help="write the shipped analytic dictionaries (DCT, Gabor) into DIR instead")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from adacsc.io.dictionary_file import load_dictionary, save_dictionary

    if args.write_analytic is not None:
        from adacsc.core.analytic import shipped_dictionaries

        args.write_analytic.mkdir(parents=True, exist_ok=True)
        for d in shipped_dictionaries():
            path = save_dictionary(d, args.write_analytic / f"{d.name}{resources.DICTIONARY.suffix}")
            log.info("wrote %s (K=%d, %dx%d)", path, d.num_filters, *d.filter_shape)
        return 0
    for name in resources.names(resources.DICTIONARY):
        path = resources.resolve(resources.DICTIONARY, name)
        d = load_dictionary(path)
        h, w = d.filter_shape
        print(f"{name}\tK={d.num_filters}\t{h}x{w}\t{path.parent}\t{d.source}")
    return 0
