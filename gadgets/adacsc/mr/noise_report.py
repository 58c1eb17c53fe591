"""A scan's noise and EMI report from its noise readouts: per channel the noise level, its ratio
to a stored site reference, the strongest narrowband lines, and the channel correlations.

Levels. `rms` is the noise std per sample, sqrt(mean |n|^2) (everything in the readouts: thermal
noise and interference). Per-sample power grows with the receiver bandwidth 1 / dwell, so levels
are compared with a reference as densities, rms * sqrt(dwell_us): a reference taken at another
dwell time still compares. `floor` is the thermal floor per sample, from the median of the
averaged spectrum (narrowband lines do not move a median).

Spectrum. Per channel, the periodogram of every readout with a 4-term Blackman-Harris window w
(side lobes 92 dB down, so a strong line casts no false ones; main lobe +-4 bins), zero-padded
`PAD` times, averaged over readouts and normalised by sum(w^2): white noise of power s^2 per
sample has expected level s^2 in every bin. Averaged over R readouts a bin of white noise is
s^2 Gamma(R, 1/R), whose median is s^2 m_R (m_1 = ln 2; Wilson-Hilferty for R > 1): the floor is
median / m_R.

Lines. A tone a exp(2 pi i f t) gives a peak a^2 (sum w)^2 / sum w^2 over the floor. Its level is
reported as 10 log10(S a^2 / floor) dB, S the samples per readout: the tone-to-noise ratio in one
bin of a plain S-point FFT, a figure that does not depend on the window. The floor a line stands
on is local (the median over `LOCAL_BINS` FFT bins around it, interpolated, without the main
lobes of lines), so coloured broadband interference is not taken for lines. A bin counts as a line when it exceeds that floor by more
than noise would anywhere in the spectrum with probability `FALSE_ALARM`, and its level is at
least `MIN_LEVEL_DB` (weaker bumps on a coloured floor are not lines); peaks closer than `MERGE_BINS` FFT bins are one line; the frequency is refined by a
parabola through the log-spectrum around the peak. Offsets are from the centre frequency, in Hz,
positive for exp(+2 pi i f t) in the demodulated data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

PAD = 2
FALSE_ALARM = 1e-3
MERGE_BINS = 4.0
LOCAL_BINS = 32
#: a segment holds at least this many bins x readouts, so its median is good to a few percent
MIN_SEGMENT_VALUES = 1024
MIN_LEVEL_DB = 10.0
_BLACKMAN_HARRIS = (0.35875, 0.48829, 0.14128, 0.01168)
DEFAULT_LINES = 5


@dataclass(frozen=True)
class SpectralLine:
    """A narrowband line in one channel."""

    channel: int
    offset_hz: float
    level_db: float


@dataclass
class NoiseReport:
    """The noise and EMI figures of one scan's noise readouts (see the module docstring)."""

    labels: list[str]
    dwell_us: float
    readouts: int
    samples: int
    rms: np.ndarray  # [C] std per sample
    floor: np.ndarray  # [C] thermal floor std per sample
    correlation: np.ndarray  # [C, C] |rho|
    lines: list[SpectralLine]
    freq_hz: np.ndarray  # [F]
    spectrum: np.ndarray  # [C, F] mean power per bin (white noise s^2 -> s^2)
    ratio: np.ndarray | None = None  # [C] density / reference density (NaN where no reference)
    reference: str = ""
    channel_lines: dict[int, list[SpectralLine]] = field(default_factory=dict)

    @property
    def density(self) -> np.ndarray:
        """rms * sqrt(dwell_us): the level per unit bandwidth, comparable across dwell times."""
        return self.rms * math.sqrt(max(self.dwell_us, 1e-12))

    def max_correlation(self) -> float:
        """The largest off-diagonal |rho| (0 for one channel)."""
        c = self.correlation.shape[0]
        return float(np.max(self.correlation[~np.eye(c, dtype=bool)])) if c > 1 else 0.0

    def meta(self) -> dict[str, list[str]]:
        """QA meta entries (ismrmrd.Meta-style lists of strings, one entry per channel)."""
        meta = {
            "NoiseChannels": list(self.labels),
            "NoiseRMS": [f"{v:.6g}" for v in self.rms],
            "NoiseFloor": [f"{v:.6g}" for v in self.floor],
            "NoiseMaxCorrelation": [f"{self.max_correlation():.4f}"],
            "NoiseLines": [_line_text(self.labels, line) for line in self.lines] or ["none"],
        }
        if self.ratio is not None:
            meta["NoiseRatioToReference"] = ["nan" if not np.isfinite(v) else f"{v:.4f}" for v in self.ratio]
            meta["NoiseReference"] = [self.reference]
        return meta

    def text(self) -> list[str]:
        """The report as lines for a log or a terminal."""
        out = [f"noise report: {self.readouts} noise readouts x {self.samples} samples, dwell {self.dwell_us:g} us, "
               f"{len(self.labels)} channels" + (f", reference {self.reference}" if self.reference else "")]
        for c, label in enumerate(self.labels):
            ratio = "" if self.ratio is None or not np.isfinite(self.ratio[c]) else f", {self.ratio[c]:.3f} x reference"
            out.append(f"  {label}: rms {self.rms[c]:.4g}, floor {self.floor[c]:.4g} "
                       f"({20 * math.log10(max(self.rms[c], 1e-30) / max(self.floor[c], 1e-30)):+.1f} dB){ratio}")
            for line in self.channel_lines.get(c, []):
                out.append(f"      line {line.offset_hz:+10.1f} Hz  {line.level_db:5.1f} dB over floor")
        if len(self.labels) > 1:
            out.append(f"  largest channel correlation |rho| {self.max_correlation():.3f}")
        return out


def _line_text(labels: list[str], line: SpectralLine) -> str:
    return f"{labels[line.channel]} {line.offset_hz:+.1f} Hz {line.level_db:.1f} dB"


def median_factor(readouts: int) -> float:
    """Median of Gamma(R, 1/R): the averaged periodogram's median over its mean for white noise."""
    if readouts <= 1:
        return math.log(2.0)
    r = float(readouts)
    return (1 - 1 / (9 * r)) ** 3


def detection_threshold(readouts: int, independent_bins: int, false_alarm: float = FALSE_ALARM) -> float:
    """Level over the floor that white noise exceeds in any of `independent_bins` bins with
    probability `false_alarm` (averaged over `readouts` periodograms)."""
    p = false_alarm / max(independent_bins, 1)
    if readouts <= 1:
        return -math.log(p)
    r = float(readouts)
    z = NormalDist().inv_cdf(1 - p)
    return (1 - 1 / (9 * r) + z * math.sqrt(1 / (9 * r))) ** 3


def window(samples: int) -> np.ndarray:
    """The 4-term Blackman-Harris window of `samples` points (periodic form)."""
    phase = 2 * np.pi * np.arange(samples) / samples
    return sum((-1) ** k * a * np.cos(k * phase) for k, a in enumerate(_BLACKMAN_HARRIS))


def averaged_spectrum(noise: np.ndarray, dwell_us: float) -> tuple[np.ndarray, np.ndarray]:
    """(offsets Hz [F], mean windowed periodogram [C, F]) of noise [C, R, S], centred."""
    _, _, s = noise.shape
    window_ = window(s)
    size = PAD * s
    spectra = np.fft.fft(noise * window_.astype(noise.real.dtype), n=size, axis=-1)
    power = np.fft.fftshift(np.mean(spectra.real ** 2 + spectra.imag ** 2, axis=1), axes=-1) / np.sum(window_ ** 2)
    freq = np.fft.fftshift(np.fft.fftfreq(size, dwell_us * 1e-6))
    return freq, power


def local_floor(power: np.ndarray, readouts: int, samples: int) -> np.ndarray:
    """The noise floor under every bin of spectra [C, F]: medians over segments of LOCAL_BINS
    FFT bins (more when few readouts are averaged: MIN_SEGMENT_VALUES), corrected to means
    (median_factor), interpolated between the segment centres. A second pass replaces the main
    lobes of what stands above the first floor by that floor, so strong lines do not raise the
    floor they are measured against."""
    bins = max(LOCAL_BINS, -(-MIN_SEGMENT_VALUES // max(readouts, 1)))
    floor = _segment_medians(power, bins) / median_factor(readouts)
    lobes = power > floor * detection_threshold(readouts, samples)
    if not lobes.any():
        return floor
    half = int(MERGE_BINS * PAD)
    near = lobes.copy()
    for shift in range(1, half + 1):
        near[..., shift:] |= lobes[..., :-shift]
        near[..., :-shift] |= lobes[..., shift:]
    return _segment_medians(np.where(near, floor * median_factor(readouts), power), bins) / median_factor(readouts)


def _segment_medians(power: np.ndarray, bins: int) -> np.ndarray:
    """Medians of consecutive segments of `bins` FFT bins (the last one takes the remainder out of
    the median), linearly interpolated to every bin [C, F]."""
    size = power.shape[-1]
    segment = min(bins * PAD, size)
    count = max(size // segment, 1)
    medians = np.median(power[..., : count * segment].reshape(power.shape[:-1] + (count, segment)), axis=-1)
    if count == 1:
        return np.repeat(medians, size, axis=-1)
    position = np.clip((np.arange(size) - (segment - 1) / 2) / segment, 0, count - 1)
    left = np.minimum(position.astype(int), count - 2)
    weight = position - left
    return medians[..., left] * (1 - weight) + medians[..., left + 1] * weight


def find_lines(freq: np.ndarray, power: np.ndarray, floor: np.ndarray, readouts: int, samples: int,
               window_gain: float, channel: int, count: int) -> list[SpectralLine]:
    """The `count` strongest lines of one channel's averaged spectrum [F] over its floor [F]
    (strongest first)."""
    threshold = floor * detection_threshold(readouts, samples)
    peaks = np.flatnonzero((power[1:-1] > threshold[1:-1]) & (power[1:-1] >= power[:-2]) & (power[1:-1] >= power[2:])) + 1
    peaks = peaks[np.argsort(power[peaks])[::-1]]
    chosen: list[int] = []
    for p in peaks:
        if all(abs(p - q) > MERGE_BINS * PAD for q in chosen):
            chosen.append(int(p))
        if len(chosen) == count:
            break
    step = float(freq[1] - freq[0])
    lines = []
    for p in chosen:
        a, b, c = np.log(np.maximum(power[p - 1: p + 2], 1e-300))
        denominator = a - 2 * b + c
        shift = 0.5 * (a - c) / denominator if denominator < 0 else 0.0
        peak = math.exp(b - 0.25 * (a - c) * shift)
        tone_power = max(peak - floor[p], 1e-30) / window_gain
        level = 10 * math.log10(samples * tone_power / floor[p])
        if level >= MIN_LEVEL_DB:
            lines.append(SpectralLine(channel, float(freq[p] + shift * step), level))
    return lines


def noise_report(noise: np.ndarray, dwell_us: float, labels: list[str], *, reference: dict[str, float] | None = None,
                 reference_name: str = "", lines: int = DEFAULT_LINES) -> NoiseReport:
    """The report of noise readouts [C, R, S] (one dwell time) with coil `labels`; `reference`
    maps coil labels to reference densities (rms * sqrt(dwell_us))."""
    noise = np.asarray(noise)
    if noise.ndim != 3 or noise.shape[0] != len(labels) or noise.shape[2] < 8:
        raise ValueError(f"noise readouts must be [channels={len(labels)}, readouts, samples >= 8], got {noise.shape}")
    if not np.isfinite(noise).all():
        raise ValueError("the noise readouts hold NaN or infinite samples")
    c, r, s = noise.shape
    flat = noise.reshape(c, r * s).astype(np.complex128)
    covariance = flat @ flat.conj().T / flat.shape[1]
    power = np.real(np.diag(covariance))
    scale = np.sqrt(np.maximum(np.outer(power, power), 1e-300))
    freq, spectrum = averaged_spectrum(noise, dwell_us)
    floor_power = np.median(spectrum, axis=1) / median_factor(r)
    w = window(s)
    gain = float(np.sum(w) ** 2 / np.sum(w ** 2))
    local = local_floor(spectrum, r, s)
    per_channel = {ch: find_lines(freq, spectrum[ch], local[ch], r, s, gain, ch, lines) for ch in range(c)}
    strongest = sorted((line for found in per_channel.values() for line in found), key=lambda x: -x.level_db)[:lines]
    report = NoiseReport(labels=list(labels), dwell_us=float(dwell_us), readouts=r, samples=s, rms=np.sqrt(power),
                         floor=np.sqrt(floor_power), correlation=np.abs(covariance) / scale, lines=strongest,
                         freq_hz=freq, spectrum=spectrum, channel_lines=per_channel)
    if reference is not None:
        report.ratio = np.array([report.density[i] / reference[label] if reference.get(label) else np.nan
                                 for i, label in enumerate(labels)])
        report.reference = reference_name
    return report
