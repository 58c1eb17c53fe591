"""Dictionaries as data: file format, validation, shipped dictionaries and name resolution."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from adacsc.core.analytic import dct_dictionary, gabor_dictionary, shipped_dictionaries
from adacsc import resources
from adacsc.core.dictionary import Dictionary, DictionaryError, random_dictionary, validate_filters
from adacsc.io.dictionary_file import load_dictionary, load_named_dictionary, save_dictionary


def _norms(f: np.ndarray) -> np.ndarray:
    return np.sqrt((f.astype(np.float64) ** 2).sum(axis=(1, 2)))


def test_roundtrip_keeps_filters_and_metadata(tmp_path):
    d = random_dictionary(5, (3, 5), seed=3)
    path = save_dictionary(d, tmp_path / "r.npz")
    back = load_dictionary(path)
    np.testing.assert_array_equal(back.filters, d.filters)
    assert back.filters.dtype == np.float32 and back.filters.shape == (5, 3, 5)
    assert back.name == d.name and back.source == d.source
    assert back.metadata["created_by"] == d.metadata["created_by"]
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["metadata_json"]))
    assert meta["patch_size"] == [3, 5] and meta["num_filters"] == 5 and meta["name"] == d.name


def test_random_dictionary_is_deterministic_and_unit_norm():
    a, b, c = random_dictionary(8, 7, seed=1), random_dictionary(8, 7, seed=1), random_dictionary(8, 7, seed=2)
    np.testing.assert_array_equal(a.filters, b.filters)
    assert not np.array_equal(a.filters, c.filters)
    np.testing.assert_allclose(_norms(a.filters), 1.0, atol=1e-6)
    np.testing.assert_allclose(a.filters.sum(axis=(1, 2)), 0.0, atol=1e-5)


def test_renormalisation_is_logged(caplog):
    f = np.random.default_rng(0).standard_normal((3, 3, 3)) * 5
    with caplog.at_level(logging.INFO, logger="adacsc.core.dictionary"):
        out = validate_filters(f, "x")
    np.testing.assert_allclose(_norms(out), 1.0, atol=1e-6)
    assert "renormalising 3 of 3" in caplog.text


@pytest.mark.parametrize("filters, message", [
    (np.ones((3, 3)), "3-D"),
    (np.ones((0, 3, 3)), "no filters"),
    (np.stack([np.ones((3, 3)), np.zeros((3, 3))]), r"\[1\] are all zero"),
    (np.full((1, 3, 3), np.nan), "NaN"),
    (np.ones((1, 3, 3), dtype=np.complex64), "real"),
])
def test_validation_errors(filters, message):
    with pytest.raises(DictionaryError, match=message):
        validate_filters(filters, "bad")


def test_dictionary_error_is_a_value_error():
    with pytest.raises(ValueError):
        Dictionary(np.ones((0, 3, 3)), "empty")


@pytest.mark.parametrize("shape, padded", [((8, 8), (9, 9)), ((12, 12), (13, 13)), ((4, 3), (5, 3))])
def test_even_sizes_are_padded_keeping_the_centre_pixel(shape, padded):
    """SPORCO-style even filters: centre h // 2, w // 2 (fftshift's); one zero row/column is
    added at the bottom/right, so that pixel is the centre of the odd filter."""
    h, w = shape
    delta = np.zeros((1, h, w))
    delta[0, h // 2, w // 2] = 1.0
    rng = np.random.default_rng(1).standard_normal((2, h, w))
    out = Dictionary(np.concatenate([delta, rng]), "sporco_like").filters
    assert out.shape[1:] == padded
    assert out[0, padded[0] // 2, padded[1] // 2] == 1.0
    np.testing.assert_allclose(out[1:, :h, :w], rng / _norms(rng)[:, None, None], rtol=1e-6)
    assert not out[1:, h:, :].any() and not out[1:, :, w:].any()


@pytest.mark.parametrize("content, message", [
    (b"", "'bad.npz' is empty"),
    (None, "'bad.npz' is a single .npy array, not an .npz archive"),
    (b"filters = [[1, 2], [3, 4]]\n", "'bad.npz' is not an .npz archive"),
])
def test_files_that_are_not_npz_archives_are_named(content, message, tmp_path):
    path = tmp_path / "bad.npz"
    if content is None:
        with open(path, "wb") as fh:
            np.save(fh, np.ones((1, 3, 3)))
    else:
        path.write_bytes(content)
    with pytest.raises(DictionaryError) as caught:
        load_dictionary(path)
    assert message in str(caught.value)


def test_load_rejects_bad_files(tmp_path):
    np.savez(tmp_path / "nometa.npz", filters=np.ones((1, 3, 3), np.float32))
    with pytest.raises(DictionaryError, match="metadata_json"):
        load_dictionary(tmp_path / "nometa.npz")
    np.savez(tmp_path / "pickled.npz", filters=np.ones((1, 3, 3), np.float32),
             metadata_json=np.array([{"name": "x"}], dtype=object))
    with pytest.raises(DictionaryError, match="cannot read|single string"):
        load_dictionary(tmp_path / "pickled.npz")
    np.savez(tmp_path / "badjson.npz", filters=np.ones((1, 3, 3), np.float32), metadata_json=np.array("{nope"))
    with pytest.raises(DictionaryError, match="JSON"):
        load_dictionary(tmp_path / "badjson.npz")
    with pytest.raises(DictionaryError, match="does not exist"):
        load_dictionary(tmp_path / "missing.npz")


def test_analytic_dictionaries():
    dct = dct_dictionary(7)
    assert dct.name == "dct7x7_k48" and dct.filters.shape == (48, 7, 7)
    flat = dct.filters.reshape(48, -1).astype(np.float64)
    np.testing.assert_allclose(flat @ flat.T, np.eye(48), atol=1e-6)  # orthonormal atoms
    np.testing.assert_allclose(flat.sum(axis=1), 0.0, atol=1e-6)      # no DC
    gab = gabor_dictionary(9)
    assert gab.name == "gabor9x9_k32" and gab.filters.shape == (32, 9, 9)
    np.testing.assert_allclose(gab.filters.sum(axis=(1, 2)), 0.0, atol=1e-5)


def test_shipped_files_match_their_generator():
    names = resources.names(resources.DICTIONARY)
    assert resources.DEFAULT_DICTIONARY in names and len(names) >= 2
    for generated in shipped_dictionaries():
        d = load_named_dictionary(generated.name)
        np.testing.assert_allclose(d.filters, generated.filters, atol=1e-7)
        np.testing.assert_allclose(_norms(d.filters), 1.0, atol=1e-5)
        assert d.source.startswith("analytic") and "analytic" in d.metadata["created_by"]


def test_permuted_dictionary():
    d = random_dictionary(4, 3)
    p = d.permuted([2, 0, 3, 1])
    np.testing.assert_array_equal(p.filters, d.filters[[2, 0, 3, 1]])
    with pytest.raises(DictionaryError, match="permutation"):
        d.permuted([0, 0, 1, 2])
