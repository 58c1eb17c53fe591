"""Electromagnetic interference (EMI) for the scanner simulator, with its ground truth.

Model
-----
An unshielded low-field scanner picks up interference from a few sources in and around the room
(a cable entry, a power supply, a lamp). Source k emits a complex baseband waveform w_k(t) (t in
seconds on the scanner's clock, frequencies as offsets from the centre frequency):

- narrowband tones exp(2 pi i f t + i phi), the tones `tones_hz` dealt to the sources in turn;
- broadband noise: white complex Gaussian over the receiver bandwidth, independent per readout,
  with a fixed power spectral density (so, like thermal noise, its power per sample grows as the
  dwell time shrinks: unit power per sample at `reference_dwell_us`).

Source k reaches channel c through a frequency-dependent transfer function

    H_ck(f, u) = sum_m h_ckm(u) exp(-2 pi i f m tau),    tau = `delay_us`,

a short FIR in physical time, so the same coupling holds for readouts of any dwell time. The taps
drift slowly and linearly over the scan: h(u) = h0 + u (h1 - h0), u in [0, 1] the readout's time
as a fraction of the scan, |h1 - h0| = `drift` |h0|. Each readout's source waveforms are filtered
in the frequency domain (FFT along the readout, over a lead-in that is cropped, so the
convolution is linear).

Channels are the C receive coils followed by N sensing coils (labels `EMI_SENSE_01`, ...), which
see no MR signal. Receive coils couple to the sources at random; sensing coils are placed to see
the sources apart (their leading taps form a well-conditioned, orthonormal mixing), `sensing_gain`
times more strongly (amplitude) than the receive coils on average, and carry their own thermal
noise (std `sensing_noise` times the receive coils' mean thermal std; independent of the receive
noise). EMI removal with N sensing coils can follow up to N sources with short kernels.

Power. All couplings are scaled by one factor so that the EMI power per sample in the receive
channels, averaged over the imaging readouts and channels, is `power_ratio` times the mean thermal
noise power per sample of the receive channels (trace(C) / C of the imaging covariance). Tones
share `tone_fraction` of the emitted power equally; the sources' broadband noise the rest.
`power_ratio` 0 gives a scan whose sensing coils hold thermal noise only ("EMI-free sensing
channels").

`Interference` adds all this to the simulator's finished readouts (every class: imaging,
calibration, navigators, ...), readout by readout from their time stamps.

Ground truth (`write_emi_truth`, next to the simulator's ground truth in the scan file):
`/<group>/ground_truth/emi/noise` [C+N, R_noise, S_noise] (the noise readouts, in this scan or
its separate noise scan) and `/imaging` [C+N, R, S] (every other readout, in file order) complex64,
the interference added to every channel of every readout (thermal noise and signal excluded),
with attributes: channel labels, the sensing channel indices, tone frequencies and the power of
each tone per channel (per sample), the thermal power per sample of each channel in the imaging
and noise readouts, and the configuration.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

import h5py
import ismrmrd
import numpy as np

from adacsc.io.header_builder import TIME_STAMP_TICK_MS, with_channels

SENSING_LABEL = "EMI_SENSE"
"""Label prefix of the simulated sensing coils (matched by the noise_adjust gadget's default pattern)."""
EMI_GROUP = "ground_truth/emi"


def sensing_names(count: int) -> list[str]:
    """Coil labels of `count` sensing coils."""
    return [f"{SENSING_LABEL}_{n + 1:02d}" for n in range(count)]


@dataclass(frozen=True)
class EMIConfig:
    """The interference of a simulated scan (see the module docstring for the model)."""

    sensing_coils: int = 2
    power_ratio: float = 10.0
    tones_hz: tuple[float, ...] = (2500.0, -9400.0, 17300.0)
    tone_fraction: float = 0.5
    sources: int = 2
    taps: int = 3
    delay_us: float = 5.0
    drift: float = 0.2
    sensing_gain: float = 4.0
    sensing_noise: float = 1.0
    reference_dwell_us: float = 20.0

    def validate(self) -> None:
        if self.sensing_coils < 0:
            raise ValueError(f"sensing coils must be >= 0, got {self.sensing_coils}")
        if not (np.isfinite(self.power_ratio) and self.power_ratio >= 0):
            raise ValueError(f"EMI power ratio must be a finite number >= 0, got {self.power_ratio}")
        if not 0 <= self.tone_fraction <= 1:
            raise ValueError(f"tone fraction must be in [0, 1], got {self.tone_fraction}")
        if self.tone_fraction > 0 and not self.tones_hz:
            raise ValueError("a tone fraction > 0 needs at least one tone frequency")
        if self.sources < 1:
            raise ValueError(f"at least one EMI source is needed, got {self.sources}")
        if self.taps < 1 or self.delay_us <= 0 or self.reference_dwell_us <= 0:
            raise ValueError("taps must be >= 1 and the delay and reference dwell time > 0")
        if self.drift < 0 or self.sensing_gain <= 0 or self.sensing_noise < 0:
            raise ValueError("drift and sensing noise must be >= 0 and the sensing gain > 0")


@dataclass
class ReadoutTimes:
    """When a group of readouts was sampled: first-sample times (us), dwell (us), samples, and
    the scan-time fraction u in [0, 1] of each readout (for the drift)."""

    start_us: np.ndarray
    dwell_us: float
    samples: int
    progress: np.ndarray


@dataclass
class EMISources:
    """Drawn sources and couplings of one scan: apply with `interference`."""

    config: EMIConfig
    channels: int  # receive + sensing
    receive: int
    phases: np.ndarray  # [tones]
    tone_amplitude: np.ndarray  # [tones]
    broadband_amplitude: float
    taps0: np.ndarray  # [channels, sources, taps]
    taps1: np.ndarray
    scale: float = 1.0

    @property
    def tones(self) -> np.ndarray:
        return np.asarray(self.config.tones_hz, dtype=np.float64)

    def tone_source(self) -> np.ndarray:
        """The source emitting each tone."""
        return np.arange(len(self.config.tones_hz)) % self.config.sources

    def transfer(self, freq_hz: np.ndarray, progress: float) -> np.ndarray:
        """H [channels, sources, len(freq)] at readout progress u."""
        taps = self.taps0 + progress * (self.taps1 - self.taps0)
        m = np.arange(taps.shape[-1])
        phase = np.exp(-2j * np.pi * np.outer(m, np.asarray(freq_hz)) * self.config.delay_us * 1e-6)  # [taps, F]
        return self.scale * (taps @ phase)

    def emitted(self, start_us: float, dwell_us: float, samples: int, rng: np.random.Generator) -> np.ndarray:
        """The sources' waveforms [sources, samples] from `start_us` on."""
        cfg = self.config
        t = start_us * 1e-6 + np.arange(samples) * dwell_us * 1e-6
        shape = (cfg.sources, samples)
        white = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)
        waves = white * self.broadband_amplitude * np.sqrt(cfg.reference_dwell_us / dwell_us)
        for tone, source in enumerate(self.tone_source()):
            waves[source] += self.tone_amplitude[tone] * np.exp(2j * np.pi * self.tones[tone] * t + 1j * self.phases[tone])
        return waves

    def interference(self, times: ReadoutTimes, rng: np.random.Generator) -> np.ndarray:
        """The EMI of every channel in these readouts, [channels, R, S] complex128."""
        lead = int(np.ceil((self.config.taps - 1) * self.config.delay_us / times.dwell_us)) + 8
        freq = np.fft.fftfreq(times.samples + lead, times.dwell_us * 1e-6)
        out = np.zeros((self.channels, len(times.start_us), times.samples), dtype=np.complex128)
        for r, (start, u) in enumerate(zip(times.start_us, times.progress)):
            spectra = np.fft.fft(self.emitted(start - lead * times.dwell_us, times.dwell_us, times.samples + lead,
                                              rng), axis=-1)
            filtered = np.einsum("cks,ks->cs", self.transfer(freq, float(u)), spectra)
            out[:, r] = np.fft.ifft(filtered, axis=-1)[:, lead:]
        return out


def draw_sources(config: EMIConfig, receive: int, rng: np.random.Generator) -> EMISources:
    """Random phases and couplings for `receive` receive coils and config.sensing_coils sensing
    coils; the overall scale is set later by `calibrate`."""
    config.validate()
    channels = receive + config.sensing_coils
    n_tones = len(config.tones_hz)
    base = _random_taps(rng, (channels, config.sources, config.taps))
    if config.sensing_coils:
        base[receive:] = _sensing_taps(rng, config) * config.sensing_gain
    delta = _random_taps(rng, (channels, config.sources, config.taps))
    delta *= config.drift * np.linalg.norm(base, axis=-1, keepdims=True) / np.linalg.norm(delta, axis=-1, keepdims=True)
    tone_power = config.tone_fraction * config.sources / n_tones if n_tones else 0.0
    return EMISources(config=config, channels=channels, receive=receive,
                      phases=rng.uniform(-np.pi, np.pi, n_tones),
                      tone_amplitude=np.full(n_tones, np.sqrt(tone_power)),
                      broadband_amplitude=float(np.sqrt(1 - config.tone_fraction)),
                      taps0=base, taps1=base + delta)


def _sensing_taps(rng: np.random.Generator, config: EMIConfig) -> np.ndarray:
    """Taps [N, sources, taps] of sensing coils placed to see the sources apart: the leading taps
    form a matrix with orthonormal columns (or rows, for fewer coils than sources) of the receive
    coils' mean coupling strength, the later taps are random and decaying as for any coil."""
    n, k = config.sensing_coils, config.sources
    mixing = rng.standard_normal((max(n, k), min(n, k))) + 1j * rng.standard_normal((max(n, k), min(n, k)))
    q = np.linalg.qr(mixing)[0]
    q = q if n >= k else q.T
    shape = _random_taps(rng, (n, k, config.taps))
    shape[..., 0] = 1.0
    strength = np.sqrt(np.sum(0.25 ** np.arange(config.taps)) * max(n, k) / min(n, k))
    return q[..., None] * shape * strength


def _random_taps(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Complex FIR taps decaying along the last axis (a smooth frequency response)."""
    decay = 0.5 ** np.arange(shape[-1])
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2) * decay


def calibrate(sources: EMISources, imaging_emi: np.ndarray, thermal_power: float) -> float:
    """The factor that brings the receive channels' mean EMI power per sample in `imaging_emi`
    (drawn with scale 1) to power_ratio x `thermal_power`; sets it on `sources` and returns it."""
    current = float(np.mean(np.abs(imaging_emi[: sources.receive]) ** 2))
    target = sources.config.power_ratio * thermal_power
    sources.scale = float(np.sqrt(target / current)) if current > 0 else 0.0
    return sources.scale


def tone_powers(sources: EMISources, progress: np.ndarray) -> np.ndarray:
    """Mean power per sample of each tone in each channel over readouts at `progress`,
    [channels, tones] (|H_ck(f)|^2 a^2 for the tone's source k, averaged over the drift)."""
    n_tones = len(sources.config.tones_hz)
    if not n_tones:
        return np.zeros((sources.channels, 0))
    picks = sources.tone_source()
    powers = [np.abs(sources.transfer(sources.tones, float(u))[:, picks, np.arange(n_tones)]) ** 2 for u in progress]
    return np.mean(powers, axis=0) * sources.tone_amplitude[None] ** 2


@dataclass
class EMITruth:
    """The interference added to a scan, per channel and readout, and what it was made of."""

    noise: np.ndarray  # [channels, R_noise, S_noise]
    imaging: np.ndarray  # [channels, R, S]
    attrs: dict


def write_emi_truth(path: str | os.PathLike, truth: EMITruth, *, group: str = "dataset") -> None:
    """Store the EMI ground truth in the scan file (after the simulator's ground truth)."""
    with h5py.File(path, "a") as f:
        parent = f.require_group(group)
        if EMI_GROUP in parent:
            del parent[EMI_GROUP]
        g = parent.create_group(EMI_GROUP)
        for name in ("noise", "imaging"):
            g.create_dataset(name, data=getattr(truth, name).astype(np.complex64), compression="gzip",
                             shuffle=True, track_times=False)
        for key, value in truth.attrs.items():
            g.attrs[key] = value


def read_emi_truth(path: str | os.PathLike, *, group: str = "dataset") -> EMITruth:
    """The EMI ground truth of a simulated scan; KeyError when the scan has none."""
    with h5py.File(path, "r") as f:
        if f"{group}/{EMI_GROUP}" not in f:
            raise KeyError(f"{path} has no /{group}/{EMI_GROUP} (simulated without EMI?)")
        g = f[f"{group}/{EMI_GROUP}"]
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.attrs.items()}
        return EMITruth(noise=g["noise"][()], imaging=g["imaging"][()], attrs=attrs)


class Interference:
    """The EMI of one scan, added readout by readout to finished acquisitions (so it works for
    every readout class the simulator writes): sensing channels are appended, each readout gets
    its interference from its time stamp, dwell time and length, and the sensing coils their
    thermal noise (noise readouts scaled for their bandwidth like the receive coils' noise).

    `apply` the scan's readouts first: the couplings are calibrated on its non-noise readouts."""

    def __init__(self, config: EMIConfig, receive_covariance: np.ndarray, noise_bandwidth_scale2: float,
                 rng: np.random.Generator, *, origin_ticks: int, span_ticks: float) -> None:
        self.config = config
        self.receive = receive_covariance.shape[0]
        self.thermal = float(np.real(np.trace(receive_covariance))) / self.receive
        self.bandwidth = noise_bandwidth_scale2
        self.rng = rng
        self.origin = origin_ticks
        self.span = max(span_ticks, 1.0)
        self.sources = draw_sources(config, self.receive, rng)
        self.calibrated = False
        self.noise: list[np.ndarray] = []
        self.imaging: list[np.ndarray] = []
        self.thermal_power = np.concatenate([np.real(np.diag(receive_covariance)),
                                             np.full(config.sensing_coils, self.thermal * config.sensing_noise ** 2)])

    def _emi(self, acqs: list[ismrmrd.Acquisition]) -> list[np.ndarray]:
        """Interference [C + N, S] of every readout (grouped by dwell time and length)."""
        out: list[np.ndarray | None] = [None] * len(acqs)
        groups: dict[tuple[float, int], list[int]] = {}
        for i, acq in enumerate(acqs):
            groups.setdefault((float(acq.sample_time_us), acq.number_of_samples), []).append(i)
        tick_us = TIME_STAMP_TICK_MS * 1000
        for (dwell, samples), members in groups.items():
            ticks = np.array([acqs[i].acquisition_time_stamp for i in members], dtype=np.float64) - self.origin
            times = ReadoutTimes(ticks * tick_us, dwell, samples, np.clip(ticks / self.span, 0, 1))
            emi = self.sources.interference(times, self.rng)
            for k, i in enumerate(members):
                out[i] = emi[:, k]
        return out  # type: ignore[return-value]

    def apply(self, acqs: list[ismrmrd.Acquisition]) -> list[ismrmrd.Acquisition]:
        """The readouts with sensing channels and interference added."""
        emi = self._emi(acqs)
        noise = [a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) for a in acqs]
        if not self.calibrated:
            imaging = np.stack([e for e, is_noise in zip(emi, noise) if not is_noise], axis=1)
            scale = calibrate(self.sources, imaging, self.thermal)
            self.calibrated = True
        else:
            scale = 1.0
        out = []
        for acq, e, is_noise in zip(acqs, emi, noise):
            e = e * scale
            (self.noise if is_noise else self.imaging).append(e.astype(np.complex64))
            std = np.sqrt(self.thermal * (self.bandwidth if is_noise else 1.0)) * self.config.sensing_noise
            shape = (self.config.sensing_coils, e.shape[1])
            sensing = std * (self.rng.standard_normal(shape) + 1j * self.rng.standard_normal(shape)) / np.sqrt(2)
            data = np.concatenate([acq.data, sensing]) + e
            out.append(with_channels(acq, data.astype(np.complex64)))
        return out

    def truth(self, labels: list[str], noise_progress: np.ndarray, imaging_progress: np.ndarray) -> EMITruth:
        """The ground truth of what was added."""
        return EMITruth(noise=_stack(self.noise, len(labels)), imaging=_stack(self.imaging, len(labels)), attrs={
            "channel_labels": json.dumps(labels),
            "sensing_channels": np.arange(self.receive, self.receive + self.config.sensing_coils),
            "tones_hz": np.asarray(self.config.tones_hz, dtype=np.float64),
            "tone_power_imaging": tone_powers(self.sources, imaging_progress),
            "tone_power_noise": tone_powers(self.sources, noise_progress),
            "thermal_power_imaging": self.thermal_power,
            "thermal_power_noise": self.thermal_power * self.bandwidth,
            "power_ratio": self.config.power_ratio,
            "config_json": config_json(self.config),
        })


def _stack(readouts: list[np.ndarray], channels: int) -> np.ndarray:
    """[C, R, S] of readouts [C, S] (of one length), or an empty [C, 0, 0]."""
    return np.stack(readouts, axis=1) if readouts else np.zeros((channels, 0, 0), np.complex64)


def config_json(config: EMIConfig) -> str:
    """The configuration as JSON (stored with the truth; part of the scan's measurementID tag)."""
    return json.dumps(dataclasses.asdict(config), sort_keys=True)
