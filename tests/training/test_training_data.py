"""The training data pipeline (adacsc.training.slices / volumes) and the low-field simulation."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from adacsc.core.fourier import SampledFourier

volumes = pytest.importorskip("adacsc.training.volumes")
from adacsc.training import lowfield  # noqa: E402
from adacsc.training import slices  # noqa: E402
from support.operators import assert_adjoint

SIZE = 64  # small images keep the resampling fast

needs_data = pytest.mark.skipif(
    not all((volumes.TEMPLATES_DIR / s.file).is_file() for s in volumes.SOURCES.values()),
    reason="mricron-data templates not installed")


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Keep the test's cache files out of the user's cache."""
    old = os.environ.get("ADACSC_CACHE_DIR")
    os.environ["ADACSC_CACHE_DIR"] = str(tmp_path_factory.mktemp("adacsc_cache"))
    yield
    if old is None:
        os.environ.pop("ADACSC_CACHE_DIR", None)
    else:
        os.environ["ADACSC_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def loaded():
    return {name: slices.load_split_with_records(name, SIZE) for name in slices.SPLITS}


# --- slabs and records -------------------------------------------------------------------------

@needs_data
@pytest.mark.parametrize("orientation", list(volumes.ORIENTATIONS))
def test_slab_layout_splits_whole_slabs_with_gaps(orientation):
    layout = slices.slab_layout(orientation)
    pos, slab, split = layout["positions_mm"], layout["slab"], layout["split"]
    assert np.all(np.diff(pos) > 0)
    # every slab belongs to exactly one split (gap slices aside)
    for s in np.unique(slab):
        members = {split[j] for j in np.flatnonzero(slab == s)} - {"gap"}
        assert members == {layout["slab_split"][s]}
    assert layout["slab_split"].count("val") == 1 and layout["slab_split"].count("test") == 1
    # slices of different splits are at least 3 spacings apart: no shared voxels
    kept = [(p, sp) for p, sp in zip(pos, split) if sp != "gap"]
    for (p1, s1), (p2, s2) in zip(kept, kept[1:]):
        if s1 != s2:
            assert p2 - p1 >= 3 * slices.SPACING_MM - 1e-6
            assert p2 - p1 - slices.THICKNESS_MM >= slices.SPACING_MM - 1e-6


@needs_data
def test_splits_are_disjoint_by_slab_and_position():
    recs = {name: slices.split_records(name, SIZE) for name in slices.SPLITS}
    ids = {name: {r.id for r in rs} for name, rs in recs.items()}
    for a in slices.SPLITS:
        for b in slices.SPLITS:
            if a < b:
                assert not ids[a] & ids[b], (a, b)
    for orientation in volumes.ORIENTATIONS:
        slab_of = {name: {r.slab for r in recs[name] if r.orientation == orientation}
                   for name in slices.IN_DISTRIBUTION}
        assert not slab_of["train"] & slab_of["test"]
        assert not slab_of["train"] & slab_of["val"]
        assert not slab_of["val"] & slab_of["test"]
        # the same world slabs for both volumes: no test position (any volume) near a training one
        train_pos = np.array([r.position_mm for r in recs["train"] if r.orientation == orientation])
        for r in recs["test"] + recs["val"]:
            if r.orientation == orientation:
                assert np.min(np.abs(train_pos - r.position_mm)) >= 3 * slices.SPACING_MM - 1e-6
                lo, hi = r.slab_range_mm
                assert not np.any((train_pos > lo) & (train_pos < hi))
    for name in slices.IN_DISTRIBUTION:
        assert {r.source for r in recs[name]} == set(slices.HUMAN_VOLUMES)
        assert {r.orientation for r in recs[name]} == set(volumes.ORIENTATIONS)
        assert all(r.brain_fraction >= slices.MIN_BRAIN_FRACTION for r in recs[name])


@needs_data
def test_sagittal_test_slab_has_no_mirror_image_in_training():
    """Hemispheric symmetry: the midline mirror of every sagittal test slice is not a training slice."""
    recs = slices.split_records("train", SIZE)
    train_x = np.array([r.position_mm for r in recs if r.orientation == "sagittal"])
    centre = 0.5 * sum(volumes.brain_box_mm(slices.REFERENCE_VOLUME)[0])
    for r in slices.split_records("test", SIZE):
        if r.orientation == "sagittal":
            mirror = 2 * centre - r.position_mm
            assert np.min(np.abs(train_x - mirror)) >= slices.SPACING_MM - 1e-6


@needs_data
def test_out_of_distribution_sets_never_reach_training():
    train = slices.split_records("train", SIZE)
    assert all(r.source in slices.HUMAN_VOLUMES for r in train)
    mac = slices.split_records("ood_macaque", SIZE)
    ph = slices.split_records("ood_phantom", SIZE)
    assert mac and {r.source for r in mac} == {"inia19_macaque"}
    assert ph and {r.source for r in ph} == {"phantom"}
    assert {r.orientation for r in mac} == set(volumes.ORIENTATIONS)
    files = {r.file for r in train}
    assert files == {"ch2better.nii.gz", "ch2.nii.gz"}


def _held_out_available() -> bool:
    try:
        volumes.source_path(slices.HELD_OUT_VOLUME)
    except FileNotFoundError:
        return False
    return True


@needs_data
@pytest.mark.skipif(not _held_out_available(), reason="the held-out subject needs the PyPI package nilearn's data")
def test_held_out_subject_is_another_volume_in_no_training_split():
    images, records = slices.load_split_with_records(slices.HELD_OUT_SUBJECT, SIZE, pixel_mm=2.9)
    assert images.shape[0] == len(records) >= 30 and images.shape[-1] == SIZE
    assert {r.source for r in records} == {slices.HELD_OUT_VOLUME}
    assert {r.orientation for r in records} == set(volumes.ORIENTATIONS)
    assert all(r.split == slices.HELD_OUT_SUBJECT and r.fov_mm == pytest.approx(SIZE * 2.9) for r in records)
    assert slices.HELD_OUT_VOLUME not in volumes.SOURCES  # never a training, validation or dictionary source
    for name in slices.SPLITS:
        assert slices.HELD_OUT_VOLUME not in {r.source for r in slices.split_records(name, SIZE)}
    mags = images.abs()
    assert float(mags.amax()) > 0.9 and bool(torch.isfinite(mags).all())
    # normalised like every other slice: bright tissue about 1
    assert np.median([float(torch.quantile(m[m > 0.1 * m.max()], 0.995)) for m in mags]) == pytest.approx(1.0, abs=0.05)


def test_unknown_split_and_bad_size():
    with pytest.raises(ValueError, match="unknown split"):
        slices.split_records("training", SIZE)
    with pytest.raises(ValueError, match="size"):
        slices.split_records("train", 8)


# --- images ------------------------------------------------------------------------------------

@needs_data
def test_shapes_dtype_and_normalisation(loaded):
    for name, (x, recs) in loaded.items():
        assert x.dtype == torch.complex64 and x.ndim == 3 and tuple(x.shape[1:]) == (SIZE, SIZE), name
        assert x.shape[0] == len(recs) > 0
        assert torch.isfinite(torch.view_as_real(x)).all()
        mag = x.abs().numpy()
        for i in range(len(recs)):
            obj = mag[i][mag[i] > 0.1 * mag[i].max()]
            assert np.percentile(obj, slices.NORMALISATION_PERCENTILE) == pytest.approx(1.0, rel=1e-3)
            assert recs[i].scale > 0
    sizes = {name: loaded[name][0].shape[0] for name in slices.SPLITS}
    assert sizes["train"] > 5 * sizes["test"] and sizes["val"] > 0


@needs_data
def test_deterministic_and_cached(loaded):
    x, recs = loaded["val"]
    again, recs2 = slices.load_split_with_records("val", SIZE)  # from the cache
    fresh = slices.load_split("val", SIZE, cache=False)
    assert torch.equal(x, again) and torch.equal(x, fresh)
    assert [r.id for r in recs] == [r.id for r in recs2]
    other_seed = slices.load_split("val", SIZE, seed=1, cache=False)
    assert torch.allclose(x.abs(), other_seed.abs())  # same pixels ...
    assert not torch.allclose(x, other_seed)  # ... another phase
    cached = list((slices.cache_dir() / "training_slices").glob("val_*.npz"))
    assert cached


@needs_data
def test_phase_is_smooth(loaded):
    for name in ("train", "ood_macaque", "ood_phantom"):
        x = loaded[name][0]
        mag = x.abs()
        for axis in (-2, -1):
            nb = torch.roll(x, -1, dims=axis)
            both = (mag > 0.2) & (torch.roll(mag, -1, dims=axis) > 0.2)
            step = torch.angle(nb * x.conj())[both].abs()
            # the whole phase span (<= pi) over the field is spread over >= SIZE/2 pixels
            assert float(step.max()) < 4 * math.pi / SIZE, name
        for i, r in enumerate(loaded[name][1][:5]):
            assert slices.PHASE_SPAN_RAD[0] <= r.phase_span_rad <= slices.PHASE_SPAN_RAD[1]


# --- low-field simulation ----------------------------------------------------------------------

def _images(b=3, n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, n, dtype=torch.complex64, generator=g)


def test_acquired_shape_for():
    assert lowfield.acquired_shape_for((160, 160), 0.5) == (80, 80)
    assert lowfield.acquired_shape_for((160, 128), (0.25, 0.75)) == (40, 96)
    assert lowfield.acquired_shape_for((32, 32), 1.0) == (32, 32)
    with pytest.raises(ValueError):
        lowfield.acquired_shape_for((32, 32), 0.0)


def test_noise_free_data_is_the_core_operator():
    x = _images()
    batch = lowfield.simulate(x, (16, 12), 0.0)
    op = SampledFourier((16, 12), (32, 32))
    assert torch.allclose(batch.kspace, op(x))
    assert batch.grid_shape == (32, 32) and batch.acquired_shape == (16, 12)
    assert torch.allclose(batch.zero_filled(), op.adjoint(batch.kspace))


def test_adjoint_consistency():
    x = _images(2, 24)
    batch = lowfield.fixed_lowfield(x, 0.1)
    op = batch.operator
    assert_adjoint(op, op.adjoint, x.to(batch.kspace.dtype), batch.kspace, 1e-4)


def test_noise_level_is_relative_to_kspace_rms():
    x = _images(2, 128, seed=3)
    for level in (0.05, 0.2):
        batch = lowfield.fixed_lowfield(x, level, seed=7)
        clean = batch.operator(x)
        rms = clean.abs().pow(2).mean(dim=(-2, -1)).sqrt()
        noise = batch.kspace - clean
        measured = noise.abs().pow(2).mean(dim=(-2, -1)).sqrt()
        assert torch.allclose(measured / rms, torch.full((2,), level), rtol=0.03)
        assert torch.allclose(batch.noise_std, level * rms, rtol=1e-5)
        # real and imaginary parts each carry half the variance
        assert float(noise.real.var() / noise.imag.var()) == pytest.approx(1.0, abs=0.05)


def test_fixed_lowfield_is_batch_invariant_and_50_percent():
    x = _images(4, 32)
    whole = lowfield.fixed_lowfield(x, 0.1, seed=2)
    assert whole.acquired_shape == (16, 16)
    parts = [lowfield.fixed_lowfield(x[:1], 0.1, seed=2),
             lowfield.fixed_lowfield(x[1:], 0.1, seed=2, start_index=1)]
    assert torch.equal(whole.kspace, torch.cat([p.kspace for p in parts]))
    assert not torch.equal(whole.kspace, lowfield.fixed_lowfield(x, 0.1, seed=3).kspace)


def test_random_lowfield_ranges_and_seeding():
    x = _images(4, 64)
    cfg = lowfield.LowFieldConfig()
    shapes = set()
    for seed in range(12):
        b1 = lowfield.random_lowfield(x, torch.Generator().manual_seed(seed), cfg)
        b2 = lowfield.random_lowfield(x, torch.Generator().manual_seed(seed), cfg)
        assert torch.equal(b1.kspace, b2.kspace)
        for m in b1.acquired_shape:
            assert m % 2 == 0 and 0.25 * 64 - 2 <= m <= 0.75 * 64 + 2
        assert bool(((b1.noise_level >= cfg.noise_level[0]) & (b1.noise_level <= cfg.noise_level[1])).all())
        assert b1.grid_shape == (64, 64)
        shapes.add(b1.acquired_shape)
    assert len(shapes) > 3
    with pytest.raises(ValueError):
        lowfield.LowFieldConfig(block_fraction=(0.8, 0.5))


def test_augment_keeps_magnitude_statistics():
    x = _images(3, 16)
    g = torch.Generator().manual_seed(0)
    y = lowfield.augment(x, g)
    assert y.shape == x.shape
    assert torch.allclose(torch.sort(y.abs().flatten()).values, torch.sort(x.abs().flatten()).values)
