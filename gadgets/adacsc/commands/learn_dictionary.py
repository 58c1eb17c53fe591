"""`adacsc learn-dictionary`: learn a convolutional dictionary from the training slices.

    adacsc learn-dictionary -o DIR --filters K --size S --lambda L [--iterations N] [--images N] [--seed S]

Crops of the high-pass part of the *training* split only (adacsc.training.slices; never the
validation, test or out-of-distribution images) feed `adacsc.training.cdl.learn_dictionary`; the
result is written with `save_dictionary` as DIR/cdl_k{K}_{S}x{S}_l{L}[_s{seed}].npz, with its
provenance in the metadata: the command, the data (split, image size, source files and their
SHA-256, the crops' image ids and positions), the settings, the seed, the learning history, the
final objective and the learning time.

Also runnable as `python -m adacsc.commands.learn_dictionary ...`.
"""

from __future__ import annotations

import argparse
import logging
import platform
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)

_COMMAND = "adacsc learn-dictionary"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `learn-dictionary` on an argparse subparsers object."""
    from adacsc.training.cdl import CDLConfig

    d = CDLConfig()
    p = subparsers.add_parser(
        "learn-dictionary",
        help="learn a convolutional dictionary from the training slices",
        description=(
            "Convolutional dictionary learning on crops of high-pass training slices (Colin27 "
            "training slabs only). Writes DIR/cdl_k{K}_{S}x{S}_l{L}.npz with full provenance."),
    )
    p.add_argument("-o", "--output", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--filters", type=int, default=d.num_filters, metavar="K", help=f"number of filters [{d.num_filters}]")
    p.add_argument("--size", type=int, default=d.filter_size, metavar="S", help=f"filter size S x S, odd [{d.filter_size}]")
    p.add_argument("--lambda", dest="lam", type=float, default=d.lam, metavar="L",
                   help=f"l1 weight (images normalised to ~1, high-pass crops) [{d.lam}]")
    p.add_argument("--iterations", type=int, default=d.iterations, metavar="N",
                   help=f"outer (alternating) iterations [{d.iterations}]")
    p.add_argument("--images", type=int, default=d.crops, metavar="N",
                   help=f"number of training crops (each from a training slice) [{d.crops}]")
    p.add_argument("--crop-size", type=int, default=d.crop_size, metavar="C", help=f"crop size C x C [{d.crop_size}]")
    p.add_argument("--code-steps", type=int, default=d.code_steps, help=f"FISTA iterations per outer iteration [{d.code_steps}]")
    p.add_argument("--filter-steps", type=int, default=d.filter_steps,
                   help=f"filter gradient steps per outer iteration [{d.filter_steps}]")
    p.add_argument("--beta", type=float, default=d.beta, help=f"high-pass beta (the solver's low-pass) [{d.beta}]")
    p.add_argument("--data-size", type=int, default=160, metavar="N",
                   help="training slices are N x N over the 220 mm field of view [160]")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (crops and initial filters) [{d.seed}]")
    p.add_argument("--name", default=None, help="dictionary name / file stem [cdl_k{K}_{S}x{S}_l{L}[_s{seed}]]")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads; the many medium-sized FFTs run fastest on one thread, "
                        "up to 10x faster than two on a busy 2-core machine [1]")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def run(args: argparse.Namespace) -> int:
    """Learn one dictionary and write it."""
    import torch  # here: `adacsc --help` must not pay for importing torch

    from adacsc.io.dictionary_file import save_dictionary
    from adacsc.training.cdl import CDLConfig, dictionary_name, learn_dictionary, training_crops
    from adacsc.training.slices import DATA_VERSION, load_split_with_records
    from adacsc.training.volumes import SOURCES, file_sha256, source_path

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    config = CDLConfig(num_filters=args.filters, filter_size=args.size, lam=args.lam,
                       iterations=args.iterations, code_steps=args.code_steps,
                       filter_steps=args.filter_steps, crops=args.images, crop_size=args.crop_size,
                       beta=args.beta, seed=args.seed)
    name = args.name or dictionary_name(args.filters, args.size, args.lam, args.seed)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.npz"

    t0 = time.perf_counter()
    images, records = load_split_with_records("train", args.data_size)
    crops, where = training_crops(images, config.crops, config.crop_size, seed=config.seed,
                                  beta=config.beta, taper=config.taper)
    log.info("CDL %s: K=%d %dx%d lambda=%g on %d crops %dx%d of %d training slices (%dx%d)",
             name, config.num_filters, config.filter_size, config.filter_size, config.lam,
             crops.shape[0], config.crop_size, config.crop_size, len(records), args.data_size, args.data_size)
    command = getattr(args, "command_line", _COMMAND)
    files = {}
    for key in ("colin27_ch2better", "colin27_ch2"):
        p = source_path(key)
        files[key] = {"file": SOURCES[key].file, "path": str(p), "sha256": file_sha256(str(p))}
    metadata = {
        "created_by": command,
        "description": (f"Learned convolutional dictionary: {config.num_filters} filters of "
                        f"{config.filter_size}x{config.filter_size}, l1 weight {config.lam:g}, "
                        "from high-pass crops of the Colin27 training slabs (adacsc.training)."),
        "data": {
            "split": "train", "image_size": args.data_size, "num_training_slices": len(records),
            "data_version": DATA_VERSION, "sources": files,
            "crops": [{"image": records[i].id, "row": r, "col": c} for i, r, c in where],
        },
        "seed": config.seed,
        "software": {"torch": torch.__version__, "python": platform.python_version(),
                     "git_commit": _git_commit(), "torch_threads": threads},
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    result = learn_dictionary(crops, config, name=name, metadata=metadata,
                              progress=not args.no_progress)
    seconds = time.perf_counter() - t0
    result.dictionary.metadata["learning_seconds"] = round(result.seconds, 1)
    result.dictionary.metadata["total_seconds"] = round(seconds, 1)
    save_dictionary(result.dictionary, path)
    f = result.final
    log.info("wrote %s: objective %.5g (data %.4g, l1 %.4g per crop), relative residual %.3f, "
             "density %.4f, %d/%d filters used, %.0f s", path, f["objective"], f["data"], f["l1"],
             f["relative_residual"], f["density"], f["filters_used"], config.num_filters, seconds)
    return 0
