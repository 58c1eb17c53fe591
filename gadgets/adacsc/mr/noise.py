"""Noise statistics and prewhitening with Gadgetron NoiseAdjustGadget semantics, and the noise
level of an image when no noise scan is available."""

import math

import numpy as np

DEFAULT_RECEIVER_NOISE_BANDWIDTH = 0.793
"""Gadgetron's value when the header lacks relativeReceiverNoiseBandwidth."""


class NoiseAccumulator:
    """Running sum of X^H X over noise samples, so noise readouts need not be kept."""

    def __init__(self) -> None:
        self._gram: np.ndarray | None = None
        self.samples = 0

    def add(self, data: np.ndarray) -> None:
        """Add one noise readout `data` [CHA, samples]."""
        data = np.asarray(data, dtype=np.complex128)
        if self._gram is None:
            self._gram = np.zeros((data.shape[0], data.shape[0]), dtype=np.complex128)
        elif data.shape[0] != self._gram.shape[0]:
            raise ValueError(
                f"noise readout has {data.shape[0]} channels, earlier ones had {self._gram.shape[0]}"
            )
        self._gram += data @ data.conj().T
        self.samples += data.shape[1]

    def covariance(self) -> np.ndarray:
        """C = X^H X / (N - 1) over all noise samples seen."""
        if self._gram is None or self.samples < 2:
            raise ValueError(f"need at least 2 noise samples for a covariance, have {self.samples}")
        return self._gram / (self.samples - 1)


def whitening_matrix(covariance: np.ndarray) -> np.ndarray:
    """W with W C W^H = I, from the Cholesky factor C = L L^H (W = inv(L), lower triangular).

    Gadgetron stores the upper-triangular transpose and multiplies from the right; applied to a
    readout [CHA, samples] as `W @ data` this is the same transform.
    """
    covariance = np.asarray(covariance, dtype=np.complex128)
    if covariance.ndim != 2 or covariance.shape[0] != covariance.shape[1]:
        raise ValueError(f"noise covariance must be square, got shape {covariance.shape}")
    if not np.all(np.isfinite(covariance)):
        raise ValueError("noise covariance contains non-finite values")
    try:
        lower = np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError as err:
        raise ValueError("noise covariance is not positive definite (dead or duplicated channel?)") from err
    return np.linalg.inv(lower)


def bandwidth_scale(acquisition_dwell_us: float, noise_dwell_us: float,
                    relative_noise_bandwidth: float | None) -> float:
    """Gadgetron's scale sqrt(2 * acq_dwell / noise_dwell * relBW); 1 when a dwell time is 0."""
    if acquisition_dwell_us <= 0 or noise_dwell_us <= 0:
        return 1.0
    bandwidth = DEFAULT_RECEIVER_NOISE_BANDWIDTH if relative_noise_bandwidth is None else relative_noise_bandwidth
    return float(np.sqrt(2.0 * acquisition_dwell_us / noise_dwell_us * bandwidth))


def match_channels(covariance: np.ndarray, stored_labels: list[str], labels: list[str]) -> np.ndarray:
    """Reorder a stored covariance to the channel order `labels` (coils matched by label)."""
    if len(labels) != covariance.shape[0] or sorted(labels) != sorted(stored_labels):
        raise ValueError(
            f"coil labels of the noise dependency {stored_labels} do not match this scan's {labels}"
        )
    order = [stored_labels.index(label) for label in labels]
    return covariance[np.ix_(order, order)]


def estimate_noise_std(image: np.ndarray) -> float:
    """Noise std of a complex image [Y, X] with white noise (E|n|^2 = sigma^2 per pixel), from the
    image itself: the finest diagonal Haar detail d = (a - b - c + e) / 2 of every 2x2 block keeps
    the noise variance and removes smooth signal, and its median magnitude is robust to the edges
    that remain: for complex Gaussian noise |d| is Rayleigh with median sigma * sqrt(ln 2).
    The estimate is biased high on images without smooth or empty regions."""
    image = np.asarray(image)
    if image.ndim != 2 or min(image.shape) < 2:
        raise ValueError(f"noise estimation needs a 2-D image of at least 2x2 pixels, got shape {image.shape}")
    y, x = (n - n % 2 for n in image.shape)
    blocks = image[:y, :x].astype(np.complex128)
    detail = (blocks[0::2, 0::2] - blocks[1::2, 0::2] - blocks[0::2, 1::2] + blocks[1::2, 1::2]) / 2
    sigma = float(np.median(np.abs(detail))) / math.sqrt(math.log(2.0))
    if not math.isfinite(sigma):
        raise ValueError("noise estimation: the image holds non-finite values")
    return sigma
