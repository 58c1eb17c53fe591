"""The black-box reference of the evaluation: a residual U-Net from the zero-filled image to the
image, trained on the same data stream and schedule as NET_Theta (adacsc.training.trainer).

It knows nothing of dictionaries or the forward model beyond its input, so it shows what a plain
image-to-image network does in and out of distribution (the robustness reference of METHOD.md).
Weights are safetensors files with a JSON metadata entry (format "adacsc-blackbox-unet"); nothing
is unpickled. They live apart from the map-network weights, so the csc gadget never sees them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from adacsc.core.network import UNet, image_scale
from adacsc.io.weights_file import write_state
from adacsc.training import checkpoint
from adacsc.training.checkpoint import CheckpointError
from adacsc.training.lowfield import fixed_lowfield
from adacsc.metrics import magnitude_psnr
from adacsc.training.loss import image_loss
from adacsc.training.sampling import pick_evenly, sample_training_batch
from adacsc.training.schedules import Schedule, lr_factor

__all__ = ["BlackBoxConfig", "ImageUNet", "train_blackbox", "save_blackbox", "load_blackbox",
           "BLACKBOX_FORMAT"]

log = logging.getLogger(__name__)

BLACKBOX_FORMAT = "adacsc-blackbox-unet"
_METADATA_KEY = "adacsc"


@dataclass(frozen=True)
class BlackBoxConfig:
    """Size of the U-Net and its own optimiser settings (the rest comes from the schedule)."""

    base_channels: int = 32
    depth: int = 3
    lr: float = 1e-3
    batch_size: int = 4


class ImageUNet(nn.Module):
    """x0 (complex [B, H, W], zero-filled) -> x0 + U-Net(x0), real and imaginary parts as two
    channels, each image scaled by the robust scale of |x0| on the way in and back on the way out."""

    def __init__(self, config: BlackBoxConfig = BlackBoxConfig()) -> None:
        super().__init__()
        self.config = config
        self.unet = UNet(2, 2, base_channels=config.base_channels, depth=config.depth)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        scale = image_scale(x0)[:, None, None]
        z = torch.view_as_real((x0 / scale).to(torch.complex64)).permute(0, 3, 1, 2)
        out = (z + self.unet(z)).permute(0, 2, 3, 1).contiguous()
        return torch.view_as_complex(out) * scale


def save_blackbox(model: ImageUNet, path: str | os.PathLike[str], provenance: dict[str, Any]) -> Path:
    """Write the weights and their metadata (adacsc.io.weights_file.write_state)."""
    path = Path(path)
    meta = {"format": BLACKBOX_FORMAT, "config": asdict(model.config), "provenance": provenance}
    write_state(model, path, {_METADATA_KEY: json.dumps(meta, sort_keys=True)})
    return path


def load_blackbox(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> tuple[ImageUNet, dict]:
    """(model in eval mode, metadata) of a file written by save_blackbox; ValueError otherwise."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get(_METADATA_KEY, "{}"))
        state = load_file(str(path), device="cpu")
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read black-box weights {path}: {exc}") from None
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ValueError(f"cannot read black-box weights {path}: {exc}") from None
    if meta.get("format") != BLACKBOX_FORMAT:
        raise ValueError(f"{path} is not a black-box U-Net weights file (format {meta.get('format')!r})")
    model = ImageUNet(BlackBoxConfig(**meta["config"]))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not match the stored configuration: {exc}") from None
    return model.to(device).eval(), meta


def _validation_psnr(model: ImageUNet, images: torch.Tensor, levels: tuple[float, ...], seed: int,
                     device: torch.device) -> float:
    """Mean magnitude PSNR on validation slices at the test degradation (levels cycled)."""
    values = []
    with torch.inference_mode():
        for j in range(images.shape[0]):
            batch = fixed_lowfield(images[j:j + 1], levels[j % len(levels)], seed=seed + 1000, start_index=j)
            batch = batch.to(device)
            values.append(float(magnitude_psnr(model(batch.zero_filled()), batch.target).mean()))
    return float(np.mean(values))


@dataclass
class _Progress:
    """Where a black-box run stands: what a checkpoint keeps besides the weights and Adam's state."""

    step: int = 0
    elapsed: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    skipped: int = 0
    resumed_from: list[int] = field(default_factory=list)


def _state(progress: _Progress, schedule: Schedule, seed: int, name: str, config: BlackBoxConfig) -> dict[str, Any]:
    return {"format": checkpoint.CHECKPOINT_FORMAT, "version": checkpoint.CHECKPOINT_VERSION, "model": BLACKBOX_FORMAT,
            "step": progress.step, "elapsed_s": round(progress.elapsed, 3), "seed": seed, "name": name,
            "schedule": schedule.to_dict(), "config": asdict(config), "train_dictionaries": [],
            "skipped_steps": progress.skipped, "resumed_from": progress.resumed_from, "history": progress.history}


def _save_checkpoint(root: Path, model: ImageUNet, optimizer: torch.optim.Optimizer, progress: _Progress,
                     schedule: Schedule, seed: int, name: str) -> Path:
    tensors = checkpoint.adam_tensors(optimizer, list(model.named_parameters()))
    return checkpoint.write_checkpoint(
        root, progress.step, write_model=lambda path: save_blackbox(model, path, {"checkpoint_step": progress.step}),
        tensors=tensors, state=_state(progress, schedule, seed, name, model.config), keep=schedule.keep_checkpoints)


def _resume(folder: Path, model: ImageUNet, optimizer: torch.optim.Optimizer, schedule: Schedule, seed: int,
            device: torch.device) -> _Progress:
    """Load the weights, Adam's state and progress of `folder` into this run (refused for another run)."""
    state = checkpoint.read_state(folder)
    checkpoint.check_same_run(folder, state, schedule=schedule, seed=seed, train_dictionaries=[])
    if state.get("model") != BLACKBOX_FORMAT or state.get("config") != asdict(model.config):
        raise CheckpointError(f"{folder} is not a checkpoint of this black-box U-Net configuration")
    saved, _ = load_blackbox(folder / "model.safetensors", device)
    model.load_state_dict(saved.state_dict())
    checkpoint.restore_adam(optimizer, list(model.named_parameters()), checkpoint.read_tensors(folder), device)
    progress = _Progress(int(state["step"]), float(state.get("elapsed_s", 0.0)), list(state.get("history", [])),
                         int(state.get("skipped_steps", 0)), list(state.get("resumed_from", [])) + [int(state["step"])])
    log.info("resumed from %s: step %d of %d, %.0f s trained so far", folder, progress.step, schedule.steps,
             progress.elapsed)
    return progress


def train_blackbox(schedule: Schedule, out_dir: str | os.PathLike[str], *,
                   train_images: torch.Tensor | Sequence[torch.Tensor], val_images: torch.Tensor, config: BlackBoxConfig = BlackBoxConfig(), seed: int = 0,
                   device: torch.device | str = "cpu", provenance: dict[str, Any] | None = None,
                   name: str = "unet_blackbox", progress: bool = True, resume: bool = False,
                   stop_after: int | None = None) -> Path | None:
    """Train the black-box U-Net for `schedule.steps` steps on the schedule's data stream (crops,
    augmentation, random degradation; `config.batch_size` images per step, so the step counts and
    the wall time stay comparable with NET_Theta's) with the same relative loss, warm-up and cosine
    decay; write OUT/NAME.safetensors and return its path. `train_images` is one set of slices
    [N, S, S] or several (one per pixel size, as `adacsc train` loads them for schedules with
    `pixel_sizes_mm`); a batch draws one set, as for NET_Theta.

    Checkpoints go to OUT/checkpoints every `schedule.checkpoint_every` steps and on Ctrl-C; with
    `resume` the run continues from the newest one (the data stream depends only on seed and step,
    so a resumed run trains on the same batches). With `stop_after` it stops after that many steps
    with a checkpoint and returns None."""
    device = torch.device(device)
    stream = replace(schedule, batch_size=config.batch_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ImageUNet(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    sets = [train_images] if isinstance(train_images, torch.Tensor) else list(train_images)
    if not sets or any(images.ndim != 3 or min(images.shape[-2:]) < schedule.crop for images in sets):
        raise ValueError(f"training images [N, S, S] with S >= crop {schedule.crop} needed, got "
                         f"{[tuple(images.shape) for images in sets]}")
    images = [images.to(torch.complex64).contiguous() for images in sets]
    val = val_images[pick_evenly(val_images.shape[0], schedule.val_images)].to(torch.complex64)
    root = Path(out_dir) / "checkpoints"
    run = _Progress()
    folder = checkpoint.latest_checkpoint(root)
    if folder is not None:
        if not resume:
            raise CheckpointError(f"{out_dir} already holds a training run (checkpoint {folder.name}); pass --resume "
                                  "to continue it or choose another output folder")
        run = _resume(folder, model, optimizer, schedule, seed, device)
    elif resume:
        log.info("no checkpoint in %s: starting a new run", out_dir)
    target = schedule.steps if stop_after is None else min(schedule.steps, stop_after)
    bar = None
    if progress and run.step < target:
        from tqdm import tqdm

        bar = tqdm(total=target, initial=run.step, desc=f"train {name}", unit="step", dynamic_ncols=True)
    window: list[float] = []
    try:
        while run.step < target:
            t0 = time.perf_counter()
            window.append(_train_step(model, optimizer, images, stream, schedule, seed, run, device))
            run.elapsed += time.perf_counter() - t0
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{window[-1]:.3g}")
            done = run.step
            if done % schedule.log_every == 0 or done == schedule.steps:
                finite = [v for v in window if math.isfinite(v)]
                run.history.append({"step": done, "loss": float(np.mean(finite)) if finite else float("nan"),
                                    "seconds": round(run.elapsed, 1)})
                if bar is None:
                    log.info("step %d/%d: loss %.4g, %.0f s", done, schedule.steps, run.history[-1]["loss"], run.elapsed)
                window = []
            if schedule.validate_every and (done % schedule.validate_every == 0 or done == schedule.steps):
                psnr = _validation_psnr(model, val, tuple(schedule.val_noise_levels), seed, device)
                run.history.append({"step": done, "val_psnr": psnr, "seconds": round(run.elapsed, 1)})
                log.info("step %d/%d: validation PSNR %.2f dB", done, schedule.steps, psnr)
            if done % schedule.checkpoint_every == 0 or done == target:
                _save_checkpoint(root, model, optimizer, run, schedule, seed, name)
    except KeyboardInterrupt:
        log.warning("interrupted at step %d: writing a checkpoint", run.step)
        _save_checkpoint(root, model, optimizer, run, schedule, seed, name)
        raise
    finally:
        if bar is not None:
            bar.close()
    if run.step < schedule.steps:
        log.info("stopped at step %d of %d; continue with --resume", run.step, schedule.steps)
        return None
    record = {**(provenance or {}), "schedule": schedule.to_dict(), "seed": seed, "steps": schedule.steps,
              "training_seconds": round(run.elapsed, 1), "device": str(device),
              "torch_threads": torch.get_num_threads(), "history": run.history, "skipped_steps": run.skipped,
              "resumed_from": run.resumed_from, "parameters": sum(p.numel() for p in model.parameters()),
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = save_blackbox(model, Path(out_dir) / f"{name}.safetensors", record)
    log.info("wrote %s (%d steps, %.0f s)", path, schedule.steps, run.elapsed)
    return path


def _train_step(model: ImageUNet, optimizer: torch.optim.Optimizer, images: list[torch.Tensor], stream: Schedule,
                schedule: Schedule, seed: int, run: _Progress, device: torch.device) -> float:
    """One optimiser step on the batch the data stream draws for `run.step`; returns its loss."""
    batch, _ = sample_training_batch(images, stream, seed, run.step)
    batch = batch.to(device)
    for group in optimizer.param_groups:
        group["lr"] = model.config.lr * lr_factor(run.step, schedule)
    model.train()
    x0 = batch.zero_filled()
    loss = image_loss(model(x0), batch.target, x0 if schedule.loss == "relative" else None)
    optimizer.zero_grad(set_to_none=True)
    if torch.isfinite(loss):
        loss.backward()
        if schedule.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), schedule.grad_clip)
        optimizer.step()
    else:  # e.g. a crop of empty background: no signal, so no relative loss
        run.skipped += 1
        log.warning("step %d: non-finite loss; step skipped (%d so far)", run.step, run.skipped)
    run.step += 1
    return float(loss.detach())
