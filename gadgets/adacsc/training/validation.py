"""Validation of a map network: PSNR of maps against every scalar lambda on held-out dictionaries.

Used for model selection at the end of training (Trainer.final_validation) and to reproduce the
model card's numbers; the images are degraded with the fixed test degradation so every run
compares alike.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from adacsc.core.app import CSCRecon, TrainedSettings
from adacsc.core.lambdas import FixedLambda, LambdaMaps, SparsityMaps
from adacsc.core.network import MapNetwork
from adacsc.core.reconstruct import DEFAULT_TV_WEIGHT
from adacsc.metrics import magnitude_psnr
from adacsc.training.lowfield import TEST_BLOCK_FRACTION, TEST_NOISE_LEVELS, fixed_lowfield
from adacsc.training.pools import DictionaryPool

__all__ = ["evaluate"]


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
    `tv_weight` select the low-pass part (adacsc.core.reconstruct). The reconstructions are built
    as the gadget builds them (CSCRecon.from_trained).

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
    trained = TrainedSettings(beta=float(beta), iterations=iterations, lowpass=lowpass, tv_weight=tv_weight)
    factor = round(1 / TEST_BLOCK_FRACTION)
    for dictionary in dictionaries.dictionaries:
        name = dictionary.name
        recon = CSCRecon.from_trained(dictionary, FixedLambda(0.0) if network is None else SparsityMaps(network),
                                      trained, super_resolution=factor, device=device)
        recon_scalar = (CSCRecon.from_trained(dictionary, FixedLambda(0.0), trained.overridden(beta=float(scalar_beta)),
                                              super_resolution=factor, device=device)
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
                                res = recon.solve(y, batch.grid_shape, noise)
                                maps = res.lam
                                if float(scale) != 1.0:
                                    res = recon.with_sparsity(LambdaMaps(maps * float(scale))).solve(
                                        y, batch.grid_shape, noise)
                            else:
                                res = recon.with_sparsity(LambdaMaps(maps * float(scale))).solve(
                                    y, batch.grid_shape, noise)
                            key = "maps" if float(scale) == 1.0 else f"maps_x{float(scale):g}"
                            sums[key] = sums.get(key, 0.0) + float(magnitude_psnr(res.image, target).sum())
                    zf = batch.operator.adjoint(batch.kspace).to(device)
                    sums["zero_filled"] += float(magnitude_psnr(zf, target).sum())
                    for lam in scalar_sums:
                        res = recon_scalar.with_sparsity(FixedLambda(lam)).solve(y, batch.grid_shape, noise)
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
