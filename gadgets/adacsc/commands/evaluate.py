"""`adacsc evaluate`: compare learned-map CSC with its baselines on the test sets and write
DIR/EVALUATION.md (tables and targets), DIR/evaluation.png and DIR/results.json.

    adacsc evaluate -o docs/evaluation [--images 12] [--no-bart] [--blackbox unet_blackbox]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path


log = logging.getLogger(__name__)


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
    p.add_argument("--images", type=int, default=d.images, help=f"slices per test set [{d.images}]")
    p.add_argument("--val-images", type=int, default=d.val_images,
                   help=f"validation slices for tuning [{d.val_images}]")
    p.add_argument("--iterations", type=int, default=d.iterations, help=f"FISTA iterations [{d.iterations}]")
    p.add_argument("--weights", default=d.weights, help=f"map-network weights name [{d.weights}]")
    p.add_argument("--dictionary", default=d.dictionary, help=f"training dictionary name [{d.dictionary}]")
    p.add_argument("--unseen-dictionary", default=d.unseen_dictionary,
                   help=f"dictionary never seen in training [{d.unseen_dictionary}]")
    p.add_argument("--blackbox", default="unet_blackbox", metavar="NAME|FILE",
                   help="black-box U-Net weights: a name in the shipped baselines folder or a .safetensors "
                        "file [unet_blackbox]")
    p.add_argument("--no-blackbox", action="store_true", help="leave the black-box U-Net out")
    p.add_argument("--no-bart", action="store_true", help="leave BART pics out")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, or auto [cpu]")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch default]")
    p.set_defaults(func=run)
    return p


def _blackbox_file(value: str) -> Path:
    from adacsc.core.weights import validate_weights_name
    from adacsc.training.blackbox import shipped_baselines_dir

    path = Path(value)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise FileNotFoundError(f"black-box weights file {path} does not exist")
        return path
    path = shipped_baselines_dir() / validate_weights_name(value)
    if not path.is_file():
        raise FileNotFoundError(f"no black-box weights named {value!r} in {shipped_baselines_dir()}; train them "
                                "with `adacsc train --model unet-blackbox` or pass --no-blackbox")
    return path


def run(args: argparse.Namespace) -> int:
    """Run the evaluation and write the report."""
    import torch  # here: `adacsc --help` must not pay for importing torch

    from adacsc.core.device import resolve_device
    from adacsc.evaluation.protocol import EvaluationSettings, run_evaluation
    from adacsc.evaluation.report import write_figure, write_json, write_markdown
    from adacsc.training.train import git_commit

    if args.threads:
        torch.set_num_threads(args.threads)
    for name in ("images", "val_images", "iterations"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if not args.no_bart:
        from adacsc.evaluation.bart import BartError, find_bart

        try:
            find_bart()
        except BartError as err:  # checked before minutes of work, with the way out
            raise ValueError(f"{err}, or pass --no-bart to leave the BART baselines out") from err
    settings = EvaluationSettings(
        images=args.images, val_images=args.val_images, iterations=args.iterations, weights=args.weights,
        dictionary=args.dictionary, unseen_dictionary=args.unseen_dictionary,
        blackbox=None if args.no_blackbox else str(_blackbox_file(args.blackbox)),
        bart=not args.no_bart, device=str(resolve_device(args.device)))
    args.output.mkdir(parents=True, exist_ok=True)
    result = run_evaluation(settings)
    figure = write_figure(result, args.output / "evaluation.png")
    write_json(result, args.output / "results.json")
    report = write_markdown(result, args.output / "EVALUATION.md",
                            command=getattr(args, "command_line", None) or "adacsc evaluate",
                            figure=figure.name, commit=git_commit().get("commit"),
                            date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    log.info("wrote %s, %s and %s (%.1f min)", report, figure, args.output / "results.json",
             result["seconds"] / 60)
    return 0
