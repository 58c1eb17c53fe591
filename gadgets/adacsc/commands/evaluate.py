"""`adacsc evaluate`: compare learned-map CSC with its baselines on the test sets and write
DIR/EVALUATION.md (tables and targets), DIR/evaluation.png and DIR/results.json. The figure also
shows one slice of a real 0.055 T scan reconstructed by the default chain (`--real-scan`).

    adacsc evaluate -o docs/evaluation [--images 12] [--images-256 24] [--no-bart] [--blackbox unet_blackbox]
        [--headline-into README.md --headline-into docs/MODEL_CARD.md]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

REAL_SCAN = "lowfield_0055T_FLAIR.h5"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `evaluate` on an argparse subparsers object."""
    from adacsc.evaluation.protocol import EvaluationSettings

    d = EvaluationSettings()
    p = subparsers.add_parser(
        "evaluate", help="evaluate learned-map CSC against its baselines on the test sets",
        description="Tune the baselines on validation slices, run zero-filled, scalar CSC, learned-map CSC "
                    "(training, permuted and unseen dictionaries), the black-box U-Net and BART pics on the "
                    "in-distribution and out-of-distribution test sets; write a markdown report, a PNG "
                    "figure and the per-image scores.")
    p.add_argument("-o", "--output", type=Path, default=Path("docs/evaluation"), metavar="DIR",
                   help="output folder [docs/evaluation]")
    p.add_argument("--images", type=int, default=d.images, help=f"slices per test set of the 160 grid [{d.images}]")
    p.add_argument("--images-256", type=int, default=d.images_256,
                   help=f"test slices of the 256 grid [{d.images_256}]")
    p.add_argument("--val-images", type=int, default=d.val_images,
                   help=f"validation slices for tuning [{d.val_images}]")
    p.add_argument("--iterations", type=int, default=d.iterations,
                   help="FISTA iterations [the count the weights were trained with]")
    p.add_argument("--weights", default=d.weights, help=f"map-network weights name [{d.weights}]")
    p.add_argument("--dictionary", default=d.dictionary, help=f"training dictionary name [{d.dictionary}]")
    p.add_argument("--unseen-dictionary", default=d.unseen_dictionary,
                   help=f"dictionary never seen in training [{d.unseen_dictionary}]")
    p.add_argument("--blackbox", default="unet_blackbox", metavar="NAME|FILE",
                   help="black-box U-Net weights: a name in the shipped baselines folder or a .safetensors "
                        "file [unet_blackbox]")
    p.add_argument("--no-blackbox", action="store_true", help="leave the black-box U-Net out")
    p.add_argument("--no-bart", action="store_true", help="leave BART pics out")
    p.add_argument("--real-scan", default=REAL_SCAN, metavar="NAME",
                   help=f"bundled real scan whose middle slice the figure shows [{REAL_SCAN}]")
    p.add_argument("--scalar-grid", type=_grid, default=d.scalar_grid, metavar="L1,L2,...",
                   help="scalar CSC lambdas tried in tuning (normalised units) [%(default)s]")
    p.add_argument("--bart-grid", type=_grid, default=d.bart_grid, metavar="L1,L2,...",
                   help="BART lambdas tried in tuning [%(default)s]")
    p.add_argument("--grids", type=_grids, default=d.grids, metavar="256,160",
                   help="test grids to run: 256 (held-out subject and Colin27 test slabs, the headline) and/or "
                        "160 (Colin27, macaque, phantom) [256,160]")
    p.add_argument("--grid-only", action="store_true",
                   help="tune by the plain grid search, without widening past an end or refining to 2^(1/4) "
                        "(smoke runs only: the report flags values at an end of the grid)")
    p.add_argument("--report-only", action="store_true",
                   help="re-render DIR/EVALUATION.md from DIR/results.json (after a change to the report's text); "
                        "nothing is re-run")
    p.add_argument("--headline-into", type=Path, action="append", default=[], metavar="FILE",
                   help="also rewrite the headline block (held-out table and target gaps) of this markdown "
                        "file, e.g. README.md and docs/MODEL_CARD.md; repeatable")
    p.add_argument("--figure", action="store_true",
                   help="with --report-only: redraw DIR/evaluation.png too (recomputes its few example slices)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, or auto [cpu]")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch default]")
    p.set_defaults(func=run)
    return p


def _grid(text: str) -> tuple[float, ...]:
    """A comma-separated list of positive lambdas."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"lambdas must be > 0, got {text!r}")
    return values


def _grids(text: str) -> tuple[str, ...]:
    """A comma-separated list of test grid keys."""
    from adacsc.evaluation.protocol import GRID_KEYS

    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    if not keys or any(k not in GRID_KEYS for k in keys):
        raise argparse.ArgumentTypeError(f"expected grid keys from {', '.join(GRID_KEYS)}, got {text!r}")
    return tuple(k for k in GRID_KEYS if k in keys)


def _blackbox_file(value: str) -> Path:
    from adacsc import resources

    path = Path(value)
    if path.suffix == resources.BASELINE.suffix:
        if not path.is_file():
            raise FileNotFoundError(f"black-box weights file {path} does not exist")
        return path
    try:
        return resources.resolve(resources.BASELINE, value)
    except resources.ResourceError as err:
        raise FileNotFoundError(f"{err}; train them with `adacsc train --model unet-blackbox` or pass "
                                "--no-blackbox") from None


def run(args: argparse.Namespace) -> int:
    """Run the evaluation and write the report."""
    import torch  # here: `adacsc --help` must not pay for importing torch

    from adacsc.core.device import resolve_device
    from adacsc.evaluation.protocol import EvaluationSettings, run_evaluation
    from adacsc.evaluation.report import write_figure, write_json, write_markdown
    from adacsc.training.provenance import git_commit

    if args.report_only:
        return _report_only(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in ("images", "images_256", "val_images"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.iterations < 0:
        raise ValueError("--iterations must be at least 1 (or 0: the count the weights were trained with)")
    if "256" in args.grids:
        from adacsc.training.slices import HELD_OUT_VOLUME
        from adacsc.training.volumes import source_path

        source_path(HELD_OUT_VOLUME)  # FileNotFoundError naming the package, before minutes of work
    if not args.no_bart:
        from adacsc.evaluation.bart import BartError, find_bart

        try:
            find_bart()
        except BartError as err:  # checked before minutes of work, with the way out
            raise ValueError(f"{err}, or pass --no-bart to leave the BART baselines out") from err
    settings = EvaluationSettings(
        images=args.images, images_256=args.images_256, val_images=args.val_images, iterations=args.iterations,
        weights=args.weights,
        dictionary=args.dictionary, unseen_dictionary=args.unseen_dictionary,
        blackbox=None if args.no_blackbox else str(_blackbox_file(args.blackbox)),
        bart=not args.no_bart, device=str(resolve_device(args.device)), scalar_grid=args.scalar_grid,
        bart_grid=args.bart_grid, grids=args.grids, refine=not args.grid_only)
    args.output.mkdir(parents=True, exist_ok=True)
    result = run_evaluation(settings)
    result["provenance"] = {"command": getattr(args, "command_line", None) or "adacsc evaluate",
                            "commit": git_commit().get("commit"),
                            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    write_json(result, args.output / "results.json")  # first: the numbers survive whatever follows
    figure = write_figure(result, args.output / "evaluation.png", real_example(args.real_scan, result))
    report = write_markdown(result, args.output / "EVALUATION.md", figure=figure.name)
    _write_headlines(result, args.headline_into)
    log.info("wrote %s, %s and %s (%.1f min)", report, figure, args.output / "results.json",
             result["seconds"] / 60)
    return 0


def _report_only(args: argparse.Namespace) -> int:
    """Re-render DIR/EVALUATION.md from DIR/results.json; with --figure also redraw the figure
    (its examples recomputed with the stored settings and tuned lambdas)."""
    import json

    from adacsc.evaluation.report import write_figure, write_markdown
    from adacsc.training.provenance import git_commit

    folder = args.output
    source = folder / "results.json"
    if not source.is_file():
        raise FileNotFoundError(f"--report-only needs {source}, written by an earlier `adacsc evaluate -o {folder}`")
    result = json.loads(source.read_text())
    if "provenance" not in result:
        raise ValueError(f"{source} records no provenance (command, commit, date): re-run the evaluation")
    figure = folder / "evaluation.png"
    if args.figure:
        from adacsc.evaluation.protocol import figure_examples

        result["examples"] = figure_examples(result)
        write_figure(result, figure, real_example(args.real_scan, result))
        del result["examples"]
    commit = git_commit().get("commit")
    if commit and commit != result["provenance"].get("commit"):
        result["provenance"]["report_commit"] = commit
    report = write_markdown(result, folder / "EVALUATION.md", figure=figure.name if figure.is_file() else None)
    source.write_text(json.dumps(result, indent=1))
    _write_headlines(result, args.headline_into)
    log.info("re-rendered %s from %s", report, source)
    return 0


def _write_headlines(result: dict, paths: list[Path]) -> None:
    """Rewrite the headline block of the --headline-into documents."""
    if paths:
        from adacsc.evaluation.headline import write_headline

        write_headline(result, paths)
        log.info("rewrote the headline of %s", ", ".join(str(p) for p in paths))


def real_example(scan: str, result: dict) -> dict:
    """The figure's real-scan row (adacsc.evaluation.real_scan): the middle slice of the bundled
    `scan` through the default chain with the result's weights, dictionary and iterations (complex
    output), beside the baselines on the chain's coil-combined data."""
    import tempfile

    import h5py
    import ismrmrd
    import numpy as np

    from adacsc.chain.config import load_chain
    from adacsc.commands.recon import DEFAULT_CONFIG
    from adacsc.evaluation import real_scan
    from adacsc.replay import replay
    from adacsc.resources import bundled_scan

    weights, dictionary, iterations = (result["settings"][k] for k in ("weights", "dictionary", "iterations"))
    overrides = {"weights": weights, "dictionary": dictionary, "send_zero_filled": "true", "send_maps": "true",
                 "csc.output": "complex"}
    if iterations:
        overrides["iterations"] = str(iterations)
    chain = load_chain(DEFAULT_CONFIG).with_overrides(overrides)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "real.h5"
        replay(bundled_scan(scan), out, chain)
        with h5py.File(out, "r") as f:
            group = sorted(f.keys())[-1]
        dataset = ismrmrd.Dataset(str(out), group, create_if_needed=False)
        try:
            images = {}
            for key, name in (("reconstruction", "image_1"), ("zero_filled", "image_2"), ("maps", "image_3")):
                series = sorted((dataset.read_image(name, i) for i in range(dataset.number_of_images(name))),
                                key=lambda im: im.slice)
                images[key] = series[len(series) // 2]
        finally:
            dataset.close()
    meta = ismrmrd.Meta.deserialize(images["reconstruction"].attribute_string)
    chain_slice = {"reconstruction": images["reconstruction"].data[0, 0],
                   "zero_filled": np.ascontiguousarray(images["zero_filled"].data[0, 0], dtype=np.complex64),
                   "maps": np.abs(images["maps"].data[0, 0]), "noise_std": float(meta["NoiseLevel"]),
                   "super_resolution": int(meta["SuperResolution"])}
    return real_scan.real_example(f"real 0.055 T scan {scan}, middle slice (default chain)", chain_slice, result)
