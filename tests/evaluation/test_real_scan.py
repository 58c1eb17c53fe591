"""The figure's real-scan row: BART TV's lambda for a real scan's noise level comes from the tuned
values, and the row runs the baselines on the chain's coil-combined data."""

import shutil

import numpy as np
import pytest

from adacsc.commands.evaluate import real_example
from adacsc.evaluation.protocol import LOWPASS, MAPS
from adacsc.evaluation.real_scan import lambda_for_level

TUNED = {"0.05": 0.02, "0.15": 0.08, "0.3": 0.2}


@pytest.mark.parametrize("level, expected", [(0.05, 0.02), (0.3, 0.2), (0.01, 0.02), (1.0, 0.2),
                                             ((0.05 * 0.15) ** 0.5, (0.02 * 0.08) ** 0.5)])
def test_lambda_is_interpolated_in_log_log_and_held_at_the_ends(level, expected):
    assert lambda_for_level(TUNED, level) == pytest.approx(expected, rel=1e-9)


def test_no_tuned_lambdas_is_an_error():
    with pytest.raises(ValueError, match="no tuned lambdas"):
        lambda_for_level({}, 0.1)


def _roughness(image: np.ndarray) -> float:
    return float(np.abs(np.diff(image, axis=0)).mean() + np.abs(np.diff(image, axis=1)).mean())


@pytest.mark.parametrize("bart", [False, pytest.param(True, marks=pytest.mark.skipif(
    shutil.which("bart") is None, reason="BART (Debian package bart) is not installed"))])
def test_real_row_runs_the_baselines_on_the_chains_combined_data(bart):
    result = {"settings": {"weights": "netv3_lowfield_tv", "dictionary": "cdl_k32_9x9_l0.01", "iterations": 4,
                           "bart_iterations": 20},
              "methods": {"bart_tv": "BART pics, TV"} if bart else {},
              "tuning": {"256": {"chosen": {"bart_tv": TUNED}}}}
    row = real_example("sim_brain_4coil_64.h5", result)
    panels = row["outputs"]
    assert set(panels) == {"zero_filled", MAPS, LOWPASS} | ({"bart_tv"} if bart else set())
    shapes = {image.shape for image in panels.values()} | {row["maps"].shape}
    assert len(shapes) == 1 and min(shapes.pop()) >= 64
    assert 0.01 < row["noise_level"] < 1
    for key in panels.keys() - {"zero_filled"}:
        assert _roughness(panels[key]) < _roughness(panels["zero_filled"])
    if bart:
        assert row["bart_lambda"] == pytest.approx(lambda_for_level(TUNED, row["noise_level"]))
        assert "BART TV lambda" in row["title"]
