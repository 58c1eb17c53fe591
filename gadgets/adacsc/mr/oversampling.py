"""Readout oversampling removal: crop the central part of the readout in image space."""

import numpy as np

from adacsc.mr.fft import fftc, ifftc


def remove_readout_oversampling(data: np.ndarray, target_samples: int) -> np.ndarray:
    """Crop readouts `data` [..., samples] to `target_samples` around the image centre.

    The orthonormal FFT pair keeps noise per sample unchanged, so prewhitened data stay white.
    """
    samples = data.shape[-1]
    if target_samples == samples:
        return data
    if target_samples > samples or target_samples <= 0:
        raise ValueError(f"cannot crop a {samples}-sample readout to {target_samples} samples")
    start = samples // 2 - target_samples // 2
    image = ifftc(data, axes=(-1,))[..., start:start + target_samples]
    return fftc(image, axes=(-1,)).astype(np.complex64)
