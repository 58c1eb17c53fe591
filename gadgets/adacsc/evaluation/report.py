"""The report of `adacsc evaluate`: a markdown results table with the method's targets checked,
a PNG figure (matplotlib) and the raw numbers as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from adacsc.evaluation.protocol import BART_SETTINGS, LOWPASS, MAPS, PERMUTED, SCORES, UNSEEN

__all__ = ["mean_score", "grid_labels", "targets", "render_markdown", "write_markdown", "write_figure", "write_json"]

#: issue 20: the maps at least this far above BART TV and above their own TV part, at noise levels
#: from TARGET_MIN_LEVEL up, and an unseen dictionary within UNSEEN_TOLERANCE_DB of the training one
OVER_BASELINE_DB = 1.0
TARGET_MIN_LEVEL = 0.1
UNSEEN_TOLERANCE_DB = 0.3

_SCORE_HEADS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "ssim_mask": "SSIM in mask", "nrmse": "NRMSE"}
_FORMATS = {"psnr": "{:.2f}", "ssim": "{:.3f}", "ssim_mask": "{:.3f}", "nrmse": "{:.3f}"}


def mean_score(result: dict[str, Any], label: str, level: str, method: str, score: str = "psnr") -> float:
    """The mean of one score of one method over a test set's slices at one noise level."""
    return float(np.mean(result["results"][label][level][method][score]))


def _gain(result: dict[str, Any], label: str, level: str, method: str) -> float:
    """PSNR gain over the zero-filled image: comparable across sets of different difficulty."""
    return mean_score(result, label, level, method) - mean_score(result, label, level, "zero_filled")


def grid_labels(result: dict[str, Any], grid: str) -> list[str]:
    """The test sets run on `grid` ("256" or "160"), in run order."""
    return [label for label, key in result["grids"].items() if key == grid]


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The method's expected properties, each {"target", "where", "value", "met"}: on the 256 grid
    of the real scans (issue 10), then on the 160 grid (issue 4)."""
    return _targets_256(result) + _targets_160(result)


def _targets_256(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 20's targets (held-out subject first), then issue 10's, on each 256-grid set."""
    rows: list[dict[str, Any]] = []
    methods = result["methods"]
    for label in grid_labels(result, "256"):
        levels = list(result["results"][label])
        for ref, name in (("bart_tv", "BART TV"), (LOWPASS, "its own low-pass part alone")):
            if ref not in methods:
                continue
            for level in levels:
                if float(level) < TARGET_MIN_LEVEL:
                    continue
                d = mean_score(result, label, level, MAPS) - mean_score(result, label, level, ref)
                rows.append({"target": f"maps at least {OVER_BASELINE_DB:.1f} dB above {name}",
                             "where": f"{label}, noise {level}", "value": f"{d:+.2f} dB", "met": d >= OVER_BASELINE_DB})
        if "unet" in methods and levels:
            level = min(levels, key=float)
            d = mean_score(result, label, level, MAPS) - mean_score(result, label, level, "unet")
            rows.append({"target": "maps no worse than the black-box U-Net at the lowest noise",
                         "where": f"{label}, noise {level}", "value": f"{d:+.2f} dB", "met": d >= 0.0})
        for level in levels:
            d = mean_score(result, label, level, MAPS) - mean_score(result, label, level, "scalar")
            rows.append({"target": f"maps beat '{methods['scalar']}' by >= 0.5 dB (aim 1 dB)",
                         "where": f"{label}, noise {level}", "value": f"{d:+.2f} dB", "met": d >= 0.5})
        for level in levels:
            d = mean_score(result, label, level, UNSEEN) - mean_score(result, label, level, MAPS)
            rows.append({"target": f"unseen larger dictionary within {UNSEEN_TOLERANCE_DB} dB of the training one",
                         "where": f"{label}, noise {level}", "value": f"{d:+.2f} dB", "met": d >= -UNSEEN_TOLERANCE_DB})
    return rows


def _targets_160(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    labels = grid_labels(result, "160")
    in_dist, *ood = labels or [None]
    levels = list(result["results"][in_dist]) if in_dist else []
    methods = result["methods"]
    for level in levels:
        for scalar in ("scalar", "scalar_one"):
            d = mean_score(result, in_dist, level, MAPS) - mean_score(result, in_dist, level, scalar)
            rows.append({"target": f"maps beat '{methods[scalar]}' by >= 1 dB", "where": f"in distribution, noise {level}",
                         "value": f"{d:+.2f} dB", "met": d >= 1.0})
    for label in result["results"]:
        for level in result["results"][label]:
            d = abs(mean_score(result, label, level, PERMUTED) - mean_score(result, label, level, MAPS))
            rows.append({"target": "permuted filters give the identical row", "where": f"{label}, noise {level}",
                         "value": f"|dPSNR| {d:.4f} dB", "met": d < 0.005})
    worst = result["permutation_max_relative_difference"]
    rows.append({"target": "permuted filters give the identical image", "where": "every test image",
                 "value": f"max relative difference {worst:.1e}", "met": worst < 1e-3})
    for level in levels:
        d = mean_score(result, in_dist, level, UNSEEN) - mean_score(result, in_dist, level, MAPS)
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
        for label in labels:
            for level in levels:
                best = max(bart, key=lambda m: mean_score(result, label, level, m))
                d = mean_score(result, label, level, MAPS) - mean_score(result, label, level, best)
                rows.append({"target": "maps at least as good as the best BART setting",
                             "where": f"{label}, noise {level}",
                             "value": f"{d:+.2f} dB against {methods[best]}", "met": d >= 0.0})
    return rows


def _results_table(result: dict[str, Any], label: str) -> list[str]:
    levels = list(result["results"][label])
    head = "| method | " + " | ".join(f"{_SCORE_HEADS[s]}, noise {lv}" for lv in levels for s in SCORES) + " |"
    lines = [head, "|" + " --- |" * (1 + len(levels) * len(SCORES))]
    for key, name in result["methods"].items():
        if key not in result["results"][label][levels[0]]:
            continue  # not run on this grid
        cells = []
        for lv in levels:
            for s in SCORES:
                values = result["results"][label][lv][key][s]
                cells.append(_FORMATS[s].format(float(np.mean(values))))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _tuned(result: dict[str, Any], grid: str) -> str:
    tuning = result["tuning"][grid]
    multiple = tuning["grids"]["noise_multiple"]
    edge = tuning.get("at_edge", [])
    return (f"{tuning['validation_images']} validation slices of the same grid: "
            + "; ".join(f"{result['methods'][k]}: " + ", ".join(f"noise {lv}: {lam:.4g}" for lv, lam in v.items())
                        for k, v in tuning["chosen"].items())
            + f"; best single lambda in units of the noise level over all levels: {multiple['best']:.4g} "
            f"(the scalar mode's default is {multiple['shipped_default']:g}); "
            + (f"**at the edge of the widened range: {', '.join(edge)}**" if edge else
               "every chosen value has tried neighbours on both sides within a factor 2^(1/4)"))


def _tuning_table(result: dict[str, Any], grid: str) -> list[str]:
    """Every value tried in tuning, per method and noise level, the chosen one in bold."""
    lines = ["| method | noise | validation PSNR (dB) by value tried (chosen in bold) |", "| --- | --- | --- |"]
    grids = result["tuning"][grid]["grids"]
    for key, per_level in grids.items():
        name = result["methods"].get(key, "scalar CSC, lambda = c x noise level" if key == "noise_multiple" else key)
        rows = ({"all levels (mean)": per_level} if "mean_psnr" in per_level
                else {lv: v for lv, v in per_level.items() if isinstance(v, dict)})
        for level, entry in rows.items():
            scores = entry.get("psnr") or entry.get("mean_psnr") or {}
            best = f"{entry['best']:.4g}"
            cells = ", ".join(f"**{k}: {v:.2f}**" if k == best else f"{k}: {v:.2f}" for k, v in scores.items())
            lines.append(f"| {name} | {level} | {cells} |")
    return lines


def write_markdown(result: dict[str, Any], path: Path, *, figure: str | None) -> Path:
    """Write `render_markdown(result, figure)` to `path`."""
    path.write_text(render_markdown(result, figure))
    return path


def render_markdown(result: dict[str, Any], figure: str | None) -> str:
    """The results document: how it was made (result["provenance"]: command, commit, date), the
    tuned settings, one table per test set, the targets, every value tried in tuning, the figure.
    A function of the result alone, so results.json re-renders the shipped document exactly."""
    s, facts = result["settings"], result["facts"]
    prov = result.get("provenance", {})
    command, commit, date = prov.get("command", "adacsc evaluate"), prov.get("commit"), prov.get("date", "unknown")
    rendered = prov.get("report_commit")
    low = (f"TV low-pass (weight {facts['tv_weight']:g} x noise level)" if facts["lowpass"] == "tv"
           else f"Tikhonov low-pass (learned beta {facts['beta']:.3f})")
    lines = [
        "# Evaluation: learned-map CSC against its baselines",
        "",
        "Written by `adacsc evaluate`; regenerate with:",
        "",
        f"    {command}",
        "",
        f"Commit `{commit or 'unknown'}`, {date}, {result['seconds'] / 60:.1f} min on `{s['device']}`"
        + (f"; this document re-rendered from results.json by commit `{rendered}` "
           "(`adacsc evaluate --report-only`)." if rendered else "."),
        "",
        "## Protocol",
        "",
        "- 256 grid (the headline): 256 x 256 at 0.72 mm, 128 x 128 acquired, noise levels "
        f"{', '.join(f'{lv:g}' for lv in s['noise_levels_256'])}; {s['images_256']} slices each of the "
        "**held-out subject** (the MNI ICBM152 2009a T1 template, an average of 152 adults: anatomy never "
        "used in training, tuning or dictionary learning; slices every 8 mm in three orientations) and of the "
        "Colin27 test slabs (unseen slabs of the training subject, separated from the training slabs by "
        "a dropped slice on each side). The bundled real 0.055 T FSE and FLAIR scans have about this matrix "
        "(126 x 128 acquired, 252 x 256 after the chain's 2x super-resolution) but not this pixel size: with "
        "the 280 mm field of view that `adacsc.conversion.lowfield_mat` assumes (the source files carry no "
        "geometry) their pixels are about 1.1 mm (2.2 mm acquired resolution), against 0.72 mm (1.44 mm) here; "
        "training covered 0.7-1.5 mm.",
        (f"- 160 grid: {s['images']} slices each of the Colin27 test slabs (in distribution), the INIA19 macaque "
         "template and the analytic phantom (out of distribution), 160 x 160 (80 x 80 acquired), noise levels "
         f"{', '.join(f'{lv:g}' for lv in s['noise_levels'])}. " if "160" in result["tuning"] else
         "- 160 grid: not run this time (`--grids 256`). ")
        + "Test slices are evenly spaced through their split and never used in training or tuning; see "
        "docs/DATA.md.",
        "- Degradation (`adacsc.training.lowfield.fixed_lowfield`): the central 50 % k-space block per axis "
        "(2x super-resolution) plus complex Gaussian noise with std = level x RMS of the acquired samples "
        f"(noise seeded per image, seed {s['seed']}). Every CSC solve is told the true noise level, as the "
        "noise scan tells the gadget.",
        "- Scores: PSNR (peak = ground-truth maximum), SSIM (Gaussian window, sigma 1.5; equal to "
        "scikit-image's `structural_similarity` with `gaussian_weights=True, use_sample_covariance=False`, "
        "a test checks it) over the whole image and inside the object mask (ground truth above 10 % of its "
        "maximum, holes filled, dilated by 2 pixels: whole-image SSIM mostly scores the empty background) "
        "and NRMSE, of the magnitude against the ground-truth magnitude, mean over the slices "
        "(`adacsc.metrics`).",
        f"- CSC: {facts['iterations']} FISTA iterations"
        f"{' (the count the weights were trained with)' if not s['iterations'] else ''}, weights "
        f"`{facts['weights']}` ({'noise-aware' if facts['noise_aware'] else 'not noise-aware'}), {low}, "
        "the same for every CSC row; "
        f"training dictionary `{facts['dictionary']}`, unseen dictionary `{facts['unseen_dictionary']}` "
        f"(never used in training or validation), filter permutation seed {s['permutation_seed']}.",
        f"- Tuning per grid and noise level on Colin27 validation slices (noise seed {s['seed'] + 100}) by a "
        "bracketed search over lambda (normalised units; `adacsc.evaluation.methods.tune`): the starting grid, "
        "widened past an end while the best value sits there, then refined around the best value until its "
        "tried neighbours are within a factor 2^(1/4) on both sides"
        + (" (**not this time: `--grid-only`, the plain grid search**)" if not s.get("refine", True) else "")
        + ". Chosen values: " + " ".join(f"{grid} grid: {_tuned(result, grid)}." for grid in result["tuning"])
        + " Every value tried: section 'Tuning' below.",
    ]
    if "blackbox" in facts:
        lines.append(_blackbox_line(facts["blackbox"], facts))
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
    lines += ["", "## Tuning", ""]
    for grid in result["tuning"]:
        lines += [f"{grid} grid:", ""] + _tuning_table(result, grid) + [""]
    if figure:
        lines += ["## Figure", "",
                  "One slice of the held-out subject per noise level (256 grid) and one real 0.055 T slice: ground "
                  "truth, zero-filled, BART TV, the CSC's low-pass part alone, the learned-map CSC reconstruction "
                  "and the mean Lambda map over the filters (in units of the noise level for noise-aware weights). "
                  "The real slice is the default chain's; BART TV and the low-pass part run on the chain's "
                  "coil-combined data of that slice, BART TV with the lambda tuned for the scan's noise level "
                  "(log-log interpolation between the tuned levels; adacsc.evaluation.real_scan).",
                  "", f"![evaluation figure]({figure})"]
    return "\n".join(lines) + "\n"


def _blackbox_line(bb: dict[str, Any], facts: dict[str, Any]) -> str:
    """What the black-box U-Net is and how it was trained, from its own provenance."""
    if bb.get("pixel_sizes_mm"):
        data = (f"training slices at {', '.join(f'{p:g}' for p in bb['pixel_sizes_mm'])} mm, crops of "
                f"{bb.get('crop_min') or bb.get('crop')}-{bb.get('crop')} pixels per side")
    else:
        data = f"{bb.get('image_size')} x {bb.get('image_size')} training slices (1.375 mm), {bb.get('crop')} x {bb.get('crop')} crops"
    noise = bb.get("noise_level") or ["?", "?"]
    block = bb.get("block_fraction") or ["?", "?"]
    return (f"- Black-box U-Net: `{bb['file']}` ({bb['parameters']} parameters), trained by `adacsc train --model "
            f"unet-blackbox --schedule {bb.get('schedule')}` ({data}, acquired block {block[0]:g}-{block[1]:g} of the "
            f"grid per axis, noise {noise[0]:g}-{noise[1]:g}; {bb['steps']} steps of {bb.get('batch_size')} images, "
            f"{bb['training_seconds']} s, commit `{(bb.get('commit') or 'unknown')[:7]}`). It is not told the noise "
            "level and has no data consistency.")


def write_figure(result: dict[str, Any], path: Path, real: dict[str, Any] | None = None) -> Path:
    """PNG: one row per 256-grid noise level (ground truth, zero-filled, BART TV, the CSC's low-pass
    part, learned-map CSC, mean Lambda map) and, with `real` ({"title", "outputs": method key ->
    magnitude, "maps"}: adacsc.evaluation.real_scan), one row for a real scan slice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = result["methods"]
    shown = (["zero_filled"] + (["bart_tv"] if "bart_tv" in methods else []) + ([LOWPASS] if LOWPASS in methods else [])
             + [MAPS])
    rows = list(result["examples"].items())
    cols = 2 + len(shown)
    n_rows = len(rows) + (real is not None)
    fig, axes = plt.subplots(n_rows, cols, figsize=(2.2 * cols, 2.4 * n_rows), squeeze=False)
    for r, (title, ex) in enumerate(rows):
        vmax = float(np.percentile(ex["target"], 99.5))
        panels = [("ground truth", ex["target"])] + [(methods[m], ex["outputs"][m]) for m in shown]
        _draw_row(axes[r], panels, vmax, ex["maps"].mean(axis=0), _wrap(title, 30))
    if real is not None:
        images = real["outputs"]
        vmax = float(np.percentile(images[MAPS], 99.5))
        panels = [("(no ground truth)", None)] + [(methods[m] if m in images else "(not run on real data)",
                                                   images.get(m)) for m in shown]
        _draw_row(axes[-1], panels, vmax, real["maps"], _wrap(real["title"], 30))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _draw_row(axes: Any, panels: list[tuple[str, np.ndarray | None]], vmax: float, mean_map: np.ndarray,
              label: str) -> None:
    """Magnitude panels (gray, common window) then the mean Lambda map (viridis) in one figure row."""
    for ax, (title, image) in zip(axes, panels):
        if image is not None:
            ax.imshow(image, cmap="gray", vmin=0, vmax=vmax)
        else:
            ax.set_frame_on(False)
        ax.set_title(_wrap(title), fontsize=6)
    ax = axes[len(panels)]
    im = ax.imshow(mean_map, cmap="viridis", vmin=0, vmax=float(np.percentile(mean_map, 99)))
    ax.set_title("Lambda, mean over filters", fontsize=6)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=5)
    axes[0].set_ylabel(label, fontsize=6)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(panels) + 1:]:
        ax.axis("off")


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
