"""Simple per-pixel TV weight rules, without training: do they reach what the oracle TV weight maps
of benchmarks/bench_map_ceiling.py promise? Each rule sets mu = tv_weight * sigma * w(x) from a
reference image and is grid-searched on its two parameters (a, c) per noise level:

  global      w = 1, tv_weight = a (c unused): the TV weight itself;
  edges-truth w = 1 / (1 + |grad x_true| / (c sigma)), tv_weight = a: an oracle that knows where the
              true edges are (an upper bound for edge-aware weights);
  edges-tv    the same rule on the chain's own TV image (reweighted TV, realisable);
  background  w = a where the 9 x 9 mean of |x_tv| is below c (bright tissue about 1), else 1;
              tv_weight 0.7: smooth the empty background harder.

--codes adds the shipped map network's codes (32 iterations) on top of each TV part; without it
the TV part alone is scored. Data and degradation as benchmarks/bench_weights.py (seed 101 on the
validation split, 1 on test splits). Mean PSNR in dB; the best five (a, c) per level are printed
against the plain TV part (tv_weight 0.7, w = 1).

Usage:  python benchmarks/bench_tv_weight_rules.py RULE [--split val] [--images 4] [--codes]
            [--a 0.7,1,1.4,2] [--c 0.5,1,2,4]
"""

from __future__ import annotations

import argparse
import itertools
import logging

import numpy as np
import torch
import torch.nn.functional as F

from adacsc import metrics
from adacsc.core.app import TrainedSettings
from adacsc.core.filter_bank import FilterBank
from adacsc.core.lambdas import FixedLambda, LambdaInputs, LambdaStrategy, SparsityMaps
from adacsc.core.lowpass import gradient_magnitude
from adacsc.core.reconstruct import CSCReconstructor
from adacsc.io.dictionary_file import load_named_dictionary
from adacsc.io.weights_file import load_named_model
from adacsc.resources import DEFAULT_DICTIONARY
from adacsc.training.lowfield import fixed_lowfield
from adacsc.training.sampling import pick_evenly
from adacsc.training.slices import load_split

log = logging.getLogger("bench_tv_weight_rules")

RULES = ("global", "edges-truth", "edges-tv", "background")


class _Weighted(LambdaStrategy):
    """A given TV weight map [B, H, W] (or None) beside another strategy's thresholds."""

    def __init__(self, weights: torch.Tensor | None, inner: LambdaStrategy) -> None:
        self.weights, self.inner = weights, inner

    def lowpass_weights(self, inputs: LambdaInputs) -> torch.Tensor | None:
        return self.weights

    def thresholds(self, inputs: LambdaInputs) -> "float | torch.Tensor":
        return self.inner.thresholds(inputs)


def _weights(rule: str, a: float, c: float, reference: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor | None:
    """The rule's TV weight map for normalised reference images [B, H, W] and noise sigma_n [B]."""
    if rule == "global":
        return None
    if rule == "background":
        local = F.avg_pool2d(reference.abs()[:, None], 9, stride=1, padding=4)[:, 0]
        return 1.0 + (a - 1.0) * (local < c).to(local.dtype)
    return 1.0 / (1.0 + gradient_magnitude(reference) / (c * sigma.view(-1, 1, 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rule", choices=RULES)
    parser.add_argument("--weights", default="netv3_lowfield_tv")
    parser.add_argument("--split", default="val")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--codes", action="store_true", help="score the chain with the shipped maps' codes")
    parser.add_argument("--a", default="0.7,1,1.4,2")
    parser.add_argument("--c", default="0.5,1,2,4")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    network, info = load_named_model(args.weights)
    settings = TrainedSettings.from_scalars(info.scalars)
    bank = FilterBank(load_named_dictionary(DEFAULT_DICTIONARY).filters)
    iterations = settings.iterations if args.codes else 0
    grid = list(itertools.product([float(v) for v in args.a.split(",")], [float(v) for v in args.c.split(",")]))
    fixed_weight = settings.low_pass().tv_weight
    seed = 101 if args.split == "val" else 1
    images = load_split(args.split, 256, pixel_mm=0.72)
    images = images[pick_evenly(images.shape[0], args.images)]
    for level in (0.05, 0.15, 0.3):
        scores: dict[object, list[float]] = {}
        for i in range(images.shape[0]):
            batch = fixed_lowfield(images[i:i + 1], level, seed=seed, start_index=i)
            truth = batch.target.abs().double().numpy()[0]
            inner = SparsityMaps(network) if args.codes else FixedLambda(0.0)
            with torch.inference_mode():
                plain = CSCReconstructor(bank, lowpass="tv", tv_weight=fixed_weight)(
                    batch.kspace, batch.grid_shape, inner, iterations, noise_std=batch.noise_std)
                shown = plain.image if args.codes else plain.x_low
                scores.setdefault("plain", []).append(metrics.psnr(shown.abs().double().numpy()[0], truth))
                scale = plain.scale.view(-1, 1, 1)
                reference = batch.target / scale if args.rule == "edges-truth" else plain.x_low / scale
                for a, c in grid:
                    solver = CSCReconstructor(bank, lowpass="tv",
                                              tv_weight=a if args.rule != "background" else fixed_weight)
                    out = solver(batch.kspace, batch.grid_shape,
                                 _Weighted(_weights(args.rule, a, c, reference, plain.noise), inner), iterations,
                                 noise_std=batch.noise_std)
                    shown = out.image if args.codes else out.x_low
                    scores.setdefault((a, c), []).append(metrics.psnr(shown.abs().double().numpy()[0], truth))
        means = {k: float(np.mean(v)) for k, v in scores.items()}
        best = sorted(means.items(), key=lambda kv: -kv[1])[:5]
        log.info("%s, noise %g, %s, %d slices: plain TV part %.2f; best (a, c): %s", args.rule, level,
                 "with codes" if args.codes else "TV part alone", images.shape[0], means["plain"],
                 ", ".join(f"{k} {v:.2f} ({v - means['plain']:+.2f})" for k, v in best))


if __name__ == "__main__":
    main()
