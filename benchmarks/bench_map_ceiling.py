"""Can the chain's structure reach a target at all? Oracle ceilings of the sparse-coding chain on
slices of the 256 grid: the reconstruction's free parameters optimised per slice against the truth
by Adam through the unrolled solve, starting from what the shipped map network predicts.

Variants (--variants, any of):

  tv    the TV part alone with a per-pixel TV weight map w optimised (codes off): how good the
        low-pass part alone can get;
  a     the per-filter Lambda maps optimised (fixed TV weight 0.7 sigma), 32 iterations;
  b     the maps and the per-pixel TV weight map optimised jointly, 32 iterations;
  c     as b with 64 unrolled iterations;
  d     as b with the 0.7 mm dictionary (--alt-dictionary, cdl_k32_11x11_l0.01_p07);
  e     as a with that dictionary.

Lambda = sigma * lambda_max * sigmoid(u) with u free per filter and pixel (or, with --coarse F, a
correction of the shipped logits on a grid F times coarser, bilinearly up-sampled, which cannot
follow the noise pixel by pixel); the TV weight is mu = tv_weight * sigma * exp(v) with v free per
pixel (or coarse likewise). The ceilings are loose: free parameters see the truth and also fit the
noise realisation. The best PSNR over the steps is reported, beside the shipped chain, its TV
part, and BART pics TV at given lambdas on the same slices. Data and degradation as
benchmarks/bench_weights.py (seed 1 on test splits, 101 on the validation split).

Usage:  python benchmarks/bench_map_ceiling.py [--split test_mni152] [--images 2] [--steps 40]
            [--slices I,J] [--levels 0.15,0.3] [--variants tv,a,b,c,d] [--coarse F] [--bart 0.15=0.07611,0.3=0.181]
            [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from adacsc import metrics
from adacsc.core.app import TrainedSettings
from adacsc.core.filter_bank import FilterBank
from adacsc.core.lambdas import LambdaInputs, LambdaStrategy, SparsityMaps
from adacsc.core.lowpass import gradient_magnitude
from adacsc.core.reconstruct import CSCReconstructor
from adacsc.evaluation.methods import BartPics, MapCSC
from adacsc.io.dictionary_file import load_named_dictionary
from adacsc.io.weights_file import load_named_model
from adacsc.resources import DEFAULT_DICTIONARY
from adacsc.training.lowfield import LowFieldBatch, fixed_lowfield
from adacsc.training.sampling import pick_evenly
from adacsc.training.slices import HELD_OUT_SUBJECT, load_split

log = logging.getLogger("bench_map_ceiling")

_EPS = 1e-6


@dataclass(frozen=True)
class Variant:
    """What one oracle optimises: the maps, the TV weight map, on which dictionary, how many iterations."""

    maps: bool
    tv_map: bool
    alt_dictionary: bool
    iterations: int | None  # None: the trained count


VARIANTS = {
    "tv": Variant(maps=False, tv_map=True, alt_dictionary=False, iterations=0),
    "a": Variant(maps=True, tv_map=False, alt_dictionary=False, iterations=None),
    "b": Variant(maps=True, tv_map=True, alt_dictionary=False, iterations=None),
    "c": Variant(maps=True, tv_map=True, alt_dictionary=False, iterations=64),
    "d": Variant(maps=True, tv_map=True, alt_dictionary=True, iterations=None),
    "e": Variant(maps=True, tv_map=False, alt_dictionary=True, iterations=None),
}


def _up(delta: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A parameter on a coarse grid, bilinearly up-sampled to `shape` ([..., H, W])."""
    lead = delta.shape[:-2]
    flat = delta.reshape(-1, 1, *delta.shape[-2:])
    up = F.interpolate(flat, size=tuple(shape[-2:]), mode="bilinear", align_corners=False)
    return up.reshape(*lead, *shape[-2:])


class _Oracle(LambdaStrategy):
    """Lambda = sigma * lambda_max * sigmoid(u0 + du), TV weight multiplier exp(v) (or None)."""

    def __init__(self, base: torch.Tensor, du: torch.Tensor | None, v: torch.Tensor | None,
                 sigma: torch.Tensor, lambda_max: float) -> None:
        self.base, self.du, self.v, self.sigma, self.lambda_max = base, du, v, sigma, lambda_max

    def lowpass_weights(self, inputs: LambdaInputs) -> torch.Tensor | None:
        if self.v is None:
            return None
        return torch.exp(_up(self.v, inputs.x0.shape) if self.v.shape[-2:] != inputs.x0.shape[-2:] else self.v)

    def thresholds(self, inputs: LambdaInputs) -> torch.Tensor:
        u = self.base
        if self.du is not None:
            u = u + (_up(self.du, u.shape) if self.du.shape[-2:] != u.shape[-2:] else self.du)
        return self.sigma.view(-1, 1, 1, 1) * self.lambda_max * torch.sigmoid(u)


def _logits(maps: torch.Tensor, sigma: torch.Tensor, lambda_max: float) -> torch.Tensor:
    """u with maps = sigma * lambda_max * sigmoid(u) (clamped away from 0 and 1)."""
    return torch.logit((maps / (sigma.view(-1, 1, 1, 1) * lambda_max)).clamp(_EPS, 1.0 - _EPS))


def _psnr(image: torch.Tensor, truth: np.ndarray) -> float:
    return metrics.psnr(image.detach().abs().double().numpy()[0], truth)


def _where(weights: np.ndarray, target: torch.Tensor) -> str:
    """Where a TV weight map smooths more or less: its quantiles, and its medians on the background,
    on flat tissue (true gradient below the object's median) and at edges (its top 20 %)."""
    g = gradient_magnitude(target).numpy()
    magnitude = target.abs().numpy()
    inside = magnitude > 0.1 * magnitude.max()
    flat = inside & (g <= np.quantile(g[inside], 0.5))
    edge = inside & (g > np.quantile(g[inside], 0.8))
    q = np.round(np.quantile(weights, [0.05, 0.5, 0.95]), 2)
    return (f"quantiles 5/50/95 % {q.tolist()}, median background {np.median(weights[~inside]):.2f}, "
            f"flat tissue {np.median(weights[flat]):.2f}, edges {np.median(weights[edge]):.2f}")


def _optimise(variant: Variant, batch: LowFieldBatch, truth: np.ndarray, solver: CSCReconstructor,
              shipped_maps: torch.Tensor, sigma: torch.Tensor, lambda_max: float, iterations: int,
              args: argparse.Namespace) -> tuple[float, float, torch.Tensor | None]:
    """(PSNR at the start, best PSNR over the steps, the TV weight map at the best step or None)."""
    base = _logits(shipped_maps, sigma, lambda_max)
    coarse = max(1, args.coarse)
    shape = base.shape[-2:]
    small = (shape[0] // coarse, shape[1] // coarse)
    du = torch.zeros(*base.shape[:2], *small, requires_grad=True) if variant.maps else None
    v = torch.zeros(base.shape[0], *small, requires_grad=True) if variant.tv_map else None
    strategy = _Oracle(base, du, v, sigma, lambda_max)
    optimizer = torch.optim.Adam([{"params": [du], "lr": args.lr}] * (du is not None)
                                 + [{"params": [v], "lr": args.lr_tv}] * (v is not None))
    start, best, best_w = None, -np.inf, None
    for _ in range(args.steps + 1):
        optimizer.zero_grad()
        out = solver(batch.kspace, batch.grid_shape, strategy, iterations, noise_std=batch.noise_std)
        image = out.x_low if iterations == 0 else out.image
        value = _psnr(image, truth)
        start = value if start is None else start
        if value > best:
            best = value
            best_w = None if out.lowpass_weights is None else out.lowpass_weights.clone()
        (image - batch.target).abs().square().mean().backward()
        optimizer.step()
    return start, best, best_w


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="netv3_lowfield_tv")
    parser.add_argument("--dictionary", default=DEFAULT_DICTIONARY)
    parser.add_argument("--alt-dictionary", default="cdl_k32_11x11_l0.01_p07")
    parser.add_argument("--split", default=HELD_OUT_SUBJECT)
    parser.add_argument("--images", type=int, default=2,
                        help="slices picked evenly, the first and last of the split left out")
    parser.add_argument("--slices", default=None, help="explicit slice indices of the split (e.g. 18,35)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lr", type=float, default=0.2, help="Adam rate of the map logits")
    parser.add_argument("--lr-tv", type=float, default=0.05, help="Adam rate of the log TV weight map")
    parser.add_argument("--coarse", type=int, default=0, help="optimise on a grid this much coarser")
    parser.add_argument("--levels", default="0.15,0.3")
    parser.add_argument("--variants", default="tv,a,b,c,d")
    parser.add_argument("--bart", default="0.15=0.07611,0.3=0.181", metavar="LEVEL=LAMBDA,...",
                        help="BART pics TV at these lambdas ('' for none)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    chosen = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    network, info = load_named_model(args.weights)
    for p in network.parameters():
        p.requires_grad_(False)
    settings = TrainedSettings.from_scalars(info.scalars)
    low = settings.low_pass()
    dictionaries = {False: load_named_dictionary(args.dictionary), True: load_named_dictionary(args.alt_dictionary)}
    methods = {alt: MapCSC(d, settings, network=network) for alt, d in dictionaries.items()}
    # solvers of their own for the differentiable solves (the methods' caches hold inference tensors)
    solvers = {alt: CSCReconstructor(FilterBank(d.filters), lowpass=low.kind, tv_weight=low.tv_weight)
               for alt, d in dictionaries.items()}
    lambdas = {f"{float(k):g}": float(v) for k, v in (p.split("=") for p in args.bart.split(",") if p)}
    bart = BartPics("tv", 100, lambdas=lambdas) if lambdas else None
    seed = 101 if args.split == "val" else 1
    images = load_split(args.split, 256, pixel_mm=0.72)
    if args.slices:
        index = [int(i) for i in args.slices.split(",")]
    else:
        index = list(pick_evenly(images.shape[0], args.images + 2))[1:-1]
    images = images[index]
    log.info("%s, %s / %s, slices %s of %s (seed %d), %d Adam steps at lr %g / %g, coarse %d, variants %s",
             args.weights, args.dictionary, args.alt_dictionary, index, args.split, seed, args.steps,
             args.lr, args.lr_tv, args.coarse, chosen)
    results: dict[str, dict[str, list[float]]] = {}
    for level in (float(v) for v in args.levels.split(",")):
        key = f"{level:g}"
        rows = results.setdefault(key, {})
        for i in range(images.shape[0]):
            batch = fixed_lowfield(images[i:i + 1], level, seed=seed, start_index=i)
            truth = batch.target.abs().double().numpy()[0]
            found: dict[str, float] = {}
            shipped = {}
            with torch.inference_mode():
                for alt in dictionaries:
                    if any(VARIANTS[n].alt_dictionary == alt for n in chosen) or not alt:
                        shipped[alt] = methods[alt]._solve(batch, SparsityMaps(network))
                found["TV part"] = _psnr(shipped[False].x_low, truth)
                found["shipped maps"] = _psnr(shipped[False].image, truth)
                if True in shipped:
                    found["shipped maps, alt dictionary"] = _psnr(shipped[True].image, truth)
                if bart is not None and key in lambdas:
                    found["BART TV"] = _psnr(bart(batch, level), truth)
            for name in chosen:
                variant = VARIANTS[name]
                ship = shipped[variant.alt_dictionary]
                iterations = settings.iterations if variant.iterations is None else variant.iterations
                t0 = time.perf_counter()
                start, best, weights = _optimise(variant, batch, truth, solvers[variant.alt_dictionary],
                                                 ship.lam.clone(), ship.noise.clone(), network.lambda_max,
                                                 iterations, args)
                found[f"{name} start"], found[f"{name} oracle"] = start, best
                spread = "" if weights is None else ", TV map " + _where(weights.numpy()[0], batch.target[0])
                log.info("noise %s, slice %d, %s: start %.2f, oracle %.2f (%+.2f)%s (%.0f s)", key, i, name, start,
                         best, best - start, spread, time.perf_counter() - t0)
            log.info("noise %s, slice %d: %s", key, i, ", ".join(f"{k} {v:.2f}" for k, v in found.items()))
            for k, v in found.items():
                rows.setdefault(k, []).append(v)
        means = {k: float(np.mean(v)) for k, v in rows.items()}
        log.info("noise %s, mean of %d slices: %s", key, images.shape[0], ", ".join(
            f"{k} {v:.2f} (vs TV part {v - means['TV part']:+.2f}"
            + (f", vs BART TV {v - means['BART TV']:+.2f}" if "BART TV" in means else "") + ")"
            for k, v in means.items()))
    if args.json is not None:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)},
                                         "slices": [int(i) for i in index], "results": results}, indent=1))


if __name__ == "__main__":
    main()
