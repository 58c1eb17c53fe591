"""adacsc.metrics: the SSIM equals scikit-image's, and the masked SSIM scores the object only."""

import numpy as np
import pytest

from adacsc import metrics


def _pair(shape=(70, 54), seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    reference = ((yy - shape[0] / 2) ** 2 / 500 + (xx - shape[1] / 2) ** 2 / 300 < 1).astype(float)
    reference *= 1 + 0.3 * np.sin(xx / 3.0)
    return reference + 0.05 * rng.standard_normal(shape), reference


def test_ssim_equals_scikit_image():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    image, reference = _pair()
    theirs, full = skimage_metrics.structural_similarity(
        image, reference, data_range=reference.max(), gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, full=True)
    assert metrics.ssim(image, reference) == pytest.approx(theirs, abs=1e-12)
    np.testing.assert_allclose(metrics.ssim_map(image, reference), full, atol=1e-12)


def test_masked_ssim_ignores_the_background():
    image, reference = _pair()
    mask = metrics.object_mask(reference)
    assert 0.2 < mask.mean() < 0.8 and mask[35, 27] and not mask[0, 0]
    noisy_background = image.copy()
    noisy_background[~mask] += 0.5 * np.random.default_rng(1).standard_normal(int((~mask).sum()))
    # the background noise lowers the whole-image SSIM a lot, the masked one (edges aside) little
    drop_whole = metrics.ssim(image, reference) - metrics.ssim(noisy_background, reference)
    drop_masked = metrics.masked_ssim(image, reference) - metrics.masked_ssim(noisy_background, reference)
    assert drop_whole > 2 * drop_masked > 0
    assert metrics.masked_ssim(reference, reference) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="empty"):
        metrics.masked_ssim(image, reference, np.zeros_like(mask))
