"""Noise prewhitening with Gadgetron NoiseAdjustGadget semantics.

Noise readouts (ACQ_IS_NOISE_MEASUREMENT) are consumed; their covariance gives a Cholesky
whitening matrix, scaled for the dwell-time / receiver-bandwidth difference, applied to every
later readout; whitened readouts carry PREWHITENED_FLAG, so later gadgets know their noise is
white with unit variance (SNR units). The covariance is stored under the scan's measurementID and reused by a later scan
that names it as its "Noise" measurementDependency (coils matched by label). Without noise the
data pass through unchanged, with a warning. The folder of stored covariances is the operator's
($ADACSC_NOISE_DIR), never a chain property: a client may send the chain XML.

Before any of this, site QA (adacsc.gadgets.site_qa): EMI is removed with sensing channels when
the scan has any (they are dropped from the stream, the noise readouts are cleaned the same way
so the covariance describes what is left), and the noise readouts are reported on (levels,
narrowband lines, correlations; log and QA meta).
"""

import logging
from dataclasses import dataclass
from typing import Any

import ismrmrd
import numpy as np

from adacsc.gadgets.contract import Connection, Gadget
from adacsc.gadgets.properties import setting
from adacsc.gadgets.site_qa import SiteQA, SiteQASettings
from adacsc.io import header as hdr
from adacsc.io.noise_store import NoiseStore, StoredNoise
from adacsc.mr.noise import NoiseAccumulator, bandwidth_scale, match_channels, whitening_matrix
from adacsc.scan_context import ScanContext

log = logging.getLogger(__name__)

PREWHITENED_FLAG = ismrmrd.ACQ_USER8
"""Acquisition flag set on every readout this gadget whitened (noise std 1 per sample)."""

@dataclass(frozen=True)
class _Prewhitening:
    perform_noise_adjust: bool = setting(True, "prewhiten; false passes all readouts through")


@dataclass(frozen=True)
class Settings(SiteQASettings, _Prewhitening):
    """The gadget's properties: the prewhitening switch, then the site QA's."""


class Prewhitener:
    """The noise state of one scan: gathers noise, then whitens imaging readouts."""

    def __init__(self, header: Any, store: NoiseStore) -> None:
        self.header = header
        self.store = store
        self.noise = NoiseAccumulator()
        self.noise_dwell_us = 0.0
        self.matrix: np.ndarray | None = None
        self.channels: int | None = None
        self.labels: list[str] | None = None
        """coil labels of the channels that reach the prewhitener (None: the header's, in order)"""
        self._resolved = False

    def add_noise(self, acquisition: ismrmrd.Acquisition) -> None:
        """Accumulate one noise readout."""
        if self._resolved:
            log.warning("noise readout %d after imaging data started: ignored", acquisition.scan_counter)
            return
        if not np.isfinite(acquisition.data).all():
            log.warning("noise readout %d has NaN or infinite samples: ignored", acquisition.scan_counter)
            return
        self.noise.add(acquisition.data)
        self.noise_dwell_us = float(acquisition.sample_time_us)

    def _covariance(self, labels: list[str]) -> tuple[np.ndarray, float] | None:
        """This scan's noise covariance, else its noise dependency's, else None."""
        measurement = hdr.measurement_id(self.header)
        if self.noise.samples >= 2:
            covariance = self.noise.covariance()
            if measurement:
                self._save(measurement, covariance, labels)
            log.info("noise covariance from %d samples of this scan", self.noise.samples)
            return covariance, self.noise_dwell_us
        dependency = hdr.noise_dependency(self.header)
        if dependency is None:
            return None
        try:
            stored = self.store.load(dependency)
        except ValueError as err:
            log.warning("noise dependency %s unusable: %s", dependency, err)
            return None
        if stored is None:
            log.warning("noise dependency %s not found in %s", dependency, self.store.folder)
            return None
        covariance = match_channels(stored.covariance, stored.coil_labels, labels)
        log.info("noise covariance reused from measurement %s (%d samples)", dependency, stored.samples)
        return covariance, stored.noise_dwell_us

    def _save(self, measurement: str, covariance: np.ndarray, labels: list[str]) -> None:
        try:
            path = self.store.save(measurement, StoredNoise(covariance, labels, self.noise_dwell_us, self.noise.samples))
            log.info("noise covariance stored in %s", path)
        except (OSError, ValueError) as err:
            log.warning("noise covariance not stored: %s", err)

    def _resolve(self, acquisition: ismrmrd.Acquisition) -> None:
        self._resolved = True
        self.channels = acquisition.active_channels
        labels = self.labels or hdr.coil_labels(self.header, self.channels)
        found = self._covariance(labels)
        if found is None:
            log.warning("no noise data and no usable noise dependency: readouts pass through without prewhitening")
            return
        covariance, noise_dwell = found
        if covariance.shape[0] != self.channels:
            raise ValueError(
                f"noise covariance has {covariance.shape[0]} channels but the imaging readouts have {self.channels}"
            )
        scale = bandwidth_scale(float(acquisition.sample_time_us), noise_dwell,
                                hdr.relative_noise_bandwidth(self.header))
        self.matrix = (whitening_matrix(covariance) * scale).astype(np.complex64)
        log.info("prewhitening %d channels (bandwidth scale %.4f)", self.channels, scale)

    def apply(self, acquisition: ismrmrd.Acquisition) -> ismrmrd.Acquisition:
        """Whiten one imaging readout in place and return it."""
        if not self._resolved:
            self._resolve(acquisition)
        if self.matrix is None:
            return acquisition
        if acquisition.active_channels != self.channels:
            raise ValueError(
                f"readout {acquisition.scan_counter} has {acquisition.active_channels} channels, "
                f"the noise covariance {self.channels}"
            )
        acquisition.data[:] = self.matrix @ acquisition.data
        acquisition.set_flag(PREWHITENED_FLAG)
        return acquisition

    def finish(self) -> None:
        """At the end of the stream: a noise-only scan stores its covariance for later scans."""
        if self._resolved or self.noise.samples < 2:
            return
        measurement = hdr.measurement_id(self.header)
        if measurement is None:
            log.warning("noise-only scan without measurementID: covariance not stored")
            return
        self.channels = self.noise.covariance().shape[0]
        self._save(measurement, self.noise.covariance(), self.labels or hdr.coil_labels(self.header, self.channels))


def _nothing(item: object) -> bool:
    """A connection filter that lets every item pass on untouched."""
    return False


def run(connection: Connection, settings: Settings, scan: ScanContext) -> None:
    """Consume noise readouts, prewhiten all other readouts, pass everything else on."""
    store = NoiseStore()
    prewhitener = Prewhitener(connection.header, store)
    site = SiteQA(connection.header, settings, store)

    def send(items: list) -> None:
        for item in items:
            if isinstance(item, ismrmrd.Acquisition):
                prewhitener.labels = site.kept_labels
                item = prewhitener.apply(item)
            connection.send(item)

    connection.filter(ismrmrd.Acquisition if settings.perform_noise_adjust else _nothing)
    for item in connection:
        if item.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            for noise in site.noise(item):
                prewhitener.add_noise(noise)
        else:
            send(site.imaging(item, prewhitener.add_noise))
    send(site.finish(prewhitener.add_noise))
    prewhitener.labels = site.kept_labels
    prewhitener.finish()


GADGET = Gadget("noise_adjust", Settings, run)


def noise_adjust(connection: Any) -> None:
    """Gadgetron `<execute>` entry: the gadget under the limits of the node's environment."""
    GADGET.gadgetron_entry(connection)
