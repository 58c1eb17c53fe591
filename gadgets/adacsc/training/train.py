"""End-to-end training of NET_Theta V3 through the unrolled CSC solver (the dictionary-randomised
strategy of METHOD.md).

One optimiser step (`Trainer.train_step`):
  1. draw `batch_size` training slices and a random crop x crop window of each; augment (flips,
     global phase); the crops are the ground truth x on the reconstruction grid;
  2. the low-field degradation (adacsc.training.lowfield.random_lowfield): a centred k-space block
     of random size (per batch), complex Gaussian noise of random level (per image):
     y = S F x + n, i.e. a super-resolution problem on the crop grid;
  3. draw a dictionary from the *training* pool and a random subset (at most `max_filters`, random
     order) of its filters: a different dictionary for every batch;
  4. x* = CSCReconstructor(y, grid, lam=NET_Theta, filters=that dictionary), with
     `train_iterations` unrolled FISTA iterations; loss = mean |x* - x|^2 over the complex grid;
  5. Adam on the network and on log(beta) (gradient clipping, warm-up + cosine decay).

Randomness. Everything random in step t is drawn from generators seeded by (seed, t), so a run
is a deterministic function of (schedule, seed, data, dictionaries), whatever the interruptions:
`--resume` continues with exactly the stream an uninterrupted run would have used.

Checkpoints (DIR/checkpoints/step_NNNNNN/, the newest named by DIR/checkpoints/latest.json):
  model.safetensors      the network (adacsc.io.weights_file format: loadable with load_model), beta
  optimizer.safetensors  log(beta) and Adam's moments and step counts, as plain tensors
  state.json             step, elapsed time, schedule, seed, dictionaries, history
Nothing is ever unpickled. Validation uses the *held-out* dictionaries and the validation slices.

Outputs (DIR/): NAME.safetensors (final weights, scalars {"beta"}, provenance), summary.json
(provenance, history and validation), train.log is left to the caller.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from adacsc.core.device import resolve_device
from adacsc.core.dictionary import Dictionary
from adacsc.core.network import MapNetwork, NetworkConfig
from adacsc.core.reconstruct import DEFAULT_TV_WEIGHT, CSCReconstructor
from adacsc import resources
from adacsc.io.dictionary_file import load_named_dictionary
from adacsc.io.weights_file import load_model, save_model
from adacsc.training.family import EVALUATION_DICTIONARIES, TRAINING_DICTIONARIES, VALIDATION_DICTIONARIES
from adacsc.training.lowfield import (
    TEST_NOISE_LEVELS, LowFieldBatch, augment, fixed_lowfield, random_lowfield,
)
from adacsc.training.schedules import Schedule

__all__ = [
    "DictionaryPool",
    "default_dictionary_pools",
    "check_pools",
    "TRAIN_DICTIONARIES",
    "VAL_DICTIONARIES",
    "EVALUATION_ONLY_DICTIONARIES",
    "Trainer",
    "TrainResult",
    "evaluate",
    "image_loss",
    "sample_training_batch",
    "magnitude_psnr",
    "git_commit",
    "resolve_device",
    "CheckpointError",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "adacsc-train-checkpoint"
CHECKPOINT_VERSION = 1
_STEP_DIR = re.compile(r"^step_\d{6,}$")

#: Dictionary roles for training (docs/DATA.md, "Roles for adacsc train"): one of TRAIN_DICTIONARIES
#: is drawn per batch; VAL_DICTIONARIES are held out for validation and model selection;
#: EVALUATION_ONLY_DICTIONARIES (the unseen, larger dictionary) are never used here.
TRAIN_DICTIONARIES = TRAINING_DICTIONARIES
VAL_DICTIONARIES = VALIDATION_DICTIONARIES
EVALUATION_ONLY_DICTIONARIES = EVALUATION_DICTIONARIES
#: Analytic dictionaries used when the learned ones are not installed.
FALLBACK_TRAIN_DICTIONARIES = ("dct7x7_k48", "gabor9x9_k32", "gabor11x11_k64")
FALLBACK_VAL_DICTIONARIES = ("dct9x9_k80",)


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing, inconsistent or belongs to another run."""


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
def git_commit(path: Path | None = None) -> dict[str, Any]:
    """{"commit": HEAD or None, "dirty": bool or None} of the repository holding this file."""
    here = path or Path(__file__).resolve().parent
    info: dict[str, Any] = {"commit": None, "dirty": None}
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            info["commit"] = out.stdout.strip() or None
            st = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                capture_output=True, text=True, timeout=30)
            if st.returncode == 0:
                info["dirty"] = bool(st.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def image_loss(image: torch.Tensor, target: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over the complex grid: mean |image - target|^2.

    With `reference` (e.g. the zero-filled image), the MSE of each image is divided by the MSE of
    its reference (a constant), then averaged over the batch: every image counts alike, whatever
    its noise level (plain MSE is dominated by the noisiest images, its scale grows with the
    noise variance)."""
    diff = torch.view_as_real(image - target.to(image.dtype))
    per_image = diff.pow(2).sum(dim=-1).flatten(1).mean(dim=1)
    if reference is None:
        return per_image.mean()
    with torch.no_grad():
        ref = torch.view_as_real(reference.to(image.dtype) - target.to(image.dtype))
        ref = ref.pow(2).sum(dim=-1).flatten(1).mean(dim=1).clamp_min(1e-12)
    return (per_image / ref).mean()


def _step_generators(seed: int, step: int, salt: int = 0) -> tuple[np.random.Generator, torch.Generator]:
    ss = np.random.SeedSequence([int(seed), int(step), int(salt)])
    rng = np.random.default_rng(ss)
    gen = torch.Generator().manual_seed(int(ss.generate_state(1, np.uint64)[0] >> 1))
    return rng, gen


def sample_training_batch(images: torch.Tensor | Sequence[torch.Tensor], schedule: Schedule, seed: int,
                          step: int) -> tuple[LowFieldBatch, np.random.Generator]:
    """The degraded training batch of step `step` (random slices, crops, augmentation, random
    low-field degradation), a function of (seed, step) only, and the step's numpy generator for
    any further draws. Shared by every trainer, so baselines see exactly the same data stream.

    images: one set [N, H, W] or several (e.g. one per pixel size); a batch draws one set. With
    schedule.crop_min each side of the crop is drawn in [crop_min, crop] (even)."""
    rng, gen = _step_generators(seed, step)
    sets = [images] if isinstance(images, torch.Tensor) else list(images)
    chosen = sets[int(rng.integers(len(sets)))] if len(sets) > 1 else sets[0]
    n, height, width = chosen.shape
    crop_h = crop_w = schedule.crop
    if schedule.crop_min is not None:
        crop_h, crop_w = (2 * int(v) for v in rng.integers(schedule.crop_min // 2, schedule.crop // 2 + 1, 2))
    idx = rng.integers(0, n, schedule.batch_size)
    rows = rng.integers(0, height - crop_h + 1, schedule.batch_size)
    cols = rng.integers(0, width - crop_w + 1, schedule.batch_size)
    x = torch.stack([chosen[i, r:r + crop_h, c:c + crop_w] for i, r, c in zip(idx, rows, cols)])
    return random_lowfield(augment(x, gen), gen, schedule.lowfield), rng


def lr_factor(step: int, schedule: Schedule) -> float:
    """Warm-up (linear) then cosine decay to final_lr_fraction; step counts from 0."""
    if schedule.warmup_steps and step < schedule.warmup_steps:
        return (step + 1) / schedule.warmup_steps
    span = max(1, schedule.steps - schedule.warmup_steps)
    progress = min(1.0, max(0.0, (step - schedule.warmup_steps) / span))
    floor = schedule.final_lr_fraction
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def magnitude_psnr(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) per image of the magnitudes, peak = max |target| (as adacsc.metrics.psnr)."""
    a, b = image.abs().flatten(1), target.abs().flatten(1)
    mse = (a - b).pow(2).mean(dim=1)
    return 10 * torch.log10(b.max(dim=1).values.pow(2) / mse.clamp_min(1e-20))


# ---------------------------------------------------------------------------------------------
# dictionaries
# ---------------------------------------------------------------------------------------------
class DictionaryPool:
    """A list of dictionaries to draw from (the training pool) or iterate over (validation)."""

    def __init__(self, dictionaries: Sequence[Dictionary]) -> None:
        if not dictionaries:
            raise ValueError("a dictionary pool needs at least one dictionary")
        self.dictionaries = list(dictionaries)
        self.filters = [torch.from_numpy(np.ascontiguousarray(d.filters)).to(torch.float32)
                        for d in self.dictionaries]

    @classmethod
    def from_names(cls, names: Sequence[str]) -> "DictionaryPool":
        return cls([load_named_dictionary(n) for n in names])

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dictionaries]

    def __len__(self) -> int:
        return len(self.dictionaries)

    def describe(self) -> list[dict[str, Any]]:
        return [{"name": d.name, "num_filters": d.num_filters, "filter_shape": list(d.filter_shape),
                 "source": d.source} for d in self.dictionaries]

    def draw(self, rng: np.random.Generator, max_filters: int | None) -> tuple[str, torch.Tensor]:
        """A random dictionary of the pool, then a random subset (random order) of its filters."""
        j = int(rng.integers(len(self.filters)))
        f = self.filters[j]
        k = f.shape[0]
        take = k if max_filters is None else min(k, max_filters)
        order = rng.permutation(k)[:take]
        return self.dictionaries[j].name, f[torch.from_numpy(order)].contiguous()


def default_dictionary_pools() -> tuple[list[str], list[str]]:
    """(training names, validation names): the learned dictionaries' roles of docs/DATA.md when
    they are all shipped, else the analytic dictionaries (with a warning)."""
    shipped = set(resources.names(resources.DICTIONARY))
    missing = sorted(set(TRAIN_DICTIONARIES + VAL_DICTIONARIES) - shipped)
    if not missing:
        return list(TRAIN_DICTIONARIES), list(VAL_DICTIONARIES)
    log.warning("learned dictionaries %s are not installed; training with the analytic dictionaries "
                "(train %s, validation %s)", ", ".join(missing), ", ".join(FALLBACK_TRAIN_DICTIONARIES),
                ", ".join(FALLBACK_VAL_DICTIONARIES))
    return list(FALLBACK_TRAIN_DICTIONARIES), list(FALLBACK_VAL_DICTIONARIES)


def check_pools(train_names: Sequence[str], val_names: Sequence[str]) -> None:
    """Refuse overlapping pools and evaluation-only dictionaries (ValueError)."""
    overlap = sorted(set(train_names) & set(val_names))
    if overlap:
        raise ValueError(f"dictionaries {overlap} are in both the training and the validation pool")
    banned = sorted(set(EVALUATION_ONLY_DICTIONARIES) & (set(train_names) | set(val_names)))
    if banned:
        raise ValueError(f"dictionaries {banned} are reserved for evaluation (docs/DATA.md) and never used "
                         "in training or validation")


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------
def evaluate(network: MapNetwork | None, beta: float, images: torch.Tensor, dictionaries: DictionaryPool,
             *, noise_levels: Sequence[float] = TEST_NOISE_LEVELS, iterations: int = 64,
             lambda_grid: Sequence[float] = (), map_scales: Sequence[float] = (1.0,),
             scalar_beta: float | None = None, device: torch.device | str = "cpu", batch_size: int = 6,
             seed: int = 0, progress: Callable[[str], None] | None = None, lowpass: str = "tikhonov",
             tv_weight: float = DEFAULT_TV_WEIGHT) -> dict[str, Any]:
    """PSNR of zero-filled, maps (times each of `map_scales`) and every scalar lambda of
    `lambda_grid`, on `images` [N, H, W] (the ground truth on the grid) degraded with the test
    degradation (fixed 50% block = 2x super-resolution, fixed noise `noise_levels`, noise seeded
    per image), for each dictionary of the pool. Scalar lambdas use `scalar_beta` (default: beta).
    Every solve is told the true noise level (as a noise scan tells the gadget); `lowpass` and
    `tv_weight` select the low-pass part (adacsc.core.reconstruct).

    Returns {"per_dictionary": {name: {str(level): {...}}}, "mean": {str(level): {...}}} where each
    {...} holds mean PSNRs: "zero_filled", "maps" (scale 1), "maps_x{s}", "scalar": {lam: psnr},
    "best_scalar_lambda", "best_scalar" (the best lambda for that noise level: an oracle that
    knows the noise level), "maps_minus_best_scalar"; with a lambda grid also the key
    "all_levels": one lambda for all noise levels (the best mean over the levels), its mean PSNR
    and that of the maps.
    """
    device = torch.device(device)
    images = images.to(torch.complex64)
    n = images.shape[0]
    per: dict[str, dict[str, Any]] = {}
    if network is not None:
        network = network.to(device).eval()
    for name, filters in zip(dictionaries.names, dictionaries.filters):
        options = {"n_iter": iterations, "lowpass": lowpass, "tv_weight": tv_weight}
        recon = CSCReconstructor(filters, beta=float(beta), **options).to(device)
        recon_scalar = (CSCReconstructor(filters, beta=float(scalar_beta), **options).to(device)
                        if scalar_beta is not None else recon)
        per[name] = {}
        for level in noise_levels:
            sums: dict[str, float] = {"zero_filled": 0.0}
            scalar_sums = {float(lam): 0.0 for lam in lambda_grid}
            for start in range(0, n, batch_size):
                x = images[start:start + batch_size]
                batch = fixed_lowfield(x, float(level), seed=seed, start_index=start)
                y = batch.kspace.to(device)
                target = batch.target.to(device)
                noise = batch.noise_std.to(device)
                with torch.inference_mode():
                    if network is not None:
                        maps = None
                        for scale in map_scales:
                            if maps is None:  # the network runs once; other scales reuse its maps
                                res = recon(y, batch.grid_shape, network, noise_std=noise)
                                maps = res.lam
                                if float(scale) != 1.0:
                                    res = recon(y, batch.grid_shape, maps * float(scale), noise_std=noise)
                            else:
                                res = recon(y, batch.grid_shape, maps * float(scale), noise_std=noise)
                            key = "maps" if float(scale) == 1.0 else f"maps_x{float(scale):g}"
                            sums[key] = sums.get(key, 0.0) + float(magnitude_psnr(res.image, target).sum())
                    zf = batch.operator.adjoint(batch.kspace).to(device)
                    sums["zero_filled"] += float(magnitude_psnr(zf, target).sum())
                    for lam in scalar_sums:
                        res = recon_scalar(y, batch.grid_shape, lam, noise_std=noise)
                        scalar_sums[lam] += float(magnitude_psnr(res.image, target).sum())
            entry: dict[str, Any] = {k: v / n for k, v in sums.items()}
            if scalar_sums:
                entry["scalar"] = {f"{k:g}": v / n for k, v in scalar_sums.items()}
                best = max(scalar_sums, key=scalar_sums.get)
                entry["best_scalar_lambda"] = best
                entry["best_scalar"] = scalar_sums[best] / n
                if "maps" in entry:
                    entry["maps_minus_best_scalar"] = entry["maps"] - entry["best_scalar"]
            per[name][f"{level:g}"] = entry
            if progress is not None:
                progress(f"{name} noise {level:g}: " + ", ".join(
                    f"{k} {v:.2f}" for k, v in entry.items() if isinstance(v, float) and k != "best_scalar_lambda"))
        # one scalar for all noise levels (what a fixed chain setting can do): best mean over levels
        grid_keys = [f"{float(lam):g}" for lam in lambda_grid]
        if grid_keys:
            levels = [per[name][f"{lv:g}"] for lv in noise_levels]
            over = {k: float(np.mean([e["scalar"][k] for e in levels])) for k in grid_keys}
            best = max(over, key=over.get)
            single: dict[str, Any] = {"best_scalar_lambda": float(best), "best_scalar": over[best]}
            if network is not None:
                single["maps"] = float(np.mean([e["maps"] for e in levels]))
                single["maps_minus_best_scalar"] = single["maps"] - single["best_scalar"]
            per[name]["all_levels"] = single
    mean: dict[str, Any] = {}
    for level in list(noise_levels) + (["all_levels"] if lambda_grid else []):
        key = level if isinstance(level, str) else f"{level:g}"
        entries = [per[name][key] for name in per]
        agg = {}
        for k, v in entries[0].items():
            if isinstance(v, float) and k != "best_scalar_lambda":
                agg[k] = float(np.mean([e[k] for e in entries]))
        mean[key] = agg
    return {"per_dictionary": per, "mean": mean, "images": n, "iterations": iterations,
            "noise_levels": list(noise_levels), "beta": float(beta), "lowpass": lowpass,
            "scalar_beta": float(scalar_beta if scalar_beta is not None else beta)}


# ---------------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    weights: Path
    summary: Path
    steps: int
    beta: float
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    validation: dict[str, Any] | None = None


def pick_evenly(n_total: int, n: int) -> list[int]:
    if n >= n_total:
        return list(range(n_total))
    return [int(round(i)) for i in np.linspace(0, n_total - 1, n)]


class Trainer:
    """Holds the network, beta, optimiser, data and dictionary pools of one training run.

    train_images: complex [N, S, S] ground-truth slices (S >= schedule.crop), or several such sets
    (e.g. one per pixel size; a batch draws one); val_images: complex [N, S, S];
    train_dictionaries / val_dictionaries: DictionaryPool (training pool / held-out pool).
    """

    def __init__(self, schedule: Schedule, out_dir: str | os.PathLike, *,
                 train_images: torch.Tensor | Sequence[torch.Tensor],
                 val_images: torch.Tensor, train_dictionaries: DictionaryPool,
                 val_dictionaries: DictionaryPool, seed: int = 0, device: torch.device | str = "cpu",
                 name: str = "netv3_light", network_config: NetworkConfig | None = None,
                 provenance: dict[str, Any] | None = None, progress: bool = True) -> None:
        self.schedule = schedule
        self.out_dir = Path(out_dir)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.name = name
        self.progress = progress
        self.provenance = dict(provenance or {})
        sets = [train_images] if isinstance(train_images, torch.Tensor) else list(train_images)
        for images in sets:
            if images.ndim != 3 or min(images.shape[-2:]) < schedule.crop:
                raise ValueError(f"training images [N, S, S] with S >= crop {schedule.crop} needed, "
                                 f"got {tuple(images.shape)}")
        self.train_images = [images.to(torch.complex64).contiguous() for images in sets]
        self.val_images = val_images.to(torch.complex64).contiguous()
        self.train_pool = train_dictionaries
        self.val_pool = val_dictionaries
        config = network_config or NetworkConfig.preset(schedule.network)
        with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG left alone
            torch.manual_seed(self.seed)
            self.network = MapNetwork(config).to(self.device)
        self.recon = CSCReconstructor(self.train_pool.filters[0], beta=schedule.initial_beta,
                                      n_iter=schedule.train_iterations, lowpass=schedule.lowpass,
                                      tv_weight=schedule.tv_weight).to(self.device)
        self.optimizer = torch.optim.Adam([
            {"params": list(self.network.parameters()), "lr": schedule.lr, "base_lr": schedule.lr},
            {"params": [self.recon.log_beta], "lr": schedule.lr_beta, "base_lr": schedule.lr_beta},
        ])
        self.step = 0
        self.elapsed = 0.0
        self.history: list[dict[str, Any]] = []
        self.skipped = 0
        self.resumed_from: list[int] = []

    # -- parameters by name (for the optimiser state) -------------------------------------------
    def _named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(f"net.{n}", p) for n, p in self.network.named_parameters()] + [("log_beta", self.recon.log_beta)]

    @property
    def beta(self) -> float:
        return float(self.recon.beta.detach().cpu())

    def scalars(self) -> dict[str, float]:
        """The reconstruction settings stored with the weights, which the gadget follows: beta,
        the unrolled iteration count, and tv_weight when trained with the TV low-pass."""
        out = {"beta": self.beta, "iterations": float(self.schedule.train_iterations)}
        if self.schedule.lowpass == "tv":
            out["tv_weight"] = self.schedule.tv_weight
        return out

    # -- data ------------------------------------------------------------------------------------
    def batch(self, step: int) -> tuple[Any, str, torch.Tensor]:
        """(LowFieldBatch on the device, dictionary name, filters) of training step `step`."""
        batch, rng = sample_training_batch(self.train_images, self.schedule, self.seed, step)
        name, filters = self.train_pool.draw(rng, self.schedule.max_filters)
        return batch.to(self.device), name, filters.to(self.device)

    def loss_on(self, batch: Any, filters: torch.Tensor, n_iter: int | None = None) -> torch.Tensor:
        """The training loss of one batch (differentiable)."""
        if n_iter is not None:
            old, self.recon.n_iter = self.recon.n_iter, n_iter
        try:
            res = self.recon(batch.kspace, batch.grid_shape, self.network, filters=filters,
                             noise_std=batch.noise_std)
        finally:
            if n_iter is not None:
                self.recon.n_iter = old
        reference = res.x0 if self.schedule.loss == "relative" else None
        return image_loss(res.image, batch.target, reference)

    def train_step(self) -> dict[str, Any]:
        s = self.schedule
        batch, name, filters = self.batch(self.step)
        factor = lr_factor(self.step, s)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        self.network.train()
        self.optimizer.zero_grad(set_to_none=True)
        # a crop of empty background has no signal, hence no noise level: nothing to learn from
        signal = bool(batch.target.abs().flatten(1).amax(dim=1).gt(0).all())
        loss = self.loss_on(batch, filters) if signal else torch.tensor(float("nan"))
        ok = bool(torch.isfinite(loss))
        if ok:
            loss.backward()
            params = list(self.network.parameters())
            if s.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
            else:
                norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in params if p.grad is not None))
            beta_grad = self.recon.log_beta.grad  # None with the TV low-pass (beta unused)
            ok = bool(torch.isfinite(norm)) and (beta_grad is None or bool(torch.isfinite(beta_grad).all()))
        if ok:
            self.optimizer.step()
        else:
            self.skipped += 1
            log.warning("step %d: %s; step skipped (%d so far)", self.step,
                        "non-finite loss or gradient" if signal else "a crop without signal", self.skipped)
            norm = torch.tensor(float("nan"))
        self.step += 1
        return {"loss": float(loss.detach()), "grad_norm": float(norm), "dictionary": name,
                "filters": int(filters.shape[0]), "acquired": list(batch.acquired_shape), "lr_factor": factor}

    # -- validation -------------------------------------------------------------------------------
    def quick_validation(self) -> dict[str, float]:
        """Validation loss (MSE) and PSNR on `val_images` slices, each with one of
        `val_noise_levels` and one held-out dictionary (cycled), 2x super-resolution,
        `train_iterations` FISTA iterations."""
        s = self.schedule
        if s.val_images == 0 or self.val_images.shape[0] == 0:
            return {}
        idx = pick_evenly(self.val_images.shape[0], s.val_images)
        self.network.eval()
        losses, psnrs = [], []
        with torch.inference_mode():
            for j, i in enumerate(idx):
                x = self.val_images[i:i + 1]
                levels = s.val_noise_levels
                batch = fixed_lowfield(x, levels[j % len(levels)], seed=self.seed + 1000, start_index=i)
                batch = batch.to(self.device)
                filters = self.val_pool.filters[(j // len(levels)) % len(self.val_pool)].to(self.device)
                res = self.recon(batch.kspace, batch.grid_shape, self.network, filters=filters,
                                 noise_std=batch.noise_std)
                losses.append(float(image_loss(res.image, batch.target)))
                psnrs.append(float(magnitude_psnr(res.image, batch.target).mean()))
        return {"val_loss": float(np.mean(losses)), "val_psnr": float(np.mean(psnrs))}

    def final_validation(self) -> dict[str, Any]:
        s = self.schedule
        idx = pick_evenly(self.val_images.shape[0], s.final_val_images)
        images = self.val_images[idx]
        return evaluate(self.network, self.beta, images, self.val_pool, iterations=s.final_val_iterations,
                        lambda_grid=s.lambda_grid, device=self.device, seed=self.seed,
                        noise_levels=s.val_noise_levels, lowpass=s.lowpass, tv_weight=s.tv_weight,
                        progress=lambda msg: log.info("final validation: %s", msg))

    # -- checkpoints ------------------------------------------------------------------------------
    @property
    def checkpoint_root(self) -> Path:
        return self.out_dir / "checkpoints"

    def _state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": self.step,
            "elapsed_s": round(self.elapsed, 3), "seed": self.seed, "name": self.name,
            "schedule": self.schedule.to_dict(), "network_config": self.network.config.to_dict(),
            "train_dictionaries": self.train_pool.names, "val_dictionaries": self.val_pool.names,
            "beta": self.beta, "skipped_steps": self.skipped, "resumed_from": self.resumed_from,
            "history": self.history,
        }

    def save_checkpoint(self) -> Path:
        from safetensors.torch import save_file

        root = self.checkpoint_root
        root.mkdir(parents=True, exist_ok=True)
        folder = root / f"step_{self.step:06d}"
        tmp = root / f".tmp_step_{self.step:06d}_{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        save_model(self.network, tmp / "model.safetensors", scalars=self.scalars(),
                   provenance={"checkpoint_step": self.step, "schedule": self.schedule.name, "seed": self.seed})
        tensors: dict[str, torch.Tensor] = {"log_beta": self.recon.log_beta.detach().cpu().reshape(1).clone()}
        for pname, p in self._named_parameters():
            st = self.optimizer.state.get(p)
            if not st:
                continue
            for key in ("exp_avg", "exp_avg_sq"):
                tensors[f"adam.{pname}.{key}"] = st[key].detach().to("cpu", torch.float32).contiguous().clone()
            tensors[f"adam.{pname}.step"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1).cpu().clone()
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps(self._state(), indent=1, allow_nan=True))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        latest_tmp = root / f".latest.{os.getpid()}.json"
        latest_tmp.write_text(json.dumps({"step": self.step, "folder": folder.name}))
        os.replace(latest_tmp, root / "latest.json")
        # keep the newest `keep_checkpoints` folders
        folders = sorted(p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name))
        for old in folders[:-self.schedule.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint at step %d: %s", self.step, folder)
        return folder

    def latest_checkpoint(self) -> Path | None:
        latest = self.checkpoint_root / "latest.json"
        if not latest.is_file():
            return None
        try:
            info = json.loads(latest.read_text())
            folder_name = str(info["folder"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"unreadable {latest}: {exc}") from None
        if not _STEP_DIR.match(folder_name):
            raise CheckpointError(f"{latest} names an invalid checkpoint folder {folder_name!r}")
        folder = self.checkpoint_root / folder_name
        if not folder.is_dir():
            raise CheckpointError(f"{latest} names {folder}, which does not exist")
        return folder

    def load_checkpoint(self, folder: Path) -> None:
        from safetensors.torch import load_file

        try:
            state = json.loads((folder / "state.json").read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read {folder / 'state.json'}: {exc}") from None
        if state.get("format") != CHECKPOINT_FORMAT or state.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(f"{folder} is not an adacsc training checkpoint of version {CHECKPOINT_VERSION}")
        if state.get("schedule") != self.schedule.to_dict():
            raise CheckpointError(f"{folder} was written by schedule {state.get('schedule', {}).get('name')!r} "
                                  f"with other settings; resume with the same schedule or use a new folder")
        if int(state.get("seed", -1)) != self.seed:
            raise CheckpointError(f"{folder} was trained with seed {state.get('seed')}, not {self.seed}")
        if state.get("train_dictionaries") != self.train_pool.names:
            raise CheckpointError(f"{folder} was trained with dictionaries {state.get('train_dictionaries')}, "
                                  f"not {self.train_pool.names}")
        network, _ = load_model(folder / "model.safetensors", device=self.device)
        if network.config != self.network.config:
            raise CheckpointError(f"{folder}: network configuration differs from this run's")
        self.network.load_state_dict(network.state_dict())
        try:
            tensors = load_file(str(folder / "optimizer.safetensors"), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"cannot read {folder / 'optimizer.safetensors'}: {exc}") from None
        with torch.no_grad():
            self.recon.log_beta.copy_(tensors["log_beta"].reshape(()).to(self.recon.log_beta))
        self.optimizer.state.clear()
        for pname, p in self._named_parameters():
            key = f"adam.{pname}"
            if f"{key}.exp_avg" not in tensors:
                continue
            self.optimizer.state[p] = {
                "step": tensors[f"{key}.step"].reshape(()).clone(),
                "exp_avg": tensors[f"{key}.exp_avg"].to(self.device, p.dtype).reshape(p.shape).clone(),
                "exp_avg_sq": tensors[f"{key}.exp_avg_sq"].to(self.device, p.dtype).reshape(p.shape).clone(),
            }
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed_s", 0.0))
        self.history = list(state.get("history", []))
        self.skipped = int(state.get("skipped_steps", 0))
        self.resumed_from = list(state.get("resumed_from", [])) + [self.step]
        log.info("resumed from %s: step %d of %d, beta %.4g, %.0f s trained so far", folder, self.step,
                 self.schedule.steps, self.beta, self.elapsed)

    # -- the loop -------------------------------------------------------------------------------
    def run(self, *, resume: bool = False, stop_after: int | None = None) -> TrainResult | None:
        """Train to schedule.steps (or stop after `stop_after` total steps, leaving a checkpoint
        and returning None). With resume, continue from the newest checkpoint if there is one."""
        s = self.schedule
        folder = self.latest_checkpoint()
        if folder is not None:
            if not resume:
                raise CheckpointError(f"{self.out_dir} already holds a training run (checkpoint {folder.name}); "
                                      "pass --resume to continue it or choose another output folder")
            self.load_checkpoint(folder)
        elif resume:
            log.info("no checkpoint in %s: starting a new run", self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        target = s.steps if stop_after is None else min(s.steps, stop_after)
        bar = None
        if self.progress and self.step < target:
            from tqdm import tqdm

            bar = tqdm(total=target, initial=self.step, desc=f"train {s.name}", unit="step", dynamic_ncols=True)
        window: list[float] = []
        norms: list[float] = []
        window_dicts: list[str] = []
        t_last = time.perf_counter()
        try:
            while self.step < target:
                info = self.train_step()
                now = time.perf_counter()
                self.elapsed += now - t_last
                t_last = now
                window.append(info["loss"])
                norms.append(info["grad_norm"])
                window_dicts.append(info["dictionary"])
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{info['loss']:.2e}", beta=f"{self.beta:.3g}")
                if self.step % s.log_every == 0 or self.step == target:
                    finite = [v for v in window if math.isfinite(v)]
                    finite_norms = [v for v in norms if math.isfinite(v)]
                    entry = {"step": self.step, "loss": float(np.mean(finite)) if finite else float("nan"),
                             "grad_norm": float(np.median(finite_norms)) if finite_norms else float("nan"),
                             "beta": self.beta, "lr": s.lr * info["lr_factor"], "seconds": round(self.elapsed, 1)}
                    self.history.append(entry)
                    log.debug("step %d: %s (dictionaries %s)", self.step, entry, sorted(set(window_dicts)))
                    if bar is None:
                        log.info("step %d/%d: loss %.4g, |grad| %.3g, beta %.4g, %.0f s", self.step, s.steps,
                                 entry["loss"], entry["grad_norm"], entry["beta"], self.elapsed)
                    window, window_dicts, norms = [], [], []
                if s.validate_every and (self.step % s.validate_every == 0 or self.step == s.steps):
                    val = self.quick_validation()
                    if val:
                        self.history.append({"step": self.step, **val, "seconds": round(self.elapsed, 1)})
                        log.info("step %d: validation loss %.4g, PSNR %.2f dB (beta %.4g)", self.step,
                                 val["val_loss"], val["val_psnr"], self.beta)
                    t_last = time.perf_counter()  # validation time is not training time
                if self.step % s.checkpoint_every == 0 or self.step == target:
                    self.save_checkpoint()
                    t_last = time.perf_counter()
        except KeyboardInterrupt:
            log.warning("interrupted at step %d: writing a checkpoint", self.step)
            self.save_checkpoint()
            raise
        finally:
            if bar is not None:
                bar.close()
        if self.step < s.steps:
            log.info("stopped at step %d of %d (resume with --resume)", self.step, s.steps)
            return None
        return self.finish()

    def finish(self) -> TrainResult:
        s = self.schedule
        validation = None
        t0 = time.perf_counter()
        if s.final_validation:
            validation = self.final_validation()
        val_seconds = time.perf_counter() - t0
        train_losses = [h["loss"] for h in self.history if "loss" in h and math.isfinite(h["loss"])]
        tail = train_losses[-max(1, len(train_losses) // 10):] if train_losses else []
        vals = [h for h in self.history if "val_loss" in h]
        provenance = {
            **self.provenance,
            "schedule": s.to_dict(),
            "seed": self.seed,
            "steps": self.step,
            "training_seconds": round(self.elapsed, 1),
            "final_validation_seconds": round(val_seconds, 1),
            "device": str(self.device),
            "torch_threads": torch.get_num_threads(),
            "train_dictionaries": self.train_pool.describe(),
            "val_dictionaries": self.val_pool.describe(),
            "final_train_loss": float(np.mean(tail)) if tail else None,
            "final_val_loss": vals[-1]["val_loss"] if vals else None,
            "final_val_psnr": vals[-1]["val_psnr"] if vals else None,
            "beta": self.beta,
            "skipped_steps": self.skipped,
            "resumed_from": self.resumed_from,
            "software": {"torch": torch.__version__, "python": platform.python_version(),
                         "numpy": np.__version__},
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if validation is not None:
            provenance["validation"] = {"iterations": validation["iterations"], "images": validation["images"],
                                        "mean": validation["mean"]}
        weights = self.out_dir / f"{self.name}.safetensors"
        save_model(self.network, weights, scalars=self.scalars(), provenance=provenance)
        summary = self.out_dir / "summary.json"
        summary.write_text(json.dumps({"weights": weights.name, "provenance": provenance,
                                       "validation": validation, "history": self.history}, indent=1))
        log.info("wrote %s (beta %.4g, %d steps, %.0f s)", weights, self.beta, self.step, self.elapsed)
        return TrainResult(weights, summary, self.step, self.beta, self.elapsed, self.history, validation)
