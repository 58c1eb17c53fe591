"""A slice's sampling and noise level through the image meta (adacsc.io.slice_meta)."""

import ismrmrd
import numpy as np
import pytest

from adacsc.io.slice_meta import NOISE_SCAN, SliceSampling


def test_round_trip_through_a_serialised_ismrmrd_meta() -> None:
    lines = np.array([False, True, True, False, True])
    for sampling in (SliceSampling(lines), SliceSampling.prewhitened(lines)):
        meta = ismrmrd.Meta()
        meta.update(sampling.to_meta())
        back = SliceSampling.from_meta(dict(ismrmrd.Meta.deserialize(meta.serialize())), len(lines))
        np.testing.assert_array_equal(back.lines, lines)
        assert (back.noise_level, back.noise_source) == (sampling.noise_level, sampling.noise_source)
    assert SliceSampling.prewhitened(lines).noise_source == NOISE_SCAN


def test_without_a_mask_every_line_counts_and_a_wrong_mask_is_named() -> None:
    assert SliceSampling.from_meta({}, 4).lines.all()
    with pytest.raises(ValueError, match="SamplingMask meta does not describe 4 phase-encode lines"):
        SliceSampling.from_meta({"SamplingMask": "101"}, 4)
    with pytest.raises(ValueError, match="SamplingMask"):
        SliceSampling.from_meta({"SamplingMask": ["10x1"]}, 4)
