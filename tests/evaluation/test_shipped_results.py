"""The shipped documents say what the shipped files hold: docs/evaluation/EVALUATION.md and the
headline blocks of README.md and docs/MODEL_CARD.md are renderings of docs/evaluation/results.json,
and every shipped weights file matches its .training.json."""

import json
import re
from pathlib import Path

import pytest

from adacsc import resources
from adacsc.evaluation.headline import BEGIN, END, render_headline
from adacsc.evaluation.report import render_markdown
from adacsc.io.weights_file import read_model_info
from adacsc.training.schedules import Schedule

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "evaluation"
WEIGHTS = Path(resources.package_data("data", "weights", "netv3_lowfield_tv.safetensors")).parent


def test_evaluation_document_is_the_rendering_of_results_json():
    result = json.loads((DOCS / "results.json").read_text())
    text = (DOCS / "EVALUATION.md").read_text()
    assert render_markdown(result, "evaluation.png") == text
    assert (DOCS / "evaluation.png").is_file()


@pytest.mark.parametrize("document", ["README.md", "docs/MODEL_CARD.md"])
def test_headline_blocks_are_the_rendering_of_results_json(document):
    result = json.loads((DOCS / "results.json").read_text())
    text = (ROOT / document).read_text()
    shipped = text[text.index(BEGIN):text.index(END) + len(END)]
    assert shipped == render_headline(result)


def test_results_json_names_no_path_of_the_machine_that_made_it():
    raw = (DOCS / "results.json").read_text()
    assert not re.search(r'"/(?:work|home|tmp|root|Users)/', raw)
    settings = json.loads(raw)["settings"]
    assert settings["blackbox"] is None or "/" not in settings["blackbox"]


@pytest.mark.parametrize("weights", sorted(p.name for p in WEIGHTS.glob("*.safetensors")))
def test_shipped_weights_match_their_training_record(weights):
    record = json.loads((WEIGHTS / weights).with_suffix(".training.json").read_text())
    info = read_model_info(WEIGHTS / weights)
    assert record["weights"] == weights
    assert info.provenance == record["provenance"]
    schedule = Schedule.from_dict(record["provenance"]["schedule"])
    assert info.provenance["steps"] == schedule.steps
    if "iterations" in info.scalars:
        assert int(info.scalars["iterations"]) == schedule.train_iterations
    assert ("tv_weight" in info.scalars) == (schedule.lowpass == "tv")
    if schedule.lowpass == "tv":
        assert info.scalars["tv_weight"] == pytest.approx(schedule.tv_weight)
