"""`adacsc dictionaries`: what a chain can name, and the analytic dictionaries written anew."""

from pathlib import Path

import numpy as np
import pytest

from adacsc import resources
from adacsc.cli import main
from adacsc.core.dictionary import random_dictionary
from adacsc.io.dictionary_file import load_dictionary, load_named_dictionary, save_dictionary


def test_lists_shipped_and_operator_dictionaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(resources.DICTIONARY.environment, str(tmp_path))
    save_dictionary(random_dictionary(4, 3), tmp_path / "site_k4.npz")
    assert main(["dictionaries"]) == 0
    rows = {line.split("\t")[0]: line.split("\t") for line in capsys.readouterr().out.splitlines()}
    assert rows["site_k4"][1:4] == ["K=4", "3x3", str(tmp_path.resolve())]
    assert rows[resources.DEFAULT_DICTIONARY][1:3] == ["K=32", "9x9"]


def test_writes_the_shipped_analytic_dictionaries(tmp_path: Path) -> None:
    assert main(["dictionaries", "--write-analytic", str(tmp_path)]) == 0
    written = sorted(tmp_path.glob("*.npz"))
    assert [p.stem for p in written] == ["dct7x7_k48", "dct9x9_k80", "gabor11x11_k64", "gabor9x9_k32"]
    for path in written:
        np.testing.assert_allclose(load_dictionary(path).filters, load_named_dictionary(path.stem).filters, atol=1e-7)


def test_the_deployed_pixel_scale_dictionary_records_how_it_was_learned() -> None:
    # learned on the training slices rendered at 0.7 mm (314 pixels over 220 mm), the pixel size
    # of the 256 test grid; an option, outside the training family (no network saw it)
    from adacsc.training.family import dictionary_role

    dictionary = load_named_dictionary("cdl_k32_11x11_l0.01_p07")
    assert (dictionary.num_filters, dictionary.filter_shape) == (32, (11, 11))
    np.testing.assert_allclose(np.linalg.norm(dictionary.filters.reshape(32, -1), axis=1), 1.0, atol=1e-5)
    meta = dictionary.metadata
    assert "--data-size 314" in meta["created_by"] and "--size 11" in meta["created_by"]
    assert meta["data"]["split"] == "train" and meta["data"]["image_size"] == 314
    assert dictionary_role(dictionary.name) is None
