"""Convolutional dictionary learning (adacsc.training.cdl) and `adacsc learn-dictionary`."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from adacsc.core.convolution import Synthesis
from adacsc.core.filter_bank import FilterBank
from adacsc.io.dictionary_file import load_dictionary
from adacsc.training import cdl


def _smooth_crops(b=6, c=32, seed=0):
    """Synthetic piecewise-smooth complex crops (edges and lines), high-pass filtered and windowed."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(c, dtype=torch.float32), torch.arange(c, dtype=torch.float32),
                            indexing="ij")
    imgs = []
    for _ in range(b):
        img = torch.zeros(c, c)
        for _ in range(4):
            a, bb, off = (torch.rand(3, generator=g) - 0.5) * torch.tensor([2.0, 2.0, c])
            img = img + (a * (xx - c / 2) + bb * (yy - c / 2) > off).float() * torch.rand(1, generator=g)
        imgs.append(img * torch.exp(1j * torch.rand(1, generator=g) * 6.28))
    x = cdl.highpass(torch.stack(imgs).to(torch.complex64))
    return (x * cdl.crop_window(c, 6)).to(torch.complex64)


def test_tiny_cdl_lowers_objective_and_returns_unit_norm_filters():
    x = _smooth_crops()
    cfg = cdl.CDLConfig(num_filters=4, filter_size=7, lam=0.01, iterations=12, crops=6, crop_size=32,
                        taper=6, final_code_steps=40, reseed_every=0)
    # objective of the initial filters (patches), with the same final solve
    d0 = cdl._initial_filters(x, 4, 7, np.random.default_rng(cfg.seed))
    before = cdl.cdl_objective(d0, x, cdl.sparse_code(d0, x, cfg.lam, cfg.final_code_steps), cfg.lam)
    result = cdl.learn_dictionary(x, cfg, progress=False, log_every=3)
    f = result.filters
    assert f.shape == (4, 7, 7) and f.dtype == torch.float32
    assert torch.allclose(f.flatten(1).norm(dim=1), torch.ones(4), atol=1e-5)
    assert result.final["objective"] < before["objective"]
    objs = [h["objective"] for h in result.history]
    assert objs[-1] < objs[0]
    d = result.dictionary
    assert d.name == "cdl_k4_7x7_l0.01" and d.num_filters == 4
    assert d.metadata["cdl_config"]["lam"] == 0.01
    assert d.metadata["final_objective"]["objective"] == pytest.approx(result.final["objective"])


def test_sparse_code_matches_core_synthesis_and_decreases_objective():
    x = _smooth_crops(3, 32, seed=1)
    d = torch.from_numpy(np.random.default_rng(0).standard_normal((5, 7, 7))).float()
    d = d / d.flatten(1).norm(dim=1)[:, None, None]
    lam = 0.005
    s = cdl.sparse_code(d, x, lam, 30)
    terms = cdl.cdl_objective(d, x, s, lam)
    # the data term with the core's synthesis operator D (same convolution convention)
    r = Synthesis(FilterBank(d))(s) - x
    assert terms["data"] == pytest.approx(0.5 * float(r.abs().pow(2).sum()) / 3, rel=1e-4)
    zero = cdl.cdl_objective(d, x, torch.zeros_like(s), lam)
    assert terms["objective"] < zero["objective"]
    s_more = cdl.sparse_code(d, x, lam, 30, s0=s)  # a warm start continues to descend
    assert cdl.cdl_objective(d, x, s_more, lam)["objective"] <= terms["objective"] * (1 + 1e-4)


def test_filter_gradient_matches_autograd():
    from adacsc.core.convolution import filter_spectra

    x = _smooth_crops(3, 24, seed=2)
    k, n = 3, 24 * 24
    g = torch.Generator().manual_seed(0)
    s = 0.05 * torch.randn(3, k, 24, 24, dtype=torch.complex64, generator=g)
    d = torch.randn(k, 5, 5, generator=g)
    s_hat = torch.fft.fft2(s)
    sc = s_hat.reshape(3, k, n).permute(2, 1, 0)
    gram = torch.matmul(sc.conj(), sc.transpose(1, 2))
    h = torch.matmul(sc.conj(), torch.fft.fft2(x).reshape(3, n).T[:, :, None])[:, :, 0]
    step = cdl._FilterStep((k, 5, 5), (24, 24), g)
    grad = step._grad(d, gram, h)
    dd = d.clone().requires_grad_(True)
    r = torch.fft.ifft2((s_hat * filter_spectra(dd, (24, 24))).sum(dim=1)) - x
    (0.5 * r.abs().pow(2).sum()).backward()
    assert torch.allclose(grad, dd.grad, rtol=1e-3, atol=1e-5)


def test_config_validation():
    with pytest.raises(ValueError, match="odd"):
        cdl.CDLConfig(filter_size=8)
    with pytest.raises(ValueError, match="lam"):
        cdl.CDLConfig(lam=0.0)
    with pytest.raises(ValueError, match="crop_size"):
        cdl.CDLConfig(filter_size=11, crop_size=24)
    assert cdl.dictionary_name(32, 9, 0.01) == "cdl_k32_9x9_l0.01"
    assert cdl.dictionary_name(32, 9, 0.01, seed=1) == "cdl_k32_9x9_l0.01_s1"


def test_crop_window_edges():
    w = cdl.crop_window(32, 6)
    assert float(w[0].max()) < 0.1 and float(w[16, 16]) == 1.0
    assert torch.allclose(w, w.T) and torch.allclose(w, w.flip(0))


def test_learn_dictionary_command(tmp_path):
    from adacsc.training.volumes import SOURCES, TEMPLATES_DIR
    from adacsc.training import slices

    if not all((TEMPLATES_DIR / s.file).is_file() for s in SOURCES.values()):
        pytest.skip("mricron-data templates not installed")
    from adacsc.cli import main

    old = os.environ.get("ADACSC_CACHE_DIR")
    os.environ["ADACSC_CACHE_DIR"] = str(tmp_path / "cache")
    try:
        rc = main(["learn-dictionary", "-o", str(tmp_path / "out"), "--filters", "4", "--size", "7", "--lambda", "0.02",
                       "--iterations", "2", "--images", "3", "--crop-size", "32", "--data-size", "64",
                       "--seed", "3", "--no-progress"])
        train_ids = {r.id for r in slices.split_records("train", 64)}
    finally:
        if old is None:
            os.environ.pop("ADACSC_CACHE_DIR", None)
        else:
            os.environ["ADACSC_CACHE_DIR"] = old
    assert rc == 0
    path = tmp_path / "out" / "cdl_k4_7x7_l0.02_s3.npz"
    d = load_dictionary(path)
    assert d.num_filters == 4 and d.filter_shape == (7, 7)
    meta = d.metadata
    assert meta["created_by"].startswith("adacsc learn-dictionary -o ")
    assert meta["seed"] == 3 and meta["data"]["split"] == "train"
    assert {c["image"] for c in meta["data"]["crops"]} <= train_ids
    assert np.isfinite(meta["final_objective"]["objective"])
    assert all(src["sha256"] for src in meta["data"]["sources"].values())


def test_shipped_family_roles_are_disjoint_and_loadable():
    from adacsc.training import family

    names = [n for names in family.ROLES.values() for n in names]
    assert len(names) == len(set(names))
    for role in family.ROLES:
        for d in family.load_family(role):
            assert family.dictionary_role(d.name) == role
            assert np.allclose(np.linalg.norm(d.filters.reshape(d.num_filters, -1), axis=1), 1, atol=1e-5)
            meta = d.metadata
            assert meta["created_by"].startswith("adacsc learn-dictionary -o gadgets/adacsc/data/dictionaries")
            assert meta["data"]["split"] == "train"
            assert all(c["image"].startswith("colin27_") for c in meta["data"]["crops"])
    (big,) = family.load_family("evaluation")
    assert big.num_filters == 128
    assert max(d.num_filters for d in family.load_family("training")) < 128
