"""EMI removal with sensing coils, EDITER-style (Srinivas et al., "External dynamic interference
estimation and removal (EDITER)", MRM 2022): a linear, training-free estimate of the interference
in each receive channel from the sensing channels, fitted per block of readouts.

Model. Within a block of readouts (the couplings drift slowly, so they are taken as constant over a
block) the interference in receive channel c is a short convolution along the readout of the
sensing channels e_n:

    y_c[j] = m_c[j] + n_c[j] + sum_n sum_{d=-w..w} h_cnd e_n[j - d]

(m the MR signal, n thermal noise; e_n[j] = 0 outside the readout). Stacking every sample j of
every readout of the block gives y_c = X h_c with X [samples, N (2w + 1)] the shifted sensing
samples; h_c is fitted by least squares and X h_c subtracted.

Why weighted. The MR signal is uncorrelated with the sensing channels, but it is part of what the
fit sees: plain least squares leaves an error X (h_hat - h) whose energy is about p / n times the
block's signal-plus-noise energy (p unknowns, n samples), and near the k-space centre the signal
energy is hundreds of times the noise energy. So the fit is done twice: a plain fit, then a
weighted one whose weight per sample is 1 / max(local residual power, median residual power), the
local power a moving average along the readout. Samples dominated by MR signal then hardly count,
and the error falls to about p / n of the noise energy (a fraction of a percent for blocks of a few
thousand samples), which is what lets the removal cost almost nothing when there is no EMI.

Kernel length in time. The couplings are physical filters (coils, cables, the sources' paths),
so the kernel that maps the sensing channels to a receive channel, h_c(f) H_s(f)^-1, has an impulse
response of a fixed length in microseconds, two-sided where H_s is not minimum-phase. A kernel
of a fixed number of taps covers less of it the shorter the dwell time: noise readouts are often
sampled several times faster than the imaging ones (4x in the simulator), and 7 taps at 5 us
left up to 19 % of the interference in them (against 8.5 % with 25 taps, within 0.5 % of what
very long kernels reach; the rest is the sensing coils' own thermal noise, which no linear
estimate can take out). So the kernel is given as a length in microseconds, `kernel_us`, and each
block gets the odd number of taps that covers it at its readouts' dwell time (`kernel_taps`).

Noise readouts are cleaned the same way (no signal there), so the noise covariance describes what
is left after removal.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import uniform_filter1d

#: default coil-label patterns of sensing channels (shell-style, case-insensitive)
DEFAULT_SENSING_PATTERN = "EMI*,SENSING*,SNIFFER*"
#: samples of the moving average that gives the local residual power of the weighted fit
POWER_WINDOW = 9
#: the fit needs at least this many samples per unknown, else the block is left as it is
MIN_SAMPLES_PER_UNKNOWN = 4
#: default kernel length: 7 taps at a 20 us dwell time, 25 at 5 us
DEFAULT_KERNEL_US = 120.0
#: the kernels never have more taps than this (the cost grows as the square of the taps)
MAX_TAPS = 63
#: the dwell time assumed for a readout that does not say its own (sample_time_us 0)
FALLBACK_DWELL_US = 20.0


def kernel_taps(kernel_us: float, dwell_us: float) -> int:
    """The odd number of taps, 3 to MAX_TAPS, of a kernel `kernel_us` long at `dwell_us` per
    sample: 2 round(kernel_us / (2 dwell_us)) + 1 (the dwell of a readout without one:
    FALLBACK_DWELL_US)."""
    if not kernel_us > 0:
        raise ValueError(f"EMI kernel length must be > 0 us, got {kernel_us}")
    dwell = dwell_us if np.isfinite(dwell_us) and dwell_us > 0 else FALLBACK_DWELL_US
    half = int(round(kernel_us / (2 * dwell)))
    return 2 * min(max(half, 1), MAX_TAPS // 2) + 1


def sensing_channels(labels: list[str], patterns: str, indices: str) -> list[int]:
    """The sensing channels: those whose label matches one of the comma-separated shell-style
    `patterns` (case-insensitive, e.g. "EMI*,SENSING*"; empty: none) plus the comma-separated
    channel `indices`."""
    chosen: set[int] = set()
    for pattern in filter(None, (part.strip().lower() for part in patterns.split(","))):
        chosen |= {i for i, label in enumerate(labels) if fnmatch.fnmatchcase(label.lower(), pattern)}
    for text in filter(None, (part.strip() for part in indices.split(","))):
        try:
            index = int(text)
        except ValueError:
            raise ValueError(f"sensing channel {text!r} is not a channel index") from None
        if not 0 <= index < len(labels):
            raise ValueError(f"sensing channel {index} does not exist (the scan has {len(labels)} channels)")
        chosen.add(index)
    if chosen and len(chosen) == len(labels):
        raise ValueError(f"every channel ({', '.join(labels)}) is a sensing channel: no receive channel is left")
    return sorted(chosen)


def shifted_samples(sensing: np.ndarray, width: int) -> np.ndarray:
    """X [R * S, N * (2 w + 1)]: every sensing channel shifted by -w..w samples along the readout
    (zeros shifted in), from sensing [N, R, S]."""
    n, r, s = sensing.shape
    columns = np.zeros((r, s, n, 2 * width + 1), dtype=np.complex128)
    for d in range(-width, width + 1):
        k = d + width
        if d >= 0:
            columns[:, d:, :, k] = np.moveaxis(sensing[:, :, : s - d], 0, -1)
        else:
            columns[:, :d, :, k] = np.moveaxis(sensing[:, :, -d:], 0, -1)
    return columns.reshape(r * s, n * (2 * width + 1))


def _solve(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """argmin_h sum_i w_i |y_i - x_i h|^2 for every column of y (normal equations, a tiny ridge).

    Both X^H W X and X^H W Y come from one product of [X, Y] with itself: a matrix-matrix
    product, where X^H W Y alone would be a matrix-vector one, which multi-threaded BLAS runs
    many times slower on a loaded machine."""
    both = np.concatenate([x, y], axis=1)
    weighted = both if weights is None else both * weights[:, None]
    products = weighted.conj().T @ both
    p = x.shape[1]
    gram = products[:p, :p]
    ridge = 1e-9 * float(np.real(np.trace(gram))) / p + 1e-30
    return np.linalg.solve(gram + ridge * np.eye(p), products[:p, p:])


def _weights(residual: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """1 / max(local power, median power) per sample, from residuals [R * S, C]."""
    power = np.sum(np.abs(residual) ** 2, axis=1).reshape(shape)
    local = uniform_filter1d(power, POWER_WINDOW, axis=1, mode="nearest")
    floor = max(float(np.median(local)), 1e-30)
    return 1.0 / np.maximum(local, floor).reshape(-1)


@dataclass
class BlockFit:
    """One block's result: the cleaned receive data [C, R, S] and the estimate removed from it."""

    cleaned: np.ndarray
    removed: np.ndarray
    fitted: bool


def remove_block(receive: np.ndarray, sensing: np.ndarray, width: int) -> BlockFit:
    """Remove the interference predicted by `sensing` [N, R, S] from `receive` [C, R, S] (one block
    of readouts with equal sample counts) with kernels of 2 width + 1 taps."""
    if receive.shape[1:] != sensing.shape[1:]:
        raise ValueError(f"receive {receive.shape} and sensing {sensing.shape} readouts differ")
    c, r, s = receive.shape
    finite = np.isfinite(receive).all(axis=0) & np.isfinite(sensing).all(axis=0)  # [R, S]
    x = shifted_samples(np.where(finite, sensing, 0).astype(np.complex128), width)
    if int(finite.sum()) < MIN_SAMPLES_PER_UNKNOWN * x.shape[1]:
        return BlockFit(receive.copy(), np.zeros_like(receive), False)
    y = np.where(finite, receive, 0).reshape(c, r * s).T.astype(np.complex128)
    usable = finite.reshape(-1).astype(np.float64)  # a NaN or infinite sample takes no part in the fit
    plain = _solve(x, y, usable if not finite.all() else None)
    kernels = _solve(x, y, _weights(y - x @ plain, (r, s)) * usable)
    removed = (x @ kernels).T.reshape(c, r, s)
    return BlockFit((receive - removed).astype(receive.dtype), removed.astype(receive.dtype), True)


@dataclass
class RemovalTally:
    """Energy before and removed per receive channel, summed over blocks, and the kernel taps
    used (for the QA report)."""

    before: np.ndarray
    removed: np.ndarray
    blocks: int = 0
    skipped: int = 0
    readouts: int = 0
    taps: set[int] = field(default_factory=set)

    @classmethod
    def empty(cls, channels: int) -> "RemovalTally":
        return cls(np.zeros(channels), np.zeros(channels))

    def add(self, receive: np.ndarray, fit: BlockFit, taps: int) -> None:
        self.before += np.nansum(np.abs(receive) ** 2, axis=(1, 2))
        self.removed += np.nansum(np.abs(fit.removed) ** 2, axis=(1, 2))
        self.blocks += 1
        self.skipped += 0 if fit.fitted else 1
        self.readouts += receive.shape[1]
        self.taps.add(taps)

    def percent(self) -> np.ndarray:
        """Power removed per channel, percent of the power before removal."""
        return 100.0 * self.removed / np.maximum(self.before, 1e-30)


@dataclass
class EMIRemover:
    """Streams readouts [CHA, S] through per-block removal: the sensing channels are dropped from
    what comes out. Blocks hold `block` readouts of equal length and dwell time; `flush` ends one
    early (end of a slice or of the stream). Kernels are `kernel_us` long (`kernel_taps` at the
    block's dwell time)."""

    sensing: list[int]
    channels: int
    block: int
    kernel_us: float = DEFAULT_KERNEL_US
    tally: RemovalTally = field(init=False)
    _pending: list = field(init=False, default_factory=list)
    _dwell_us: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        if self.block < 1 or not self.kernel_us > 0:
            raise ValueError(f"EMI block must be >= 1 readout and the kernel length > 0 us, got {self.block}, "
                             f"{self.kernel_us}")
        self.receive = [c for c in range(self.channels) if c not in set(self.sensing)]
        self.tally = RemovalTally.empty(len(self.receive))

    def push(self, data: np.ndarray, tag: object, dwell_us: float) -> list[tuple[np.ndarray, object]]:
        """Add one readout sampled every `dwell_us` (with a tag handed back beside its cleaned
        data); returns the readouts of every block completed by it, in order."""
        if data.shape[0] != self.channels:
            raise ValueError(f"readout has {data.shape[0]} channels, EMI removal was set up for {self.channels}")
        done = []
        if self._pending and (self._pending[0][0].shape[1] != data.shape[1] or self._dwell_us != dwell_us):
            done = self.flush()
        self._pending.append((data, tag))
        self._dwell_us = dwell_us
        if len(self._pending) >= self.block:
            done += self.flush()
        return done

    def flush(self) -> list[tuple[np.ndarray, object]]:
        """Clean and return the readouts held (fewer than a block)."""
        if not self._pending:
            return []
        stack = np.stack([d for d, _ in self._pending], axis=1)  # [CHA, R, S]
        receive, sensing = stack[self.receive], stack[self.sensing]
        taps = kernel_taps(self.kernel_us, self._dwell_us)
        fit = remove_block(receive, sensing, taps // 2)
        self.tally.add(receive, fit, taps)
        out = [(fit.cleaned[:, i], tag) for i, (_, tag) in enumerate(self._pending)]
        self._pending = []
        return out
