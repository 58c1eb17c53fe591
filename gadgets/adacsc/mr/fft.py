"""Orthonormal, centred FFTs: the one Fourier convention used across adacsc."""

from collections.abc import Sequence

import numpy as np

Axes = Sequence[int]


def fftc(x: np.ndarray, axes: Axes = (-2, -1)) -> np.ndarray:
    """Centred orthonormal forward FFT over `axes` (image -> k-space)."""
    shifted = np.fft.ifftshift(x, axes=axes)
    return np.fft.fftshift(np.fft.fftn(shifted, axes=axes, norm="ortho"), axes=axes)


def ifftc(k: np.ndarray, axes: Axes = (-2, -1)) -> np.ndarray:
    """Centred orthonormal inverse FFT over `axes` (k-space -> image)."""
    shifted = np.fft.ifftshift(k, axes=axes)
    return np.fft.fftshift(np.fft.ifftn(shifted, axes=axes, norm="ortho"), axes=axes)
