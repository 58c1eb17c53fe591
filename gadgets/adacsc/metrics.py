"""Image quality metrics on magnitude images: PSNR, SSIM and NRMSE against a reference.

`psnr`, `ssim` and `nrmse` take one numpy image; `magnitude_psnr` is the batched torch PSNR that
training, validation and the benchmarks compute on complex tensors without leaving the device.
"""

import numpy as np
import torch
from scipy.ndimage import gaussian_filter


def nrmse(image: np.ndarray, reference: np.ndarray) -> float:
    """||image - reference|| / ||reference||."""
    return float(np.linalg.norm(image - reference) / np.linalg.norm(reference))


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB, the peak being the reference maximum."""
    mse = np.mean((image - reference) ** 2)
    return float(10 * np.log10(reference.max() ** 2 / mse))


def magnitude_psnr(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) per image [B, ...] of the magnitudes, peak = max |target| (as `psnr`)."""
    a, b = image.abs().flatten(1), target.abs().flatten(1)
    mse = (a - b).pow(2).mean(dim=1)
    return 10 * torch.log10(b.max(dim=1).values.pow(2) / mse.clamp_min(1e-20))


#: Gaussian window truncation (in sigmas) of the SSIM: scikit-image's, so that `ssim` equals
#: skimage.metrics.structural_similarity(image, reference, data_range=reference.max(),
#: gaussian_weights=True, sigma=1.5, use_sample_covariance=False) (tests/test_metrics.py checks it)
SSIM_TRUNCATE = 3.5


def ssim_map(image: np.ndarray, reference: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Per-pixel structural similarity (Wang et al. 2004) with a Gaussian window, data range =
    reference max."""
    c1, c2 = (0.01 * reference.max()) ** 2, (0.03 * reference.max()) ** 2

    def blur(a: np.ndarray) -> np.ndarray:
        return gaussian_filter(a, sigma, truncate=SSIM_TRUNCATE)

    mu_x, mu_y = blur(image), blur(reference)
    var_x = blur(image * image) - mu_x ** 2
    var_y = blur(reference * reference) - mu_y ** 2
    cov = blur(image * reference) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))


def ssim(image: np.ndarray, reference: np.ndarray, sigma: float = 1.5) -> float:
    """Mean SSIM over the image less a border of half the window (as scikit-image averages)."""
    pad = int(SSIM_TRUNCATE * sigma + 0.5)
    return float(ssim_map(image, reference, sigma)[pad:-pad, pad:-pad].mean())


def object_mask(reference: np.ndarray, fraction: float = 0.1, dilation: int = 2) -> np.ndarray:
    """The object (brain or head) of a ground-truth magnitude image: pixels above `fraction` of its
    maximum, holes filled, dilated by `dilation` pixels so that the edges count."""
    from scipy.ndimage import binary_dilation, binary_fill_holes

    mask = binary_fill_holes(reference > fraction * reference.max())
    return binary_dilation(mask, iterations=dilation) if dilation else mask


def masked_ssim(image: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None,
                sigma: float = 1.5) -> float:
    """Mean SSIM inside `mask` (default `object_mask(reference)`): whole-image SSIM mostly measures
    the empty background."""
    mask = object_mask(reference) if mask is None else mask
    if not mask.any():
        raise ValueError("the SSIM mask is empty")
    return float(ssim_map(image, reference, sigma)[mask].mean())
