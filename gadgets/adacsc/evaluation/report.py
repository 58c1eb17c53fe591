"""The report of `adacsc evaluate`: a markdown results table with the method's targets checked,
a PNG figure (matplotlib) and the raw numbers as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from adacsc.evaluation.protocol import BART_SETTINGS, MAPS, PERMUTED, SCORES, TEST_SETS, UNSEEN

__all__ = ["targets", "write_markdown", "write_figure", "write_json"]

_SCORE_HEADS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "nrmse": "NRMSE"}
_FORMATS = {"psnr": "{:.2f}", "ssim": "{:.3f}", "nrmse": "{:.3f}"}


def _mean(result: dict[str, Any], label: str, level: str, method: str, score: str = "psnr") -> float:
    return float(np.mean(result["results"][label][level][method][score]))


def _gain(result: dict[str, Any], label: str, level: str, method: str) -> float:
    """PSNR gain over the zero-filled image: comparable across sets of different difficulty."""
    return _mean(result, label, level, method) - _mean(result, label, level, "zero_filled")


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The method's expected properties (issue 4), each {"target", "where", "value", "met"}."""
    rows: list[dict[str, Any]] = []
    in_dist, *ood = list(result["results"])
    levels = list(result["results"][in_dist])
    methods = result["methods"]
    for level in levels:
        for scalar in ("scalar", "scalar_one"):
            d = _mean(result, in_dist, level, MAPS) - _mean(result, in_dist, level, scalar)
            rows.append({"target": f"maps beat '{methods[scalar]}' by >= 1 dB", "where": f"in distribution, noise {level}",
                         "value": f"{d:+.2f} dB", "met": d >= 1.0})
    for label in result["results"]:
        for level in levels:
            d = abs(_mean(result, label, level, PERMUTED) - _mean(result, label, level, MAPS))
            rows.append({"target": "permuted filters give the identical row", "where": f"{label}, noise {level}",
                         "value": f"|dPSNR| {d:.4f} dB", "met": d < 0.005})
    worst = result["permutation_max_relative_difference"]
    rows.append({"target": "permuted filters give the identical image", "where": "every test image",
                 "value": f"max relative difference {worst:.1e}", "met": worst < 1e-3})
    for level in levels:
        d = _mean(result, in_dist, level, UNSEEN) - _mean(result, in_dist, level, MAPS)
        rows.append({"target": "unseen larger dictionary no worse than the training one by > 0.3 dB",
                     "where": f"in distribution, noise {level}", "value": f"{d:+.2f} dB", "met": d >= -0.3})
    if "unet" in methods:
        for label in ood:
            for level in levels:
                drop_maps = _gain(result, in_dist, level, MAPS) - _gain(result, label, level, MAPS)
                drop_unet = _gain(result, in_dist, level, "unet") - _gain(result, label, level, "unet")
                rows.append({"target": "maps lose less than the black-box U-Net out of distribution "
                                       "(drop of the gain over zero-filled)",
                             "where": f"{label}, noise {level}",
                             "value": f"maps {drop_maps:+.2f} dB, U-Net {drop_unet:+.2f} dB",
                             "met": drop_maps < drop_unet})
    bart = [m for m in BART_SETTINGS if m in methods]
    if bart:
        for label in result["results"]:
            for level in levels:
                best = max(bart, key=lambda m: _mean(result, label, level, m))
                d = _mean(result, label, level, MAPS) - _mean(result, label, level, best)
                rows.append({"target": "maps at least as good as the best BART setting",
                             "where": f"{label}, noise {level}",
                             "value": f"{d:+.2f} dB against {methods[best]}", "met": d >= 0.0})
    return rows


def _results_table(result: dict[str, Any], label: str) -> list[str]:
    levels = list(result["results"][label])
    head = "| method | " + " | ".join(f"{_SCORE_HEADS[s]}, noise {lv}" for lv in levels for s in SCORES) + " |"
    lines = [head, "|" + " --- |" * (1 + len(levels) * len(SCORES))]
    for key, name in result["methods"].items():
        cells = []
        for lv in levels:
            for s in SCORES:
                values = result["results"][label][lv][key][s]
                cells.append(_FORMATS[s].format(float(np.mean(values))))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def write_markdown(result: dict[str, Any], path: Path, *, command: str, figure: str | None, commit: str | None,
                   date: str) -> Path:
    """The results document: how it was made, the tuned settings, one table per test set, the
    targets, the figure."""
    s, facts, tuning = result["settings"], result["facts"], result["tuning"]
    lines = [
        "# Evaluation: learned-map CSC against its baselines",
        "",
        "Written by `adacsc evaluate`; regenerate with:",
        "",
        f"    {command}",
        "",
        f"Commit `{commit or 'unknown'}`, {date}, {result['seconds'] / 60:.1f} min on `{s['device']}`.",
        "",
        "## Protocol",
        "",
        f"- Test sets ({s['images']} slices each, evenly spaced; never used in training or tuning): "
        + "; ".join(f"{label} (`{split}` split)" for label, split in TEST_SETS.items())
        + ". See docs/DATA.md.",
        "- Degradation (`adacsc.training.lowfield.fixed_lowfield`): the central 50 % k-space block per axis "
        "(2x super-resolution onto the 160 x 160 grid) plus complex Gaussian noise at the noise-to-signal "
        f"levels {', '.join(f'{lv:g}' for lv in s['noise_levels'])} (noise seeded per image, seed {s['seed']}).",
        "- Scores: PSNR (peak = ground-truth maximum), SSIM (Gaussian window, sigma 1.5) and NRMSE of the "
        "magnitude against the ground-truth magnitude, mean over the slices (`adacsc.metrics`).",
        f"- CSC: {s['iterations']} FISTA iterations, weights `{facts['weights']}` (learned beta "
        f"{facts['beta']:.3f}, also used by the scalar rows), training dictionary `{facts['dictionary']}`, "
        f"unseen dictionary `{facts['unseen_dictionary']}` (never used in training or validation), "
        f"filter permutation seed {s['permutation_seed']}.",
        f"- Tuning on {tuning['validation_images']} validation slices (noise seed {s['seed'] + 100}), per "
        "noise level, by grid search over lambda (normalised units): "
        + "; ".join(f"{result['methods'][k]}: " + ", ".join(f"noise {lv}: {lam:g}" for lv, lam in v.items())
                    for k, v in tuning["chosen"].items()) + ".",
    ]
    if "blackbox" in facts:
        bb = facts["blackbox"]
        lines.append(f"- Black-box U-Net: `{bb['file']}` ({bb['parameters']} parameters), trained by "
                     f"`adacsc train --model unet-blackbox` on the same training slices, degradation and "
                     f"schedule ({bb['steps']} steps, {bb['training_seconds']} s).")
    if "bart_version" in facts:
        lines.append(f"- BART {facts['bart_version']} `pics -m -w 1` (ADMM, our units), {s['bart_iterations']} "
                     "iterations, l1 in a Daubechies wavelet domain (`-R W:3:0:lambda`, without and with BART's "
                     "random wavelet shifts) or total variation (`-R T:3:0:lambda`), each image scaled by the "
                     "robust scale of its zero-filled image as CSC does (adacsc.evaluation.bart).")
    for label in result["results"]:
        lines += ["", f"## {label}", ""] + _results_table(result, label)
    lines += ["", "## Targets", "", "| target | where | value | met |", "| --- | --- | --- | --- |"]
    for row in targets(result):
        lines.append(f"| {row['target']} | {row['where']} | {row['value']} | {'yes' if row['met'] else '**no**'} |")
    if figure:
        lines += ["", "## Figure", "",
                  "One slice per test set at the highest noise level: ground truth, every method, and the "
                  "learned Lambda maps (mean over filters and three single filters) of the training dictionary.",
                  "", f"![evaluation figure]({figure})"]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_figure(result: dict[str, Any], path: Path) -> Path:
    """PNG: per test set one row of magnitudes (ground truth, every method) and one row of maps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    examples = result["examples"]
    methods = result["methods"]
    shown = [m for m in methods if m not in (PERMUTED,)]
    cols = 1 + len(shown)
    fig, axes = plt.subplots(2 * len(examples), cols, figsize=(1.9 * cols, 4.1 * len(examples)), squeeze=False)
    for r, (label, ex) in enumerate(examples.items()):
        top, bottom = axes[2 * r], axes[2 * r + 1]
        vmax = float(np.percentile(ex["target"], 99.5))
        panels = [("ground truth", ex["target"])] + [(methods[m], ex["outputs"][m]) for m in shown]
        for ax, (title, image) in zip(top, panels):
            ax.imshow(image, cmap="gray", vmin=0, vmax=vmax)
            ax.set_title(_wrap(title), fontsize=6)
        top[0].set_ylabel(_wrap(f"{label}, noise {ex['noise_level']:g}", 28), fontsize=6)
        maps = ex["maps"]
        picks = [("Lambda, mean over filters", maps.mean(axis=0))] + [
            (f"Lambda, filter {k}", maps[k]) for k in np.linspace(0, maps.shape[0] - 1, 3).astype(int)]
        vmax_maps = float(np.percentile(maps, 99))
        for ax, (title, image) in zip(bottom, picks):
            im = ax.imshow(image, cmap="viridis", vmin=0, vmax=vmax_maps)
            ax.set_title(title, fontsize=6)
        fig.colorbar(im, ax=bottom[len(picks) - 1], fraction=0.046, pad=0.02).ax.tick_params(labelsize=5)
        for ax in list(top) + list(bottom):
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in bottom[len(picks):]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _wrap(text: str, width: int = 22) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join(lines + [line])


def write_json(result: dict[str, Any], path: Path) -> Path:
    """Every per-image score, the settings and the tuning grids (not the example images)."""
    data = {k: v for k, v in result.items() if k != "examples"}
    path.write_text(json.dumps(data, indent=1, default=float))
    return path
