"""Named resources: one name check and one lookup rule for dictionaries, weights, configs and
noise files (adacsc.resources)."""

import os
from pathlib import Path

import numpy as np
import pytest

from adacsc import resources
from adacsc.core.dictionary import random_dictionary
from adacsc.core.network import MapNetwork
from adacsc.io.dictionary_file import load_named_dictionary, save_dictionary
from adacsc.io.noise_store import NoiseStore, StoredNoise
from adacsc.io.weights_file import load_named_model, save_model

KINDS = [resources.DICTIONARY, resources.WEIGHTS, resources.CONFIG, resources.NOISE]
HOSTILE = ["", "..", "../evil", "a/b", "a\\b", "/etc/passwd", "..x", ".hidden", "x..y", "na me", "a\x00b", "x\n",
           "a" * 200]


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.noun)
@pytest.mark.parametrize("name", HOSTILE)
def test_names_that_are_not_plain_names_are_refused(kind: resources.ResourceKind, name: str) -> None:
    with pytest.raises(resources.ResourceError):
        resources.resolve(kind, name)


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.noun)
def test_the_suffix_is_optional(kind: resources.ResourceKind) -> None:
    assert resources.check_name(kind, "site-1.2_x") == "site-1.2_x" + kind.suffix
    assert resources.check_name(kind, "site" + kind.suffix) == "site" + kind.suffix


def test_shipped_resources_resolve_into_the_package() -> None:
    for kind, name in [(resources.DICTIONARY, resources.DEFAULT_DICTIONARY),
                       (resources.WEIGHTS, resources.DEFAULT_WEIGHTS), (resources.CONFIG, "adacsc_lowfield")]:
        path = resources.resolve(kind, name)
        assert path == (resources.package_data(*kind.shipped.split("/")) / (name + kind.suffix)).resolve()
        assert name in resources.names(kind)
    assert resources.bundled_scan().is_file()


@pytest.mark.parametrize("kind", [resources.DICTIONARY, resources.WEIGHTS, resources.CONFIG],
                         ids=lambda kind: kind.noun)
def test_extra_folders_then_the_operator_folder_then_the_shipped_ones(
        kind: resources.ResourceKind, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped_name = {resources.DICTIONARY: resources.DEFAULT_DICTIONARY, resources.WEIGHTS: resources.DEFAULT_WEIGHTS,
                    resources.CONFIG: "adacsc_lowfield"}[kind]
    extra, operator = tmp_path / "extra", tmp_path / "operator"
    extra.mkdir()
    operator.mkdir()
    monkeypatch.setenv(kind.environment, str(operator))
    assert resources.folders(kind, [extra])[:2] == [extra, operator]
    assert resources.resolve(kind, shipped_name).parent == resources.folders(kind)[-1].resolve()
    (operator / (shipped_name + kind.suffix)).write_text("operator's own")
    assert resources.resolve(kind, shipped_name) == (operator / (shipped_name + kind.suffix)).resolve()
    (extra / (shipped_name + kind.suffix)).write_text("extra")
    assert resources.resolve(kind, shipped_name, [extra]) == (extra / (shipped_name + kind.suffix)).resolve()
    (operator / ("site" + kind.suffix)).write_text("x")
    assert "site" in resources.names(kind)


def test_unknown_names_list_what_is_available(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(resources.DICTIONARY.environment, str(tmp_path))
    with pytest.raises(resources.ResourceError, match=r"no dictionary named 'absent'.*available: .*dct7x7_k48"):
        resources.resolve(resources.DICTIONARY, "absent")
    monkeypatch.setenv(resources.DICTIONARY.environment, str(tmp_path / "no_such_folder"))
    assert resources.resolve(resources.DICTIONARY, "dct7x7_k48").is_file()


def test_a_symlink_out_of_the_folder_is_not_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outside, inside = tmp_path / "outside", tmp_path / "dictionaries"
    outside.mkdir()
    inside.mkdir()
    save_dictionary(random_dictionary(2, 3), outside / "secret.npz")
    os.symlink(outside / "secret.npz", inside / "link.npz")
    monkeypatch.setenv(resources.DICTIONARY.environment, str(inside))
    with pytest.raises(resources.ResourceError, match="no dictionary named 'link'"):
        resources.resolve(resources.DICTIONARY, "link")


def test_named_files_load_from_the_operator_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(resources.DICTIONARY.environment, str(tmp_path))
    monkeypatch.setenv(resources.WEIGHTS.environment, str(tmp_path))
    save_dictionary(random_dictionary(4, 3), tmp_path / "site_k4.npz")
    save_model(MapNetwork(), tmp_path / "site_model.safetensors")
    assert load_named_dictionary("site_k4").num_filters == 4
    model, info = load_named_model("site_model")
    assert isinstance(model, MapNetwork) and info.kind == "v3"


def test_noise_files_live_in_the_operator_noise_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(resources.NOISE.environment, str(tmp_path))
    assert NoiseStore().folder == tmp_path
    noise = StoredNoise(np.eye(2, dtype=np.complex64), ["c0", "c1"], 5.0, 256)
    assert NoiseStore().save("MEAS_1", noise) == str(tmp_path / "noise_MEAS_1.npz")
    assert NoiseStore().load("MEAS_1").coil_labels == ["c0", "c1"]
    for name in ("../MEAS_1", "MEAS_1/../x"):
        with pytest.raises(ValueError, match="measurementID"):
            NoiseStore().load(name)
        with pytest.raises(ValueError, match="measurementID"):
            NoiseStore().save(name, noise)
