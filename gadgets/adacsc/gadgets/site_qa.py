"""Site QA in front of the prewhitening, for the noise_adjust gadget: EMI removal with sensing
channels (the maths: adacsc.mr.emi) and the per-scan noise and EMI report from the noise
readouts (adacsc.mr.noise_report).

Sensing channels are those whose coil label (acquisitionSystemInformation.coilLabel) matches
`emi_sensing_pattern`, plus the indices in `emi_sensing_channels`. With `emi_removal` auto,
removal runs when there are any. Noise readouts are cleaned block by block before the noise
covariance sees them; imaging readouts are held until their block is full or their slice ends,
cleaned, and passed on without the sensing channels. The report is made from the raw noise
readouts (what the site's environment put in the receivers), with the ratio to the scanner's
stored reference when there is one (`adacsc noise-report --save-reference`).

The figures go to the log and, as a scan QA waveform (adacsc.io.scan_qa), to the gadget that
makes the images, which adds them to every image's QA meta: the report when the first imaging
readout comes, and the EMI removal figures again after every cleaned block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ismrmrd
import numpy as np

from adacsc.gadgets.properties import setting
from adacsc.io import header as hdr
from adacsc.io.header_builder import with_channels
from adacsc.io.noise_store import NoiseStore, load_reference
from adacsc.io.scan_qa import qa_waveform
from adacsc.mr.emi import DEFAULT_SENSING_PATTERN, EMIRemover, sensing_channels
from adacsc.mr.noise_report import DEFAULT_LINES, NoiseReport, noise_report

log = logging.getLogger(__name__)


def parse_odd(text: str) -> int:
    """An odd positive integer."""
    value = int(text)
    if value % 2 == 0:
        raise ValueError("must be odd (a kernel centred on the sample)")
    return value


@dataclass(frozen=True)
class SiteQASettings:
    """The site QA's properties (of the noise_adjust gadget)."""

    emi_removal: str = setting("auto", "remove EMI with sensing channels: auto (when sensing channels are "
                               "found), true (an error without any) or false", choices=("auto", "true", "false"))
    emi_sensing_pattern: str = setting(DEFAULT_SENSING_PATTERN, "comma-separated shell-style patterns "
                                       "(case-insensitive) of the header's coil labels that mark sensing "
                                       "channels; empty: none")
    emi_sensing_channels: str = setting("", "comma-separated indices of further sensing channels")
    emi_block: int = setting(64, "readouts per EMI fit (a block also ends with its slice)", minimum=1, maximum=4096)
    emi_kernel: int = setting(7, "taps of the convolution kernels along the readout (odd)", parse=parse_odd,
                              minimum=1, maximum=63)
    noise_report: bool = setting(True, "report noise levels, narrowband lines and channel correlations of the "
                                 "noise readouts (log and QA meta)")
    noise_report_lines: int = setting(DEFAULT_LINES, "strongest narrowband lines in the report", minimum=0,
                                      maximum=50)


_SLICE_END = (ismrmrd.ACQ_LAST_IN_SLICE, ismrmrd.ACQ_LAST_IN_REPETITION, ismrmrd.ACQ_LAST_IN_MEASUREMENT)


def report_from_readouts(readouts: list[tuple[np.ndarray, float]], labels: list[str], store: NoiseStore | None,
                         site: str | None, lines: int) -> NoiseReport | None:
    """The report of the largest group of noise readouts with one length and dwell time."""
    groups: dict[tuple[int, float], list[np.ndarray]] = {}
    for data, dwell in readouts:
        groups.setdefault((data.shape[1], dwell), []).append(data)
    (samples, dwell), chosen = max(groups.items(), key=lambda kv: len(kv[1]) * kv[0][0])
    if samples < 8:
        log.warning("noise report skipped: noise readouts of %d samples are too short", samples)
        return None
    reference = None
    if store is not None and site is not None:
        try:
            reference = load_reference(store, site)
        except ValueError as err:
            log.warning("noise reference of %s unusable: %s", site, err)
    return noise_report(np.stack(chosen, axis=1), dwell, labels, lines=lines,
                        reference=reference.densities if reference else None,
                        reference_name=reference.source if reference else "")


class SiteQA:
    """The site QA of one scan (module docstring); a pass-through when there is nothing to do."""

    def __init__(self, header: Any, settings: SiteQASettings, store: NoiseStore) -> None:
        self.header = header
        self.settings = settings
        self.store = store
        self.labels: list[str] | None = None
        self.kept_labels: list[str] | None = None
        self.sensing: list[int] = []
        self._noise_remover: EMIRemover | None = None
        self._imaging_remover: EMIRemover | None = None
        self._raw_noise: list[tuple[np.ndarray, float]] = []
        self._meta: dict[str, list[str]] = {}
        self._imaging_started = False

    def _setup(self, acquisition: ismrmrd.Acquisition) -> None:
        if self.labels is not None:
            return
        channels = acquisition.active_channels
        self.labels = hdr.coil_labels(self.header, channels)
        mode = self.settings.emi_removal
        if mode != "false":
            self.sensing = sensing_channels(self.labels, self.settings.emi_sensing_pattern,
                                            self.settings.emi_sensing_channels)
        if mode == "true" and not self.sensing:
            raise ValueError(f"emi_removal is true but no channel is a sensing channel (labels {self.labels}; "
                             "set emi_sensing_pattern or emi_sensing_channels)")
        if not self.sensing:
            return
        block, width = self.settings.emi_block, self.settings.emi_kernel // 2
        self._noise_remover = EMIRemover(self.sensing, channels, block, width)
        self._imaging_remover = EMIRemover(self.sensing, channels, block, width)
        self.kept_labels = [label for i, label in enumerate(self.labels) if i not in self.sensing]
        log.info("EMI removal: sensing channels %s, receive channels %s, blocks of %d readouts, %d-tap kernels",
                 [self.labels[i] for i in self.sensing], self.kept_labels, block, 2 * width + 1)
        self._meta.update({"EMISensingChannels": [self.labels[i] for i in self.sensing],
                           "EMIReceiveChannels": list(self.kept_labels),
                           "EMIKernel": [str(2 * width + 1)], "EMIBlock": [str(block)]})

    def noise(self, acquisition: ismrmrd.Acquisition) -> list[ismrmrd.Acquisition]:
        """A noise readout in; the (cleaned) noise readouts ready for the covariance out."""
        self._setup(acquisition)
        if self.settings.noise_report and not self._imaging_started and np.isfinite(acquisition.data).all():
            self._raw_noise.append((np.array(acquisition.data), float(acquisition.sample_time_us)))
        if self._noise_remover is None or not np.isfinite(acquisition.data).all():
            return [acquisition]  # the prewhitener ignores a non-finite noise readout, with a warning
        return [with_channels(original, data) for data, original in self._noise_remover.push(acquisition.data,
                                                                                               acquisition)]

    def _flush_noise(self, add_noise: Callable[[ismrmrd.Acquisition], None]) -> None:
        if self._noise_remover is None:
            return
        for data, original in self._noise_remover.flush():
            add_noise(with_channels(original, data))
        tally = self._noise_remover.tally
        if tally.readouts:
            self._meta["EMIRemovedNoisePercent"] = [f"{v:.2f}" for v in tally.percent()]
            log.info("EMI removal, noise readouts: %s of the power removed (%d blocks%s)",
                     _percents(self.kept_labels, tally.percent()), tally.blocks,
                     f", {tally.skipped} too small to fit" if tally.skipped else "")

    def _report(self) -> None:
        if not self._raw_noise or self.labels is None:
            return
        site = hdr.scanner_identity(self.header)
        try:
            report = report_from_readouts(self._raw_noise, self.labels, self.store, site,
                                          self.settings.noise_report_lines)
        except ValueError as err:
            log.warning("noise report failed: %s", err)
            return
        self._raw_noise = []
        if report is None:
            return
        for line in report.text():
            log.info("%s", line)
        self._meta.update(report.meta())

    def imaging(self, acquisition: ismrmrd.Acquisition,
                add_noise: Callable[[ismrmrd.Acquisition], None]) -> list[ismrmrd.Acquisition | ismrmrd.Waveform]:
        """An imaging readout in; what to send on (a QA waveform first when there is news, then
        the readouts that are ready) out. Noise still held goes to `add_noise` first."""
        self._setup(acquisition)
        out: list[ismrmrd.Acquisition | ismrmrd.Waveform] = []
        if not self._imaging_started:
            self._imaging_started = True
            self._flush_noise(add_noise)
            self._report()
            if self._meta and self._imaging_remover is None:
                out.append(qa_waveform(self._meta))
        if self._imaging_remover is None:
            return out + [acquisition]
        ready = self._imaging_remover.push(acquisition.data, acquisition)
        if any(acquisition.is_flag_set(flag) for flag in _SLICE_END):
            ready += self._imaging_remover.flush()
        return out + self._cleaned(ready, self._imaging_remover)

    def _cleaned(self, ready: list[tuple[np.ndarray, ismrmrd.Acquisition]],
                 remover: EMIRemover) -> list[ismrmrd.Acquisition | ismrmrd.Waveform]:
        """A QA waveform with the removal so far, then the cleaned readouts."""
        if not ready:
            return []
        self._meta["EMIRemovedPercent"] = [f"{v:.2f}" for v in remover.tally.percent()]
        return [qa_waveform(self._meta)] + [with_channels(original, data) for data, original in ready]

    def finish(self, add_noise: Callable[[ismrmrd.Acquisition], None]) -> list[ismrmrd.Acquisition | ismrmrd.Waveform]:
        """At the end of the stream: the readouts still held; a noise-only scan's noise is
        cleaned into `add_noise` and reported."""
        if not self._imaging_started:
            self._flush_noise(add_noise)
            self._report()
            return []
        if self._imaging_remover is None:
            return []
        out = self._cleaned(self._imaging_remover.flush(), self._imaging_remover)
        tally = self._imaging_remover.tally
        if tally.readouts:
            log.info("EMI removal, imaging readouts: %s of the power removed (%d blocks%s)",
                     _percents(self.kept_labels, tally.percent()), tally.blocks,
                     f", {tally.skipped} too small to fit" if tally.skipped else "")
        return out


def _percents(labels: list[str] | None, values: np.ndarray) -> str:
    return ", ".join(f"{label} {value:.1f} %" for label, value in zip(labels or [], values))
