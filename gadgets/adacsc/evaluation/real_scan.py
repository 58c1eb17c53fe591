"""The figure's real-scan row: a slice of a bundled 0.055 T scan through the default chain (run by
`adacsc evaluate`, which may stream), beside BART TV and the CSC's own TV part alone run on the
chain's coil-combined data. A real scan has no ground truth to tune on, so BART TV takes the lambda
tuned on the validation slices for the scan's own noise level (log-log interpolation between the
tuned levels)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from adacsc.core.app import TrainedSettings
from adacsc.core.fourier import SampledFourier
from adacsc.evaluation.methods import BartPics, LowPassPart
from adacsc.evaluation.protocol import BART_SETTINGS, LOWPASS, MAPS
from adacsc.io.dictionary_file import load_named_dictionary
from adacsc.io.weights_file import read_model_info
from adacsc.resources import WEIGHTS, resolve
from adacsc.training.lowfield import LowFieldBatch

__all__ = ["real_example", "lambda_for_level"]


def lambda_for_level(chosen: dict[str, float], level: float) -> float:
    """The tuned lambda at `level`: log-log interpolation between the tuned noise levels, the end
    values beyond them."""
    if not chosen:
        raise ValueError("no tuned lambdas to interpolate")
    levels = sorted(chosen, key=float)
    x = np.log([float(lv) for lv in levels])
    y = np.log([chosen[lv] for lv in levels])
    return float(np.exp(np.interp(np.log(level), x, y)))


def real_example(title: str, chain: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """{"title", "maps", "noise_level", "outputs": {"zero_filled", MAPS, LOWPASS and, when the
    result ran BART, "bart_tv"} as magnitudes, "bart_lambda"}. `chain` is one slice of the default
    chain's complex output with the result's weights, dictionary and iterations: {"zero_filled",
    "reconstruction", "maps", "noise_std" (k-space, the chain's NoiseLevel), "super_resolution"}."""
    s = result["settings"]
    x0 = chain["zero_filled"]
    grid = x0.shape
    acquired = tuple(n // chain["super_resolution"] for n in grid)
    operator = SampledFourier(acquired, grid)
    kspace = operator.forward(torch.from_numpy(x0)[None])
    sigma = torch.tensor([chain["noise_std"]], dtype=torch.float32)
    level = float(sigma[0] / kspace.abs().pow(2).mean().sqrt())
    batch = LowFieldBatch(torch.zeros((1,) + grid, dtype=torch.complex64), kspace, operator,
                          torch.tensor([level], dtype=torch.float32), sigma)
    info = read_model_info(resolve(WEIGHTS, s["weights"]))
    settings = TrainedSettings.from_scalars(info.scalars).overridden(iterations=s["iterations"] or None)
    panels = {"zero_filled": np.abs(x0), MAPS: np.abs(chain["reconstruction"]),
              LOWPASS: LowPassPart(load_named_dictionary(s["dictionary"]), settings)(batch, level)[0].abs().numpy()}
    example = {"title": f"{title}, noise level {level:.3g}",
               "maps": chain["maps"], "noise_level": level, "outputs": panels}
    if "bart_tv" in result["methods"]:
        lam = lambda_for_level(result["tuning"]["256"]["chosen"]["bart_tv"], level)
        regulariser, shifts = BART_SETTINGS["bart_tv"]
        bart = BartPics(regulariser, s["bart_iterations"], random_shifts=shifts)
        panels["bart_tv"] = bart.with_lambda(lam)(batch, level)[0].abs().numpy()
        example["bart_lambda"] = lam
        example["title"] += f", BART TV lambda {lam:.3g} (tuned at that noise level)"
    return example
