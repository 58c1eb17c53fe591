"""The evaluation protocol of `adacsc evaluate`: tune the baselines on validation slices, then run
every method on the test sets at the test degradation and score it.

Two test grids (adacsc.training.slices, never used in training or tuning):
  256: 256 x 256 slices at 0.72 mm (128 x 128 acquired: the matrix of the real 0.055 T scans,
       whose pixels are about 1.1 mm on the 256 grid), noise 0.05, 0.15 and 0.3: the held-out
       subject (MNI152 2009a, anatomy never seen in training: the headline) and the Colin27 test
       slabs (unseen slices of the training subject);
  160: 160 x 160 slices at 1.375 mm (80 x 80 acquired), noise 0.05 and 0.15: the Colin27 test
       slabs (in distribution) and two out-of-distribution sets (the INIA19 macaque template and
       the analytic phantom).
Each grid is tuned on validation slices of the same grid (Colin27 validation slabs) by a bracketed
search (adacsc.evaluation.methods.tune). Degradation: adacsc.training.lowfield.fixed_lowfield
(central 50 % k-space block, i.e. 2x super-resolution, complex Gaussian noise at each test level,
noise seeded per image). Scores: PSNR, SSIM (whole image, and inside the object mask) and NRMSE of
the magnitude against the ground truth magnitude (adacsc.metrics).
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
from adacsc.core.app import TrainedSettings
from adacsc.core.reconstruct import DEFAULT_NOISE_LAMBDA
from adacsc.evaluation.methods import (
    BartPics, BlackBox, LowPassPart, MapCSC, Method, NoiseScalarCSC, ScalarCSC, ZeroFilled, tune, tune_one,
)
from adacsc.io.dictionary_file import load_named_dictionary
from adacsc.io.weights_file import load_named_model
from adacsc.resources import DEFAULT_DICTIONARY
from adacsc.training.lowfield import TEST_NOISE_LEVELS, fixed_lowfield
from adacsc.training.slices import HELD_OUT_SUBJECT, load_split
from adacsc.training.sampling import pick_evenly

__all__ = ["EvaluationSettings", "TestGrid", "settings_of", "figure_examples", "GRID_KEYS", "HELD_OUT_LABEL", "LOWPASS", "TEST_SETS", "TEST_SETS_256", "SCORES", "BART_SETTINGS",
           "run_evaluation", "test_grids"]

log = logging.getLogger(__name__)

#: test set label -> split of adacsc.training.slices; the first is in distribution
TEST_SETS = {
    "in distribution: Colin27 test slabs": "test",
    "out of distribution: macaque (INIA19)": "ood_macaque",
    "out of distribution: analytic phantom": "ood_phantom",
}
#: the test sets of the 256 grid (the matrix of the real 0.055 T scans); the first, anatomy never
#: seen in training, is the headline
HELD_OUT_LABEL = "256 grid, held-out subject: MNI152 2009a"
TEST_SETS_256 = {HELD_OUT_LABEL: HELD_OUT_SUBJECT, "256 grid, Colin27 test slabs (training subject)": "test"}
PIXEL_MM_256 = 0.72
SCORES = ("psnr", "ssim", "ssim_mask", "nrmse")
#: method keys in table order
MAPS, PERMUTED, UNSEEN, LOWPASS = "maps", "maps_permuted", "maps_unseen", "lowpass"
#: BART pics settings: key -> (regulariser, wavelet cycle spinning); the l1-wavelet is run both as
#: a fixed convex problem and with BART's random shifts, since neither wins at every noise level
BART_SETTINGS = {"bart_wavelet": ("wavelet", False), "bart_wavelet_shifts": ("wavelet", True),
                 "bart_tv": ("tv", False)}


@dataclass(frozen=True)
class EvaluationSettings:
    """Everything that defines one evaluation run (stored with the results)."""

    images: int = 12  # per test set of the 160 grid, evenly spaced through the split
    images_256: int = 24  # test slices of the 256 grid
    val_images: int = 8  # validation slices for tuning lambdas (per grid)
    iterations: int = 0  # FISTA iterations of every CSC method; 0: the count the weights were trained with
    noise_levels: tuple[float, ...] = TEST_NOISE_LEVELS
    noise_levels_256: tuple[float, ...] = (0.05, 0.15, 0.3)
    weights: str = "netv3_lowfield_tv"
    dictionary: str = DEFAULT_DICTIONARY  # a training dictionary
    unseen_dictionary: str = "cdl_k128_11x11_l0.01"  # never seen in training or validation
    blackbox: str | None = None  # black-box U-Net weights file; None: that row is left out
    bart: bool = True
    bart_iterations: int = 100
    scalar_grid: tuple[float, ...] = (0.02, 0.028, 0.04, 0.057, 0.08, 0.113, 0.16, 0.226, 0.32, 0.45, 0.64)
    bart_grid: tuple[float, ...] = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256)
    noise_multiple_grid: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 4.0)
    grids: tuple[str, ...] = ("256", "160")  # test grids run (keys of test_grids)
    refine: bool = True  # bracketed tuning (False: the plain grid search, for smoke runs)
    seed: int = 1  # test noise seed (validation uses seed + 100)
    batch_size: int = 4
    device: str = "cpu"
    permutation_seed: int = 7


def _score(images: torch.Tensor, target: torch.Tensor) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in SCORES}
    for a, b in zip(images.abs().double().numpy(), target.abs().double().numpy()):
        out["psnr"].append(metrics.psnr(a, b))
        out["ssim"].append(metrics.ssim(a, b))
        out["ssim_mask"].append(metrics.masked_ssim(a, b))
        out["nrmse"].append(metrics.nrmse(a, b))
    return out


@dataclass(frozen=True)
class TestGrid:
    """One test configuration: slice size and pixel size, noise levels, the test sets on it."""

    key: str
    size: int
    pixel_mm: float | None  # None: the splits' default field of view
    noise_levels: tuple[float, ...]
    sets: dict[str, str]  # label -> split
    images: int
    skip: tuple[str, ...] = ()  # methods not run on this grid
    figure: bool = False  # the figure shows the middle slice of each noise level of this grid


def test_grids(s: EvaluationSettings) -> list[TestGrid]:
    """The 256 grid of the real scans' matrix (held-out subject first) and the 160 grid (in and out
    of distribution)."""
    # BART's random wavelet shifts cost 2.5 s a slice on the 256 grid and were never the best setting
    return [TestGrid("256", 256, PIXEL_MM_256, tuple(s.noise_levels_256), TEST_SETS_256, s.images_256,
                     skip=("bart_wavelet_shifts",), figure=True),
            TestGrid("160", 160, None, tuple(s.noise_levels), TEST_SETS, s.images)]


GRID_KEYS = ("256", "160")


def _build_methods(s: EvaluationSettings, device: torch.device) -> tuple[dict[str, Method], dict[str, Any]]:
    """The methods (untuned) and facts about them for the report."""
    network, info = load_named_model(s.weights, device=device)
    settings = TrainedSettings.from_scalars(info.scalars).overridden(iterations=s.iterations or None)
    beta = settings.beta
    trained = load_named_dictionary(s.dictionary)
    unseen = load_named_dictionary(s.unseen_dictionary)
    order = np.random.default_rng(s.permutation_seed).permutation(trained.num_filters).tolist()
    methods: dict[str, Method] = {
        "zero_filled": ZeroFilled(),
        LOWPASS: LowPassPart(trained, settings, device,
                             name=f"{'TV' if settings.lowpass == 'tv' else 'Tikhonov'} low-pass part of the CSC "
                                  "alone (codes off)"),
        "scalar": ScalarCSC(trained, settings, device, name="CSC, scalar lambda tuned per noise level"),
        "scalar_one": ScalarCSC(trained, settings, device, name="CSC, one scalar lambda for all levels"),
        "scalar_default": NoiseScalarCSC(trained, settings, device, multiple=DEFAULT_NOISE_LAMBDA,
                                         name=f"CSC, scalar mode default ({DEFAULT_NOISE_LAMBDA:g} x noise)"),
        MAPS: MapCSC(trained, settings, device, network=network,
                     name=f"CSC, learned maps ({trained.name}, K={trained.num_filters})"),
        PERMUTED: MapCSC(trained, settings, device, network=network, permutation=order,
                         name=f"CSC, learned maps, {trained.name} filters permuted"),
        UNSEEN: MapCSC(unseen, settings, device, network=network,
                       name=f"CSC, learned maps, unseen {unseen.name} (K={unseen.num_filters})"),
    }
    facts: dict[str, Any] = {"beta": beta, "weights": s.weights, "dictionary": trained.name,
                             "unseen_dictionary": unseen.name, "permutation": order,
                             "iterations": settings.iterations, "lowpass": settings.lowpass,
                             "tv_weight": settings.tv_weight,
                             "noise_aware": network.uses_noise}
    if s.blackbox:
        from adacsc.training.blackbox import load_blackbox

        model, meta = load_blackbox(s.blackbox, device=device)
        methods["unet"] = BlackBox(model, device)
        facts["blackbox"] = blackbox_facts(s.blackbox, meta)
    if s.bart:
        from adacsc.evaluation.bart import bart_version, find_bart

        find_bart()
        facts["bart_version"] = bart_version()
        for key, (reg, shifts) in BART_SETTINGS.items():
            methods[key] = BartPics(reg, s.bart_iterations, random_shifts=shifts)
    return methods, facts


def blackbox_facts(file: str, meta: dict[str, Any]) -> dict[str, Any]:
    """How the black-box U-Net was trained, from its stored provenance (for the report)."""
    prov = meta.get("provenance", {})
    schedule = prov.get("schedule", {})
    return {"file": Path(file).name, "training_seconds": prov.get("training_seconds"), "steps": prov.get("steps"),
            "parameters": prov.get("parameters"), "schedule": schedule.get("name"),
            "batch_size": (meta.get("config") or {}).get("batch_size"),
            "image_size": schedule.get("image_size"), "pixel_sizes_mm": schedule.get("pixel_sizes_mm") or [],
            "crop": schedule.get("crop"), "crop_min": schedule.get("crop_min"),
            "noise_level": schedule.get("noise_level"), "block_fraction": schedule.get("block_fraction"),
            "commit": (prov.get("git") or {}).get("commit")}


def _tune(methods: dict[str, Method], s: EvaluationSettings, grid: TestGrid) -> dict[str, Any]:
    """Tune the lambdas of the scalar CSC and BART on validation slices of the test grid, per noise
    level, by a bracketed search (adacsc.evaluation.methods.tune: the grid, widened past an end
    while the best value sits there, refined to 2^(1/4)); the one scalar lambda best on average over
    the levels; and, for the record, the one noise-relative multiple (the scalar mode's default)
    best on average."""
    val = load_split("val", grid.size, pixel_mm=grid.pixel_mm)
    val = val[pick_evenly(val.shape[0], s.val_images)]
    batches = {f"{lv:g}": fixed_lowfield(val, float(lv), seed=s.seed + 100) for lv in grid.noise_levels}
    tuning: dict[str, Any] = {}
    scalar = methods["scalar"]
    memo: dict[tuple[str, float], float] = {}
    scalar.lambdas, tuning["scalar"] = tune(scalar.with_lambda, s.scalar_grid, batches, "scalar CSC", memo,
                                            s.refine)
    one, tuning["scalar_one"] = tune_one(scalar.with_lambda, s.scalar_grid, batches,
                                         "scalar CSC, one lambda for all levels", memo, s.refine)
    methods["scalar_one"].lambdas = {lv: one for lv in batches}
    follows = methods["scalar_default"]
    _, tuning["noise_multiple"] = tune_one(follows.with_multiple, s.noise_multiple_grid, batches,
                                           "scalar CSC, lambda = c x noise", refine=s.refine)
    tuning["noise_multiple"]["shipped_default"] = follows.multiple
    for key in BART_SETTINGS:
        if key in methods and key not in grid.skip:
            methods[key].lambdas, tuning[key] = tune(methods[key].with_lambda, s.bart_grid, batches,
                                                     methods[key].name, refine=s.refine)
    return {"validation_images": int(val.shape[0]), "grids": tuning,
            "chosen": {k: dict(m.lambdas) for k, m in methods.items()
                       if getattr(m, "lambdas", None) and k not in grid.skip},
            "at_edge": sorted(f"{k}, noise {lv}" for k, t in tuning.items() for lv, v in t.items()
                              if isinstance(v, dict) and v.get("at_edge"))
                       + sorted(k for k, t in tuning.items() if t.get("at_edge") is True)}


def _figure_example(batch: Any, j: int, outputs: dict[str, torch.Tensor], maps: torch.Tensor,
                    level: float, index: int) -> dict[str, Any]:
    return {"slice": index, "noise_level": float(level), "target": batch.target[j].abs().numpy(),
            "outputs": {m: out[j].abs().numpy() for m, out in outputs.items()}, "maps": maps[j].numpy()}


def _run_grid(grid: TestGrid, methods: dict[str, Method], s: EvaluationSettings, results: dict[str, Any],
              examples: dict[str, Any]) -> float:
    """Run and score every method on the test sets of one grid; returns the largest relative image
    difference between the permuted and the original dictionary."""
    worst = 0.0
    methods = {m: method for m, method in methods.items() if m not in grid.skip}
    for label, split in grid.sets.items():
        images = load_split(split, grid.size, pixel_mm=grid.pixel_mm)
        chosen = pick_evenly(images.shape[0], grid.images)
        images = images[chosen]
        example = len(chosen) // 2
        results[label] = {}
        for level in grid.noise_levels:
            key = f"{level:g}"
            scores = {m: {k: [] for k in SCORES} for m in methods}
            t_level = time.perf_counter()
            for start in range(0, images.shape[0], s.batch_size):
                batch = fixed_lowfield(images[start:start + s.batch_size], float(level), seed=s.seed,
                                       start_index=start)
                outputs, maps = {}, None
                for m, method in methods.items():
                    if m == MAPS:  # the maps are kept for the figure; the low-pass part comes with them
                        outputs[m], maps, low = method.solve(batch)
                        if LOWPASS in methods:
                            outputs[LOWPASS] = low
                    elif m == LOWPASS:
                        continue
                    else:
                        outputs[m] = method(batch, float(level))
                reference = outputs[MAPS]
                diff = (outputs[PERMUTED] - reference).flatten(1).norm(dim=1) / reference.flatten(1).norm(dim=1)
                worst = max(worst, float(diff.max()))
                for m, out in outputs.items():
                    for k, v in _score(out, batch.target).items():
                        scores[m][k].extend(v)
                if (grid.figure and label == next(iter(grid.sets))
                        and start <= example < start + batch.target.shape[0]):
                    examples[f"{label}, noise {key}"] = _figure_example(
                        batch, example - start, outputs, maps, level, int(chosen[example]))
            results[label][key] = scores
            log.info("%s, noise %s (%d slices, %.0f s): %s", label, key, images.shape[0],
                     time.perf_counter() - t_level, ", ".join(
                         f"{m} {np.mean(v['psnr']):.2f} dB" for m, v in scores.items()))
    return worst


def settings_of(result: dict[str, Any]) -> EvaluationSettings:
    """The EvaluationSettings stored in a result (e.g. read back from results.json)."""
    return EvaluationSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in result["settings"].items()})


def figure_examples(result: dict[str, Any]) -> dict[str, Any]:
    """Recompute the figure's examples of a stored result (results.json keeps no images): the middle
    test slice of the figure grid's first set at each noise level, through zero-filled, BART TV
    with its tuned lambdas (when it was run) and the learned maps with their low-pass part; the same
    data and settings as the run, so the same images."""
    s = settings_of(result)
    device = torch.device(s.device)
    network, info = load_named_model(s.weights, device=device)
    settings = TrainedSettings.from_scalars(info.scalars).overridden(iterations=s.iterations or None)
    maps_method = MapCSC(load_named_dictionary(s.dictionary), settings, device, network=network)
    grid = next(g for g in test_grids(s) if g.figure and g.key in s.grids)
    label, split = next(iter(grid.sets.items()))
    images = load_split(split, grid.size, pixel_mm=grid.pixel_mm)
    chosen = pick_evenly(images.shape[0], grid.images)
    example = len(chosen) // 2
    bart = None
    if "bart_tv" in result["methods"]:
        bart = BartPics(BART_SETTINGS["bart_tv"][0], s.bart_iterations, random_shifts=BART_SETTINGS["bart_tv"][1],
                        lambdas=dict(result["tuning"][grid.key]["chosen"]["bart_tv"]))
    examples: dict[str, Any] = {}
    for level in grid.noise_levels:
        batch = fixed_lowfield(images[[chosen[example]]], float(level), seed=s.seed, start_index=example)
        outputs: dict[str, torch.Tensor] = {"zero_filled": ZeroFilled()(batch, float(level))}
        if bart is not None:
            outputs["bart_tv"] = bart(batch, float(level))
        outputs[MAPS], maps, outputs[LOWPASS] = maps_method.solve(batch)
        examples[f"{label}, noise {level:g}"] = _figure_example(batch, 0, outputs, maps, level, int(chosen[example]))
    return examples


def run_evaluation(s: EvaluationSettings) -> dict[str, Any]:
    """Tune, run and score every method on every test grid, test set and noise level.

    Returns {"settings", "facts", "tuning": {grid: ...}, "methods": {key: name}, "grids": {set label:
    grid key}, "results": {set: {level: {method: {score: [per image]}}}},
    "permutation_max_relative_difference", "examples", "seconds"}; the examples (the middle slice of
    each noise level of the figure's grid: magnitudes of every method, the ground truth and the
    learned maps) feed the figure and are not JSON."""
    t0 = time.perf_counter()
    device = torch.device(s.device)
    methods, facts = _build_methods(s, device)
    tuning: dict[str, Any] = {}
    results: dict[str, Any] = {}
    examples: dict[str, Any] = {}
    grids: dict[str, str] = {}
    worst_permutation = 0.0
    for grid in (g for g in test_grids(s) if g.key in s.grids):
        tuning[grid.key] = _tune(methods, s, grid)
        worst_permutation = max(worst_permutation, _run_grid(grid, methods, s, results, examples))
        grids.update({label: grid.key for label in grid.sets})
    settings = asdict(s)
    if settings["blackbox"]:  # the file's name, not a path of the machine that ran it
        settings["blackbox"] = Path(settings["blackbox"]).name
    return {"settings": settings, "facts": facts, "tuning": tuning,
            "methods": {k: m.name for k, m in methods.items()}, "grids": grids, "results": results,
            "permutation_max_relative_difference": worst_permutation, "examples": examples,
            "seconds": time.perf_counter() - t0}
