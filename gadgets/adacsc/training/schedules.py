"""Training schedules of `adacsc train`: every number that decides what a training run does.

A schedule is data (a frozen dataclass, recorded in full in checkpoints and in the provenance of
the weights it produces); `get_schedule(name, **overrides)` returns a named one, optionally with
fields replaced (tests and experiments).

Named schedules
  tiny      seconds; small crops, few filters and iterations: the test suite's smoke run.
  cpu-30m   about 30 minutes on a 2-core CPU (shared machine): a shortened cpu-2h.
  cpu-2h    about 2 hours on a 2-core CPU: 96x96 crops, batch 1, at most 64 filters per batch,
            20 unrolled FISTA iterations, the light network.
  cpu-lowfield  about 45 minutes on one CPU thread, for the scans adacsc meets: the noise-aware
            network ("noise" preset), training slices at 0.7-1.5 mm pixels, rectangular crops
            of 96-128 pixels, noise up to 0.45, 32 unrolled iterations (the inference count),
            validation on the 256 grid at 0.72 mm; cpu-lowfield-tv the same with the TV low-pass.
  cpu-lowfield-adaptive  fine-tunes the cpu-lowfield-tv weights (netv3_lowfield_tv) into the
            "noise-tv" network, which also reads the TV part's filter responses and sets the TV
            weight per pixel; its new parts start as no-ops (adacsc.training.finetune).
  cpu-lowfield-adaptive-lrnew  the same with the TV-weight U-Net it adds trained at its own
            rate (lr_new 5e-3; at 5e-4 its zero head barely moves).
  gpu       a longer run for one GPU, the design of cpu-lowfield-tv at full size: crops of up to
            144 x 144 (the 1.5 mm slices are 146 wide), batch 4, every filter of the drawn
            dictionary, lr 1e-4 as published.

Learning rates. The map network uses Adam with a linear warm-up over `warmup_steps` and a cosine
decay to `lr * final_lr_fraction`; the low-pass weight is learned as log(beta) with its own Adam
rate `lr_beta` (same decay). Short schedules use a larger network rate than the published 1e-4:
the light network has few parameters and must move in a few hundred steps.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from adacsc.core.reconstruct import DEFAULT_TV_WEIGHT, LOWPASS_KINDS
from adacsc.training.lowfield import LowFieldConfig

__all__ = ["Schedule", "SCHEDULES", "get_schedule", "schedule_names", "lr_factor"]


@dataclass(frozen=True)
class Schedule:
    """One training schedule (see the module docstring)."""

    name: str
    steps: int  # optimiser steps
    batch_size: int = 1
    crop: int = 96  # training crops (crop x crop) of the slices; the reconstruction grid in training
    crop_min: int | None = None  # rectangular crops: each side drawn in [crop_min, crop] (even)
    image_size: int = 160  # size of the slices loaded by adacsc.training.slices.load_split
    # training slices at these pixel sizes (one set each, field of view about 220 mm; a batch
    # draws one set); empty: one set of image_size slices at the default field of view
    pixel_sizes_mm: tuple[float, ...] = ()
    val_pixel_mm: float | None = None  # pixel size of the validation slices (None: the default)
    lowpass: str = "tikhonov"  # the low-pass part: "tikhonov" (published) or "tv"
    tv_weight: float = DEFAULT_TV_WEIGHT  # TV weight in units of the noise std (lowpass "tv")
    max_filters: int | None = 64  # random subset of at most this many filters of the drawn dictionary
    train_iterations: int = 20  # unrolled FISTA iterations in training
    network: str = "light"  # NetworkConfig preset
    init_weights: str | None = None  # start from these trained weights (a name; adacsc.training.finetune)
    lr: float = 1e-3  # Adam, map network
    # Adam rate of the parts a fine-tuning run adds (adacsc.training.finetune.ADDED_PARTS); None: lr.
    # Zero-initialised heads move too little at the small rate that keeps trained parts in place.
    lr_new: float | None = None
    lr_beta: float = 0.02  # Adam, log(beta)
    initial_beta: float = 1.0
    warmup_steps: int = 20
    final_lr_fraction: float = 0.1
    grad_clip: float = 1.0  # max gradient norm (0: no clipping)
    # "relative": per image, MSE / MSE of the zero-filled image (every noise level counts alike);
    # "mse": plain MSE over the batch
    loss: str = "relative"
    block_fraction: tuple[float, float] = (0.25, 0.75)  # acquired k-space block / grid, per axis
    noise_level: tuple[float, float] = (0.02, 0.2)  # noise-to-signal RMS ratio of the acquired data
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    # periodic validation (cheap): `val_images` validation slices, each with one noise level and
    # one held-out dictionary (both cycled), block 0.5, `train_iterations` FISTA iterations
    validate_every: int = 100
    val_images: int = 6
    val_noise_levels: tuple[float, ...] = (0.05, 0.15)  # cycled over the images
    # final validation, written to the summary and the weights' provenance: maps against a grid
    # of scalar lambdas on `final_val_images` validation slices, both test noise levels, every
    # held-out dictionary, at the inference iteration count
    final_validation: bool = True
    final_val_images: int = 12
    final_val_iterations: int = 64
    lambda_grid: tuple[float, ...] = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32)

    def __post_init__(self) -> None:
        def positive_int(name: str, minimum: int = 1) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"schedule {self.name!r}: {name} must be an integer >= {minimum}, got {value!r}")

        for name in ("steps", "batch_size", "crop", "image_size", "train_iterations", "log_every",
                     "checkpoint_every", "keep_checkpoints", "final_val_images", "final_val_iterations"):
            positive_int(name)
        for name in ("warmup_steps", "validate_every", "val_images"):
            positive_int(name, 0)
        if self.max_filters is not None:
            positive_int("max_filters")
        if self.crop > self.image_size:
            raise ValueError(f"schedule {self.name!r}: crop {self.crop} larger than image_size {self.image_size}")
        if self.crop_min is not None and not 2 <= self.crop_min <= self.crop:
            raise ValueError(f"schedule {self.name!r}: crop_min must lie in [2, crop={self.crop}]")
        if any(not p > 0 for p in self.pixel_sizes_mm) or (self.val_pixel_mm is not None and not self.val_pixel_mm > 0):
            raise ValueError(f"schedule {self.name!r}: pixel sizes must be > 0")
        if self.lowpass not in LOWPASS_KINDS:
            raise ValueError(f"schedule {self.name!r}: lowpass must be one of {LOWPASS_KINDS}, got {self.lowpass!r}")
        if not self.tv_weight > 0:
            raise ValueError(f"schedule {self.name!r}: tv_weight must be > 0")
        for name in ("lr", "lr_beta", "initial_beta"):
            if not getattr(self, name) > 0:
                raise ValueError(f"schedule {self.name!r}: {name} must be > 0")
        if self.lr_new is not None and not self.lr_new > 0:
            raise ValueError(f"schedule {self.name!r}: lr_new must be > 0 (or None)")
        if not 0 < self.final_lr_fraction <= 1:
            raise ValueError(f"schedule {self.name!r}: final_lr_fraction must lie in (0, 1]")
        if self.loss not in ("relative", "mse"):
            raise ValueError(f"schedule {self.name!r}: loss must be 'relative' or 'mse', got {self.loss!r}")
        if self.grad_clip < 0:
            raise ValueError(f"schedule {self.name!r}: grad_clip must be >= 0")
        try:
            self.lowfield  # the degradation checks its own ranges
        except ValueError as exc:
            raise ValueError(f"schedule {self.name!r}: {exc}") from None
        if not self.lambda_grid or any(v <= 0 for v in self.lambda_grid):
            raise ValueError(f"schedule {self.name!r}: lambda_grid must hold positive values")

    @property
    def lowfield(self) -> LowFieldConfig:
        """The training degradation: random block fraction and noise level ranges."""
        return LowFieldConfig(block_fraction=tuple(self.block_fraction), noise_level=tuple(self.noise_level))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Schedule":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown schedule fields {unknown}")
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        return cls(**values)


SCHEDULES: dict[str, Schedule] = {
    "tiny": Schedule(
        name="tiny", steps=12, batch_size=1, crop=32, image_size=48, max_filters=6, train_iterations=4,
        lr=1e-2, lr_beta=0.05, warmup_steps=0, final_lr_fraction=1.0, log_every=2, checkpoint_every=4,
        validate_every=6, val_images=2, final_val_images=2, final_val_iterations=4,
        lambda_grid=(0.02, 0.08, 0.32),
    ),
    "cpu-30m": Schedule(
        name="cpu-30m", steps=1200, batch_size=1, crop=96, max_filters=64, train_iterations=20,
        lr=3e-3, lr_beta=0.02, warmup_steps=30, checkpoint_every=100, validate_every=200, val_images=6,
        final_val_images=8,
    ),
    "cpu-2h": Schedule(
        name="cpu-2h", steps=4500, batch_size=1, crop=96, max_filters=64, train_iterations=20,
        lr=2e-3, lr_beta=0.02, warmup_steps=50, checkpoint_every=100, validate_every=500, val_images=6,
        final_val_images=12,
    ),
    "cpu-lowfield": Schedule(
        name="cpu-lowfield", steps=3000, batch_size=1, crop=128, crop_min=96, image_size=256,
        pixel_sizes_mm=(0.7, 0.85, 1.0, 1.2, 1.5), val_pixel_mm=0.72, max_filters=32, train_iterations=32,
        network="noise", lr=2e-3, lr_beta=0.02, warmup_steps=50, block_fraction=(0.35, 0.75),
        noise_level=(0.02, 0.45), checkpoint_every=100, validate_every=500, val_images=6,
        val_noise_levels=(0.05, 0.15, 0.3), final_val_images=8, final_val_iterations=32,
        lambda_grid=(0.02, 0.04, 0.08, 0.16, 0.32, 0.64),
    ),
    "gpu": Schedule(
        name="gpu", steps=20000, batch_size=4, crop=144, crop_min=96, image_size=256,
        pixel_sizes_mm=(0.7, 0.85, 1.0, 1.2, 1.5), val_pixel_mm=0.72, max_filters=None, train_iterations=32,
        network="noise", lowpass="tv", lr=1e-4, lr_beta=0.01, warmup_steps=200, block_fraction=(0.35, 0.75),
        noise_level=(0.02, 0.45), log_every=50, checkpoint_every=500, validate_every=1000, val_images=12,
        val_noise_levels=(0.05, 0.15, 0.3), final_val_images=36, final_val_iterations=32,
        lambda_grid=(0.02, 0.04, 0.08, 0.16, 0.32, 0.64),
    ),
}


SCHEDULES["cpu-lowfield-tv"] = dataclasses.replace(SCHEDULES["cpu-lowfield"], name="cpu-lowfield-tv", lowpass="tv")
SCHEDULES["cpu-lowfield-adaptive"] = dataclasses.replace(
    SCHEDULES["cpu-lowfield-tv"], name="cpu-lowfield-adaptive", steps=600, network="noise-tv",
    init_weights="netv3_lowfield_tv", lr=5e-4, warmup_steps=20, final_lr_fraction=0.2, validate_every=200,
    final_validation=False)
SCHEDULES["cpu-lowfield-adaptive-lrnew"] = dataclasses.replace(
    SCHEDULES["cpu-lowfield-adaptive"], name="cpu-lowfield-adaptive-lrnew", lr_new=5e-3)


def schedule_names() -> list[str]:
    return list(SCHEDULES)


def get_schedule(name: str, **overrides: Any) -> Schedule:
    """A named schedule, optionally with fields replaced."""
    try:
        base = SCHEDULES[name]
    except KeyError:
        raise ValueError(f"unknown schedule {name!r}; known: {', '.join(SCHEDULES)}") from None
    return dataclasses.replace(base, **overrides) if overrides else base


def lr_factor(step: int, schedule: Schedule) -> float:
    """Warm-up (linear) then cosine decay to final_lr_fraction; step counts from 0."""
    if schedule.warmup_steps and step < schedule.warmup_steps:
        return (step + 1) / schedule.warmup_steps
    span = max(1, schedule.steps - schedule.warmup_steps)
    progress = min(1.0, max(0.0, (step - schedule.warmup_steps) / span))
    floor = schedule.final_lr_fraction
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
