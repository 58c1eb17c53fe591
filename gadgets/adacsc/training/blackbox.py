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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from adacsc.core.network import UNet, image_scale
from adacsc.io.weights_file import write_state
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


def train_blackbox(schedule: Schedule, out_dir: str | os.PathLike[str], *,
                   train_images: torch.Tensor | Sequence[torch.Tensor], val_images: torch.Tensor, config: BlackBoxConfig = BlackBoxConfig(), seed: int = 0,
                   device: torch.device | str = "cpu", provenance: dict[str, Any] | None = None,
                   name: str = "unet_blackbox", progress: bool = True) -> Path:
    """Train the black-box U-Net for `schedule.steps` steps on the schedule's data stream (crops,
    augmentation, random degradation; `config.batch_size` images per step, so the step counts and
    the wall time stay comparable with NET_Theta's) with the same relative loss, warm-up and cosine
    decay; write OUT/NAME.safetensors and return its path. `train_images` is one set of slices
    [N, S, S] or several (one per pixel size, as `adacsc train` loads them for schedules with
    `pixel_sizes_mm`); a batch draws one set, as for NET_Theta."""
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
    history: list[dict[str, float]] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=schedule.steps, desc=f"train {name}", unit="step", dynamic_ncols=True)
    elapsed, window, skipped = 0.0, [], 0
    for step in range(schedule.steps):
        t0 = time.perf_counter()
        batch, _ = sample_training_batch(images, stream, seed, step)
        batch = batch.to(device)
        for group in optimizer.param_groups:
            group["lr"] = config.lr * lr_factor(step, schedule)
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
            skipped += 1
            log.warning("step %d: non-finite loss; step skipped (%d so far)", step, skipped)
        elapsed += time.perf_counter() - t0
        window.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{window[-1]:.3g}")
        done = step + 1
        if done % schedule.log_every == 0 or done == schedule.steps:
            finite = [v for v in window if math.isfinite(v)]
            history.append({"step": done, "loss": float(np.mean(finite)) if finite else float("nan"),
                            "seconds": round(elapsed, 1)})
            if bar is None:
                log.info("step %d/%d: loss %.4g, %.0f s", done, schedule.steps, history[-1]["loss"], elapsed)
            window = []
        if schedule.validate_every and (done % schedule.validate_every == 0 or done == schedule.steps):
            psnr = _validation_psnr(model, val, tuple(schedule.val_noise_levels), seed, device)
            history.append({"step": done, "val_psnr": psnr, "seconds": round(elapsed, 1)})
            log.info("step %d/%d: validation PSNR %.2f dB", done, schedule.steps, psnr)
    if bar is not None:
        bar.close()
    record = {**(provenance or {}), "schedule": schedule.to_dict(), "seed": seed, "steps": schedule.steps,
              "training_seconds": round(elapsed, 1), "device": str(device),
              "torch_threads": torch.get_num_threads(), "history": history, "skipped_steps": skipped,
              "parameters": sum(p.numel() for p in model.parameters()),
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = save_blackbox(model, Path(out_dir) / f"{name}.safetensors", record)
    log.info("wrote %s (%d steps, %.0f s)", path, schedule.steps, elapsed)
    return path
