"""Image quality metrics on magnitude images: PSNR, SSIM and NRMSE against a reference."""

import numpy as np
from scipy.ndimage import gaussian_filter


def nrmse(image: np.ndarray, reference: np.ndarray) -> float:
    """||image - reference|| / ||reference||."""
    return float(np.linalg.norm(image - reference) / np.linalg.norm(reference))


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB, the peak being the reference maximum."""
    mse = np.mean((image - reference) ** 2)
    return float(10 * np.log10(reference.max() ** 2 / mse))


def ssim(image: np.ndarray, reference: np.ndarray, sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al. 2004) with a Gaussian window, data range = reference max."""
    c1, c2 = (0.01 * reference.max()) ** 2, (0.03 * reference.max()) ** 2
    mu_x, mu_y = gaussian_filter(image, sigma), gaussian_filter(reference, sigma)
    var_x = gaussian_filter(image * image, sigma) - mu_x ** 2
    var_y = gaussian_filter(reference * reference, sigma) - mu_y ** 2
    cov = gaussian_filter(image * reference, sigma) - mu_x * mu_y
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return float(index.mean())
