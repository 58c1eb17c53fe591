"""The evaluation protocol of `adacsc evaluate`: tune the baselines on validation slices, then run
every method on the test sets at the test degradation and score it.

Test sets (adacsc.training.slices, never used in training or tuning): the Colin27 test slabs (in
distribution) and two out-of-distribution sets (the INIA19 macaque template and the analytic
phantom). Degradation: adacsc.training.lowfield.fixed_lowfield (central 50 % k-space block, i.e.
2x super-resolution, complex Gaussian noise at each test level, noise seeded per image).
Scores: PSNR, SSIM and NRMSE of the magnitude against the ground truth magnitude (adacsc.metrics).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adacsc import metrics
from adacsc.core.registry import DEFAULT_DICTIONARY, get_dictionary
from adacsc.core.weights import load_named_model
from adacsc.evaluation.methods import BartPics, BlackBox, MapCSC, Method, ScalarCSC, ZeroFilled, tune
from adacsc.training.lowfield import TEST_NOISE_LEVELS, fixed_lowfield
from adacsc.training.slices import load_split
from adacsc.training.train import pick_evenly

__all__ = ["EvaluationSettings", "TEST_SETS", "SCORES", "BART_SETTINGS", "run_evaluation"]

log = logging.getLogger(__name__)

#: test set label -> split of adacsc.training.slices; the first is in distribution
TEST_SETS = {
    "in distribution: Colin27 test slabs": "test",
    "out of distribution: macaque (INIA19)": "ood_macaque",
    "out of distribution: analytic phantom": "ood_phantom",
}
SCORES = ("psnr", "ssim", "nrmse")
#: method keys in table order
MAPS, PERMUTED, UNSEEN = "maps", "maps_permuted", "maps_unseen"
#: BART pics settings: key -> (regulariser, wavelet cycle spinning); the l1-wavelet is run both as
#: a fixed convex problem and with BART's random shifts, since neither wins at every noise level
BART_SETTINGS = {"bart_wavelet": ("wavelet", False), "bart_wavelet_shifts": ("wavelet", True),
                 "bart_tv": ("tv", False)}


@dataclass(frozen=True)
class EvaluationSettings:
    """Everything that defines one evaluation run (stored with the results)."""

    images: int = 12  # per test set, evenly spaced through the split
    val_images: int = 8  # validation slices for tuning lambdas
    iterations: int = 64  # FISTA iterations of every CSC method
    noise_levels: tuple[float, ...] = TEST_NOISE_LEVELS
    weights: str = "netv3_light"
    dictionary: str = DEFAULT_DICTIONARY  # a training dictionary
    unseen_dictionary: str = "cdl_k128_11x11_l0.01"  # never seen in training or validation
    blackbox: str | None = None  # black-box U-Net weights file; None: that row is left out
    bart: bool = True
    bart_iterations: int = 100
    scalar_grid: tuple[float, ...] = (0.02, 0.028, 0.04, 0.057, 0.08, 0.113, 0.16, 0.226, 0.32)
    bart_grid: tuple[float, ...] = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256)
    seed: int = 1  # test noise seed (validation uses seed + 100)
    batch_size: int = 4
    device: str = "cpu"
    permutation_seed: int = 7


def _score(images: torch.Tensor, target: torch.Tensor) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in SCORES}
    for a, b in zip(images.abs().double().numpy(), target.abs().double().numpy()):
        out["psnr"].append(metrics.psnr(a, b))
        out["ssim"].append(metrics.ssim(a, b))
        out["nrmse"].append(metrics.nrmse(a, b))
    return out


def _build_methods(s: EvaluationSettings, device: torch.device) -> tuple[dict[str, Method], dict[str, Any]]:
    """The methods (untuned) and facts about them for the report."""
    network, info = load_named_model(s.weights, device=device)
    beta = float(info.scalars.get("beta", 1.0))
    trained = get_dictionary(s.dictionary)
    unseen = get_dictionary(s.unseen_dictionary)
    filters = torch.from_numpy(np.ascontiguousarray(trained.filters)).float()
    big = torch.from_numpy(np.ascontiguousarray(unseen.filters)).float()
    order = np.random.default_rng(s.permutation_seed).permutation(filters.shape[0]).tolist()
    methods: dict[str, Method] = {
        "zero_filled": ZeroFilled(),
        "scalar": ScalarCSC(filters, beta, s.iterations, device, name="CSC, scalar lambda tuned per noise level"),
        "scalar_one": ScalarCSC(filters, beta, s.iterations, device, name="CSC, one scalar lambda for both levels"),
        MAPS: MapCSC(filters, beta, s.iterations, device, network=network,
                     name=f"CSC, learned maps ({trained.name}, K={trained.num_filters})"),
        PERMUTED: MapCSC(filters, beta, s.iterations, device, network=network, permutation=order,
                         name=f"CSC, learned maps, {trained.name} filters permuted"),
        UNSEEN: MapCSC(big, beta, s.iterations, device, network=network,
                       name=f"CSC, learned maps, unseen {unseen.name} (K={unseen.num_filters})"),
    }
    facts: dict[str, Any] = {"beta": beta, "weights": s.weights, "dictionary": trained.name,
                             "unseen_dictionary": unseen.name, "permutation": order}
    if s.blackbox:
        from adacsc.training.blackbox import load_blackbox

        model, meta = load_blackbox(s.blackbox, device=device)
        methods["unet"] = BlackBox(model, device)
        prov = meta.get("provenance", {})
        facts["blackbox"] = {"file": Path(s.blackbox).name, "training_seconds": prov.get("training_seconds"),
                             "steps": prov.get("steps"), "parameters": prov.get("parameters")}
    if s.bart:
        from adacsc.evaluation.bart import bart_version, find_bart

        find_bart()
        facts["bart_version"] = bart_version()
        for key, (reg, shifts) in BART_SETTINGS.items():
            methods[key] = BartPics(reg, s.bart_iterations, random_shifts=shifts)
    return methods, facts


def _tune(methods: dict[str, Method], s: EvaluationSettings) -> dict[str, Any]:
    """Grid-search the lambdas of the scalar CSC and BART on validation slices, per noise level;
    and the one scalar lambda that is best on average over the levels."""
    val = load_split("val")
    val = val[pick_evenly(val.shape[0], s.val_images)]
    batches = {f"{lv:g}": fixed_lowfield(val, float(lv), seed=s.seed + 100) for lv in s.noise_levels}
    tuning: dict[str, Any] = {}
    scalar = methods["scalar"]
    scalar.lambdas, tuning["scalar"] = tune(scalar.with_lambda, s.scalar_grid, batches, "scalar CSC")
    mean_over_levels = {lam: float(np.mean([tuning["scalar"][lv][lam] for lv in batches]))
                        for lam in tuning["scalar"][next(iter(batches))]}
    one = float(max(mean_over_levels, key=mean_over_levels.get))
    methods["scalar_one"].lambdas = {lv: one for lv in batches}
    tuning["scalar_one"] = {"lambda": one, "mean_psnr": mean_over_levels}
    for key in BART_SETTINGS:
        if key in methods:
            methods[key].lambdas, tuning[key] = tune(methods[key].with_lambda, s.bart_grid, batches,
                                                     methods[key].name)
    return {"validation_images": int(val.shape[0]), "grids": tuning,
            "chosen": {k: m.lambdas for k, m in methods.items() if getattr(m, "lambdas", None)}}


def run_evaluation(s: EvaluationSettings) -> dict[str, Any]:
    """Tune, run and score every method on every test set and noise level.

    Returns {"settings", "facts", "tuning", "methods": {key: name}, "results": {set: {level: {method:
    {score: [per image]}}}}, "permutation_max_relative_difference", "examples", "seconds"}; the
    examples (one slice per test set at the highest noise level: magnitudes of every method, the
    ground truth and the learned maps) feed the figure and are not JSON."""
    t0 = time.perf_counter()
    device = torch.device(s.device)
    methods, facts = _build_methods(s, device)
    tuning = _tune(methods, s)
    results: dict[str, Any] = {}
    examples: dict[str, Any] = {}
    worst_permutation = 0.0
    figure_level = max(s.noise_levels)
    for label, split in TEST_SETS.items():
        images = load_split(split)
        chosen = pick_evenly(images.shape[0], s.images)
        images = images[chosen]
        example = len(chosen) // 2
        results[label] = {}
        for level in s.noise_levels:
            key = f"{level:g}"
            scores = {m: {k: [] for k in SCORES} for m in methods}
            t_level = time.perf_counter()
            for start in range(0, images.shape[0], s.batch_size):
                batch = fixed_lowfield(images[start:start + s.batch_size], float(level), seed=s.seed,
                                       start_index=start)
                outputs, maps = {}, None
                for m, method in methods.items():
                    if m == MAPS:  # the maps are kept for the figure
                        outputs[m], maps = method.solve(batch)
                    else:
                        outputs[m] = method(batch, float(level))
                reference = outputs[MAPS]
                diff = (outputs[PERMUTED] - reference).flatten(1).norm(dim=1) / reference.flatten(1).norm(dim=1)
                worst_permutation = max(worst_permutation, float(diff.max()))
                for m, out in outputs.items():
                    for k, v in _score(out, batch.target).items():
                        scores[m][k].extend(v)
                if level == figure_level and start <= example < start + batch.target.shape[0]:
                    j = example - start
                    examples[label] = {"slice": int(chosen[example]), "noise_level": float(level),
                                       "target": batch.target[j].abs().numpy(),
                                       "outputs": {m: out[j].abs().numpy() for m, out in outputs.items()},
                                       "maps": maps[j].numpy()}
            results[label][key] = scores
            log.info("%s, noise %s (%d slices, %.0f s): %s", label, key, images.shape[0],
                     time.perf_counter() - t_level, ", ".join(
                         f"{m} {np.mean(v['psnr']):.2f} dB" for m, v in scores.items()))
    return {"settings": asdict(s), "facts": facts, "tuning": tuning,
            "methods": {k: m.name for k, m in methods.items()}, "results": results,
            "permutation_max_relative_difference": worst_permutation, "examples": examples,
            "seconds": time.perf_counter() - t0}
