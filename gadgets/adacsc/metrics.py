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


def ssim(image: np.ndarray, reference: np.ndarray, sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al. 2004) with a Gaussian window, data range = reference max."""
    c1, c2 = (0.01 * reference.max()) ** 2, (0.03 * reference.max()) ** 2
    mu_x, mu_y = gaussian_filter(image, sigma), gaussian_filter(reference, sigma)
    var_x = gaussian_filter(image * image, sigma) - mu_x ** 2
    var_y = gaussian_filter(reference * reference, sigma) - mu_y ** 2
    cov = gaussian_filter(image * reference, sigma) - mu_x * mu_y
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return float(index.mean())
