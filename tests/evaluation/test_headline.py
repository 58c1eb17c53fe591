"""The headline block: rendered from a results.json, placed between its markers, and refused
with the file named where the markers are missing or doubled."""

import json
import shutil
from pathlib import Path

import pytest

from adacsc import cli
from adacsc.evaluation.headline import BEGIN, END, render_headline, replace_headline

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "evaluation" / "results.json"


@pytest.fixture
def result() -> dict:
    return json.loads(RESULTS.read_text())


def test_headline_reports_the_gaps_of_the_held_out_set_and_the_targets_missed(result):
    label = next(label for label, grid in result["grids"].items() if grid == "256")
    level = "0.3"
    scores = result["results"][label][level]
    gap = sum(scores["maps"]["psnr"]) / len(scores["maps"]["psnr"]) - sum(scores["bart_tv"]["psnr"]) / len(scores["bart_tv"]["psnr"])
    block = render_headline(result)
    assert block.startswith(BEGIN) and block.endswith(END)
    assert label in block.splitlines()[2]
    bart_line = next(line for line in block.splitlines() if line.startswith("- maps - BART TV"))
    assert f"{gap:+.2f}" in bart_line
    assert ("missed by" in bart_line) == (gap < 1.0)


def test_a_headline_needs_the_256_grid(result):
    result["grids"] = {label: "160" for label in result["grids"]}
    with pytest.raises(ValueError, match="--grids 256"):
        render_headline(result)


@pytest.mark.parametrize("text", ["no markers", f"{BEGIN}\n{END}\n{BEGIN}\n{END}", f"{END}\n{BEGIN}"])
def test_replace_refuses_a_document_without_exactly_one_block(text):
    with pytest.raises(ValueError, match="NOTES.md needs exactly one headline block"):
        replace_headline(text, "x", "NOTES.md")


def test_report_only_rewrites_the_headline_of_the_named_documents(tmp_path, result):
    folder = tmp_path / "evaluation"
    folder.mkdir()
    shutil.copy(RESULTS, folder / "results.json")
    notes = tmp_path / "NOTES.md"
    notes.write_text(f"# Notes\n\nbefore\n{BEGIN}\nstale numbers\n{END}\nafter\n")
    assert cli.main(["evaluate", "-o", str(folder), "--report-only", "--headline-into", str(notes)]) == 0
    assert notes.read_text() == f"# Notes\n\nbefore\n{render_headline(result)}\nafter\n"
    assert (folder / "EVALUATION.md").read_text().startswith("# Evaluation")


def test_report_only_writes_nothing_when_one_document_has_no_block(tmp_path):
    folder = tmp_path / "evaluation"
    folder.mkdir()
    shutil.copy(RESULTS, folder / "results.json")
    good, bad = tmp_path / "A.md", tmp_path / "B.md"
    good.write_text(f"{BEGIN}\nold\n{END}\n")
    bad.write_text("no block\n")
    assert cli.main(["evaluate", "-o", str(folder), "--report-only", "--headline-into", str(good),
                     "--headline-into", str(bad)]) == 2
    assert good.read_text() == f"{BEGIN}\nold\n{END}\n"
