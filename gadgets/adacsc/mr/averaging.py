"""Combining a scan's averages in k-space and splitting a 3-D volume into partitions.

k-space here is [RO, E1, E2, CHA] (Gadgetron's buffer order without N, S, LOC); `acquired` masks
say which (E1, E2) line of each average holds a readout.
"""

import numpy as np

from adacsc.mr.fft import ifftc


def mean_of_averages(data: np.ndarray, acquired: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(k-space [RO, E1, E2, CHA], averages per line [E1, E2]) from `data` [RO, E1, E2, CHA, N] and
    `acquired` bool [E1, E2, N]: each line is the mean over the averages that acquired it."""
    counts = acquired.sum(axis=-1)
    if data.shape[-1] == 1:
        return data[..., 0], counts
    total = np.einsum("rezcn,ezn->rezc", data, acquired.astype(data.dtype))
    mean = total / np.maximum(counts, 1)[None, :, :, None]
    return mean.astype(np.complex64), counts


def noise_after_averaging(counts: np.ndarray) -> float:
    """The k-space noise std of the acquired lines of one partition, for unit noise per readout
    sample, with `counts` [E1, E2] averages per line: a line of n averages has variance 1/n, and
    the inverse FFT along kz spreads each line's kz samples over the partitions (missing kz add
    nothing). Returns sqrt(mean over acquired E1 lines of that variance)."""
    partitions = counts.shape[1]
    variance = (np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)).sum(axis=1) / partitions
    acquired = (counts > 0).any(axis=1)
    return float(np.sqrt(variance[acquired].mean())) if acquired.any() else 1.0


def partitions(kspace: np.ndarray) -> np.ndarray:
    """Hybrid space [RO, E1, Z, CHA]: the inverse FFT along kz (axis 2); a 2-D buffer is returned as is."""
    if kspace.shape[2] == 1:
        return kspace
    return ifftc(kspace, axes=(2,)).astype(np.complex64)


def kz_undersampled(counts: np.ndarray, e2_range: tuple[int, int]) -> bool:
    """Whether an acquired E1 line misses a kz position inside [low, high] (the encoding limits)."""
    low, high = e2_range
    lines = (counts > 0).any(axis=1)
    return bool(lines.any() and not (counts[lines, low:high + 1] > 0).all())
