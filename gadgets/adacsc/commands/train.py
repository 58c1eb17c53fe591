"""`adacsc train`: train NET_Theta V3 end to end through the unrolled CSC solver, with a random
dictionary per batch (adacsc.training.trainer).

    adacsc train -o DIR [--schedule cpu-2h|cpu-30m|gpu|tiny] [--resume] [--device auto] [--seed S]

Data: the training and validation slices of adacsc.training.slices (never the test or
out-of-distribution sets). Dictionaries: the training pool and the held-out validation pool
(default: the roles of docs/DATA.md, adacsc.training.family.TRAINING_DICTIONARIES /
VALIDATION_DICTIONARIES; or --train-dictionaries / --val-dictionaries; the evaluation-only
K = 128 dictionary is refused).
Writes DIR/checkpoints/ (resumable with --resume), DIR/NAME.safetensors (the weights, with beta
and full provenance) and DIR/summary.json (history and validation: maps against the best scalar
lambda on the held-out dictionaries). With --model unet-blackbox: the black-box U-Net reference of
`adacsc evaluate` (adacsc.training.blackbox) on the same data stream, DIR/unet_blackbox.safetensors.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `train` on an argparse subparsers object."""
    from adacsc.training.schedules import schedule_names

    p = subparsers.add_parser(
        "train",
        help="train the NET_Theta V3 map network through the unrolled CSC solver",
        description=(
            "Train NET_Theta V3 end to end through the unrolled CSC solver with a random training "
            "dictionary per batch; validate on held-out dictionaries and the validation slices. "
            "Resumable (--resume), device-agnostic."),
    )
    p.add_argument("-o", "--output", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--schedule", default="cpu-2h", choices=schedule_names(),
                   help="training schedule (adacsc.training.schedules) [cpu-2h]")
    p.add_argument("--model", default="netv3", choices=("netv3", "unet-blackbox"),
                   help="netv3: the map network through the unrolled solver; unet-blackbox: the black-box "
                        "image-to-image U-Net reference of `adacsc evaluate`, same data and schedule [netv3]")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in DIR")
    p.add_argument("--device", default="auto", help="auto (CUDA, MPS, else CPU), cpu, cuda, cuda:N [auto]")
    p.add_argument("--seed", type=int, default=0, help="random seed (initialisation and data stream) [0]")
    p.add_argument("--name", default=None,
                   help="file stem of the weights written [netv3_light, or unet_blackbox with --model unet-blackbox]")
    p.add_argument("--train-dictionaries", default=None, metavar="A,B,...",
                   help="training dictionary names [the training role of docs/DATA.md]")
    p.add_argument("--val-dictionaries", default=None, metavar="A,B,...",
                   help="held-out validation dictionary names [the validation role of docs/DATA.md]")
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop (with a checkpoint) once N steps are done; continue later with --resume")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch default]")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    p.set_defaults(func=run)
    return p


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("empty dictionary list")
    return names


def _data_provenance(schedule, train_records: list, val_records: list) -> dict:
    from adacsc.training.slices import DATA_VERSION
    from adacsc.training.volumes import SOURCES, file_sha256, source_path

    files = {}
    for key in sorted({r.source for r in train_records + val_records}):
        if key in SOURCES:
            path = source_path(key)
            files[key] = {"file": SOURCES[key].file, "sha256": file_sha256(str(path))}
    return {
        "module": "adacsc.training.slices", "data_version": DATA_VERSION, "image_size": schedule.image_size,
        "train": {"split": "train", "images": len(train_records), "pixel_sizes_mm": list(schedule.pixel_sizes_mm)},
        "validation": {"split": "val", "images": len(val_records), "pixel_mm": schedule.val_pixel_mm},
        "sources": files,
        "degradation": "adacsc.training.lowfield: random centred block, random noise level, "
                       "super-resolution on the crop grid (training); 50% block, test noise levels (validation)",
    }


def run(args: argparse.Namespace) -> int:
    """Train (or resume) and write the weights."""
    import torch  # here: `adacsc --help` must not pay for importing torch

    from adacsc.training.schedules import get_schedule
    from adacsc.training.slices import load_split_with_records, training_size
    from adacsc.core.device import resolve_device
    from adacsc.training.pools import DictionaryPool, check_pools, default_dictionary_pools
    from adacsc.training.provenance import git_commit
    from adacsc.training.trainer import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    schedule = get_schedule(args.schedule)
    device = resolve_device(args.device)
    train_names, val_names = default_dictionary_pools()
    train_names = _names(args.train_dictionaries) or train_names
    val_names = _names(args.val_dictionaries) or val_names
    check_pools(train_names, val_names)
    train_pool = DictionaryPool.from_names(train_names)
    val_pool = DictionaryPool.from_names(val_names)

    t0 = time.perf_counter()
    if schedule.pixel_sizes_mm:
        train_sets = [load_split_with_records("train", training_size(p), pixel_mm=p) for p in schedule.pixel_sizes_mm]
    else:
        train_sets = [load_split_with_records("train", schedule.image_size)]
    train_images = [images for images, _ in train_sets]
    train_records = train_sets[0][1]
    val_images, val_records = load_split_with_records("val", schedule.image_size, pixel_mm=schedule.val_pixel_mm)
    log.info("data: %d training slices in %d set(s) of %s pixels, %d validation slices of %dx%d (%.0f s); "
             "dictionaries: train %s, validation %s; schedule %s (%d steps), device %s, %d threads",
             len(train_records), len(train_images), ", ".join(f"{images.shape[-1]}" for images in train_images),
             len(val_records), schedule.image_size, schedule.image_size, time.perf_counter() - t0,
             ", ".join(train_names), ", ".join(val_names), schedule.name, schedule.steps, device,
             torch.get_num_threads())
    command = getattr(args, "command_line", None) or "adacsc train"
    provenance = {
        "created_by": command,
        "description": ("NET_Theta V3 (dictionary-agnostic sparsity-level-map network) trained end to end "
                        "through the unrolled CSC solver with a random training dictionary per batch "
                        "(adacsc.training.trainer)."),
        "git": git_commit(),
        "data": _data_provenance(schedule, train_records, val_records),
    }
    if args.model == "unet-blackbox":
        return _run_blackbox(args, schedule, device, train_images, val_images, provenance)
    trainer = Trainer(schedule, args.output, train_images=train_images, val_images=val_images,
                      train_dictionaries=train_pool, val_dictionaries=val_pool, seed=args.seed,
                      device=device, name=args.name or "netv3_light", provenance=provenance,
                      progress=not args.no_progress)
    result = trainer.run(resume=args.resume, stop_after=args.stop_after)
    if result is None:
        return 0
    if result.validation is not None:
        mean = result.validation["mean"]
        for level, m in mean.items():
            if level == "all_levels":
                continue
            log.info("validation (noise %s, %d images, %d iterations, held-out dictionaries): zero-filled "
                     "%.2f dB, best scalar for this noise level %.2f dB, maps %.2f dB (%+.2f dB)", level,
                     result.validation["images"], result.validation["iterations"], m["zero_filled"],
                     m.get("best_scalar", float("nan")), m.get("maps", float("nan")),
                     m.get("maps_minus_best_scalar", float("nan")))
        if "all_levels" in mean:
            m = mean["all_levels"]
            log.info("validation, one scalar for all noise levels: best scalar %.2f dB, maps %.2f dB (%+.2f dB)",
                     m.get("best_scalar", float("nan")), m.get("maps", float("nan")),
                     m.get("maps_minus_best_scalar", float("nan")))
    print(result.weights)
    return 0


def _run_blackbox(args: argparse.Namespace, schedule, device: torch.device, train_images: torch.Tensor,
                  val_images: torch.Tensor, provenance: dict) -> int:
    """Train the black-box U-Net reference on the same data stream and schedule (resumable)."""
    from adacsc.training.blackbox import train_blackbox

    provenance = {**provenance, "description": (
        "Black-box residual U-Net (zero-filled image -> image), the robustness reference of adacsc "
        "evaluate, trained on the same data stream and schedule as NET_Theta (adacsc.training.blackbox).")}
    path = train_blackbox(schedule, args.output, train_images=train_images, val_images=val_images, seed=args.seed,
                          device=device, provenance=provenance, name=args.name or "unet_blackbox",
                          progress=not args.no_progress, resume=args.resume, stop_after=args.stop_after)
    if path is not None:
        print(path)
    return 0
