"""The evaluation's headline (held-out table and target gaps) as a markdown block for README.md and
docs/MODEL_CARD.md. It is rendered from results.json and written between two marker lines, so the
documents repeat the numbers of the last `adacsc evaluate` and a test can check that they do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from adacsc.evaluation.protocol import LOWPASS, MAPS, UNSEEN
from adacsc.evaluation.report import OVER_BASELINE_DB, TARGET_MIN_LEVEL, UNSEEN_TOLERANCE_DB, grid_labels, mean_score

__all__ = ["BEGIN", "END", "render_headline", "replace_headline", "write_headline"]

BEGIN = "<!-- headline: rendered by `adacsc evaluate` from docs/evaluation/results.json; do not edit -->"
END = "<!-- headline ends -->"

_ROWS = ("zero_filled", LOWPASS, "scalar", MAPS, UNSEEN, "unet", "bart_tv", "bart_wavelet")


def _psnr(result: dict[str, Any], label: str, level: str, method: str) -> np.ndarray:
    return np.asarray(result["results"][label][level][method]["psnr"], dtype=float)


def _row_name(result: dict[str, Any], method: str) -> str:
    if method == MAPS:
        return "**CSC, learned maps (default chain)**"
    if method == UNSEEN:
        return f"CSC, learned maps, unseen {result['facts']['unseen_dictionary']} dictionary"
    if method == "unet":
        bb = result["facts"].get("blackbox", {})
        noise = bb.get("noise_level") or ["?", "?"]
        return f"black-box U-Net (schedule {bb.get('schedule')}, noise {noise[0]:g}-{noise[1]:g})"
    if method.startswith("bart_"):
        return f"{result['methods'][method]}, tuned"
    return result["methods"][method]


def _table(result: dict[str, Any], label: str, levels: list[str]) -> list[str]:
    lines = ["| method | " + " | ".join(f"noise {lv}" for lv in levels) + " |",
             "|" + " --- |" * (1 + len(levels))]
    for method in _ROWS:
        if method not in result["results"][label][levels[0]]:
            continue
        cells = [f"{mean_score(result, label, lv, method):.2f} ({mean_score(result, label, lv, method, 'ssim_mask'):.3f})"
                 for lv in levels]
        if method == MAPS:
            cells = [f"**{c}**" for c in cells]
        lines.append(f"| {_row_name(result, method)} | " + " | ".join(cells) + " |")
    return lines


def _gaps(result: dict[str, Any], label: str, levels: list[str], ref: str) -> tuple[str, list[float]]:
    """'+a, +b, +c dB ... (better on n/N, ...)' of the maps against `ref`, and the gaps."""
    gaps, counts = [], []
    for lv in levels:
        maps, other = _psnr(result, label, lv, MAPS), _psnr(result, label, lv, ref)
        gaps.append(float(maps.mean() - other.mean()))
        counts.append(f"{int((maps > other).sum())}/{maps.size}")
    text = (", ".join(f"{g:+.2f}" for g in gaps) + f" dB at noise {', '.join(levels)} (better on "
            + ", ".join(counts) + " slices)")
    return text, gaps


def _target(gaps: list[float], levels: list[str], minimum: float, at_least: float) -> str:
    """'met' or 'missed by ...' for the levels >= `minimum`."""
    misses = [(lv, at_least - g) for lv, g in zip(levels, gaps) if float(lv) >= minimum and g < at_least]
    if not misses:
        return "met"
    return "**missed by " + ", ".join(f"{m:.2f} dB at {lv}" for lv, m in misses) + "**"


def render_headline(result: dict[str, Any]) -> str:
    """The block between BEGIN and END (markers included) for the first 256-grid set (the held-out
    subject), with the targets of issue 20 checked, and the second set's gaps in one line."""
    labels = grid_labels(result, "256")
    if not labels:
        raise ValueError("results.json holds no 256-grid set: the headline needs `adacsc evaluate --grids 256`")
    label, *others = labels
    levels = list(result["results"][label])
    methods = result["results"][label][levels[0]]
    lines = [BEGIN, "", f"{label}, {len(_psnr(result, label, levels[0], MAPS))} slices; mean PSNR in dB "
             "(SSIM inside the object mask):", ""] + _table(result, label, levels) + [""]
    if "bart_tv" in methods:
        text, gaps = _gaps(result, label, levels, "bart_tv")
        lines.append(f"- maps - BART TV: {text}; target >= +{OVER_BASELINE_DB:.1f} dB at 0.15 and 0.3: "
                     f"{_target(gaps, levels, TARGET_MIN_LEVEL, OVER_BASELINE_DB)};")
    text, gaps = _gaps(result, label, levels, LOWPASS)
    lines.append(f"- maps - the CSC's own TV part alone: {text}; target >= +{OVER_BASELINE_DB:.1f} dB at 0.15 and 0.3: "
                 f"{_target(gaps, levels, TARGET_MIN_LEVEL, OVER_BASELINE_DB)};")
    if "unet" in methods:
        text, gaps = _gaps(result, label, levels, "unet")
        lines.append(f"- maps - the black-box U-Net: {text}; target at the lowest noise (no worse): "
                     f"{_target(gaps[:1], levels[:1], 0.0, 0.0)};")
    unseen = [mean_score(result, label, lv, UNSEEN) - mean_score(result, label, lv, MAPS) for lv in levels]
    verdict = "met" if min(unseen) >= -UNSEEN_TOLERANCE_DB else "**missed**"
    lines.append(f"- unseen {result['facts']['unseen_dictionary']} - training dictionary: "
                 + ", ".join(f"{d:+.2f}" for d in unseen)
                 + f" dB (target within {UNSEEN_TOLERANCE_DB} dB: {verdict});")
    for other in others:
        parts = [f"the TV part alone {_gaps(result, other, levels, LOWPASS)[0]}"]
        if "bart_tv" in methods:
            parts.append(f"BART TV {_gaps(result, other, levels, 'bart_tv')[0]}")
        lines.append(f"- {other}: maps against " + "; against ".join(parts) + ".")
    return "\n".join(lines + ["", END])


def replace_headline(text: str, block: str, where: str) -> str:
    """`text` with its one BEGIN ... END block replaced by `block`."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{where} needs exactly one headline block: a line {BEGIN!r} and, after it, {END!r}")
    head, rest = text.split(BEGIN, 1)
    return head + block + rest.split(END, 1)[1]


def write_headline(result: dict[str, Any], paths: list[Path]) -> None:
    """Rewrite the headline block of each document in `paths` (all checked before any is written)."""
    block = render_headline(result)
    updated = {path: replace_headline(path.read_text(), block, str(path)) for path in paths}
    for path, text in updated.items():
        path.write_text(text)
