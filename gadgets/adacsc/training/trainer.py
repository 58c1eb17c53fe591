"""End-to-end training of NET_Theta V3 through the unrolled CSC solver (the dictionary-randomised
strategy of METHOD.md).

One optimiser step (`Trainer.train_step`):
  1. draw `batch_size` training slices and a random crop x crop window of each; augment (flips,
     global phase); the crops are the ground truth x on the reconstruction grid
     (adacsc.training.sampling, seeded by (seed, step) so `--resume` is exact);
  2. the low-field degradation (adacsc.training.lowfield.random_lowfield): a centred k-space block
     of random size (per batch), complex Gaussian noise of random level (per image):
     y = S F x + n, i.e. a super-resolution problem on the crop grid;
  3. draw a dictionary from the *training* pool and a random subset (at most `max_filters`, random
     order) of its filters: a different dictionary for every batch (adacsc.training.pools);
  4. x* = CSCReconstructor(y, grid, SparsityMaps(NET_Theta), bank=that dictionary), with
     `train_iterations` unrolled FISTA iterations; loss = mean |x* - x|^2 over the complex grid
     (adacsc.training.loss);
  5. Adam on the network (parts a fine-tuning run adds at their own rate, Schedule.lr_new) and on
     log(beta) (gradient clipping, warm-up + cosine decay,
     adacsc.training.schedules.lr_factor).

Checkpoints are written and read by adacsc.training.checkpoint. Validation uses the *held-out*
dictionaries and the validation slices (adacsc.training.validation).

Outputs (DIR/): NAME.safetensors (final weights, scalars {"beta"}, provenance), summary.json
(provenance, history and validation), train.log is left to the caller.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from adacsc.core.network import MapNetwork, NetworkConfig
from adacsc.core.filter_bank import FilterBank
from adacsc.core.lambdas import SparsityMaps
from adacsc.core.reconstruct import CSCReconstructor
from adacsc.io.weights_file import load_model, load_named_model, save_model
from adacsc.metrics import magnitude_psnr
from adacsc.training import checkpoint
from adacsc.training.checkpoint import CheckpointError
from adacsc.training.finetune import ADDED_PARTS, start_from
from adacsc.training.loss import image_loss
from adacsc.training.lowfield import fixed_lowfield
from adacsc.training.pools import DictionaryPool
from adacsc.training.provenance import software_versions
from adacsc.training.sampling import pick_evenly, sample_training_batch
from adacsc.training.schedules import Schedule, lr_factor
from adacsc.training.validation import evaluate

__all__ = ["Trainer", "TrainResult"]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished run wrote (weights, summary.json) and how it went."""

    weights: Path
    summary: Path
    steps: int
    beta: float
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    validation: dict[str, Any] | None = None


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
        if schedule.init_weights is not None:
            source, _ = load_named_model(schedule.init_weights, device=self.device)
            start_from(self.network, source)
        self.recon = CSCReconstructor(self.train_pool.filters[0], beta=schedule.initial_beta,
                                      lowpass=schedule.lowpass, tv_weight=schedule.tv_weight).to(self.device)
        trained: list[torch.nn.Parameter] = []
        added: list[torch.nn.Parameter] = []
        for name, parameter in self.network.named_parameters():
            own_rate = schedule.lr_new is not None and name.startswith(ADDED_PARTS)
            (added if own_rate else trained).append(parameter)
        groups = [{"params": trained, "lr": schedule.lr, "base_lr": schedule.lr},
                  {"params": [self.recon.log_beta], "lr": schedule.lr_beta, "base_lr": schedule.lr_beta}]
        if added:
            groups.append({"params": added, "lr": schedule.lr_new, "base_lr": schedule.lr_new})
        self.optimizer = torch.optim.Adam(groups)
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
    def batch(self, step: int) -> tuple[Any, str, FilterBank]:
        """(LowFieldBatch on the device, dictionary name, filters) of training step `step`."""
        batch, rng = sample_training_batch(self.train_images, self.schedule, self.seed, step)
        name, filters = self.train_pool.draw(rng, self.schedule.max_filters)
        return batch.to(self.device), name, filters.to(self.device)

    def loss_on(self, batch: Any, filters: FilterBank, n_iter: int | None = None) -> torch.Tensor:
        """The training loss of one batch (differentiable), with `n_iter` unrolled iterations
        (default: the schedule's train_iterations)."""
        iterations = self.schedule.train_iterations if n_iter is None else n_iter
        res = self.recon(batch.kspace, batch.grid_shape, SparsityMaps(self.network), iterations, bank=filters,
                         noise_std=batch.noise_std)
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
                "filters": filters.num_filters, "acquired": list(batch.acquired_shape), "lr_factor": factor}

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
                res = self.recon(batch.kspace, batch.grid_shape, SparsityMaps(self.network), s.train_iterations,
                                 bank=filters, noise_std=batch.noise_std)
                losses.append(float(image_loss(res.image, batch.target)))
                psnrs.append(float(magnitude_psnr(res.image, batch.target).mean()))
        return {"val_loss": float(np.mean(losses)), "val_psnr": float(np.mean(psnrs))}

    def final_validation(self) -> dict[str, Any]:
        """The full validation of adacsc.training.validation.evaluate on `final_val_images` slices."""
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
            "format": checkpoint.CHECKPOINT_FORMAT, "version": checkpoint.CHECKPOINT_VERSION, "step": self.step,
            "elapsed_s": round(self.elapsed, 3), "seed": self.seed, "name": self.name,
            "schedule": self.schedule.to_dict(), "network_config": self.network.config.to_dict(),
            "train_dictionaries": self.train_pool.names, "val_dictionaries": self.val_pool.names,
            "beta": self.beta, "skipped_steps": self.skipped, "resumed_from": self.resumed_from,
            "history": self.history,
        }

    def save_checkpoint(self) -> Path:
        """Write the checkpoint of the current step (see adacsc.training.checkpoint)."""
        tensors = {"log_beta": self.recon.log_beta.detach().cpu().reshape(1).clone(),
                   **checkpoint.adam_tensors(self.optimizer, self._named_parameters())}
        provenance = {"checkpoint_step": self.step, "schedule": self.schedule.name, "seed": self.seed}
        return checkpoint.write_checkpoint(
            self.checkpoint_root, self.step,
            write_model=lambda path: save_model(self.network, path, scalars=self.scalars(), provenance=provenance),
            tensors=tensors, state=self._state(), keep=self.schedule.keep_checkpoints)

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint of this run's folder, or None."""
        return checkpoint.latest_checkpoint(self.checkpoint_root)

    def load_checkpoint(self, folder: Path) -> None:
        """Continue from `folder`: network, beta, optimiser state, step, time and history."""
        state = checkpoint.read_state(folder)
        checkpoint.check_same_run(folder, state, schedule=self.schedule, seed=self.seed,
                                  train_dictionaries=self.train_pool.names)
        network, _ = load_model(folder / "model.safetensors", device=self.device)
        if network.config != self.network.config:
            raise CheckpointError(f"{folder}: network configuration differs from this run's")
        self.network.load_state_dict(network.state_dict())
        tensors = checkpoint.read_tensors(folder)
        with torch.no_grad():
            self.recon.log_beta.copy_(tensors["log_beta"].reshape(()).to(self.recon.log_beta))
        checkpoint.restore_adam(self.optimizer, self._named_parameters(), tensors, self.device)
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
            "software": software_versions(),
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
