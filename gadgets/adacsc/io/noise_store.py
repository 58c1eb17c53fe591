"""Stored noise covariances, keyed by measurementID, and per-site noise references, keyed by the
scanner, inside one operator-configured folder.

The files' paths are text (os.path), not pathlib paths: the server reads and writes one per scan,
named by its measurementID, and pathlib would intern every such name (adacsc.io.output_file)."""

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adacsc import resources
from adacsc.io.output_file import atomic_output


@dataclass(frozen=True)
class StoredNoise:
    """A noise covariance with the coil labels and dwell time it was measured with."""

    covariance: np.ndarray
    coil_labels: list[str]
    noise_dwell_us: float
    samples: int


@dataclass(frozen=True)
class NoiseReference:
    """A site's reference noise: per coil label the level per unit bandwidth, rms * sqrt(dwell_us)
    (adacsc.mr.noise_report), from a quiet scan the operator chose."""

    densities: dict[str, float]
    source: str


def site_name(text: str) -> str:
    """A scanner identity (serial number, station name) as a plain file-name part."""
    name = re.sub(r"\.{2,}|[^A-Za-z0-9_.-]", "_", text.strip())[:64].strip("._-")
    if not name:
        raise ValueError(f"{text!r} does not name a scanner")
    return name


class NoiseStore:
    """Saves and loads covariances as `<folder>/noise_<measurementID>.npz` (no pickle).

    Measurement IDs come from the client: only plain names are accepted, never paths
    (adacsc.resources). The default folder is the operator's ($ADACSC_NOISE_DIR).
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder else resources.folders(resources.NOISE)[0]

    def _path(self, measurement_id: str) -> str:
        try:
            return os.path.join(self.folder, resources.check_name(resources.NOISE, f"noise_{measurement_id}"))
        except resources.ResourceError:
            raise ValueError(f"measurementID {measurement_id!r} is not a plain name (letters, digits, '_', '.', "
                             "'-')") from None

    def save(self, measurement_id: str, noise: StoredNoise) -> str:
        """Store `noise` under `measurement_id`; returns the file written. A covariance with NaN
        or infinite entries is refused (it would break every scan that depends on it)."""
        path = self._path(measurement_id)
        _check_finite(noise.covariance, measurement_id)
        with atomic_output(path, overwrite=True) as temporary, open(temporary, "wb") as stream:
            np.savez(stream, covariance=noise.covariance.astype(np.complex128),
                     coil_labels=json.dumps(noise.coil_labels), noise_dwell_us=noise.noise_dwell_us,
                     samples=noise.samples)
        return path

    def load(self, measurement_id: str) -> StoredNoise | None:
        """The stored noise of `measurement_id`, or None when there is none."""
        path = self._path(measurement_id)
        if not os.path.isfile(path):
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                stored = StoredNoise(
                    covariance=np.asarray(f["covariance"]),
                    coil_labels=list(json.loads(str(f["coil_labels"]))),
                    noise_dwell_us=float(f["noise_dwell_us"]),
                    samples=int(f["samples"]),
                )
        except (OSError, KeyError, ValueError, EOFError) as err:
            raise ValueError(f"stored noise {path} is unreadable: {err}") from err
        _check_finite(stored.covariance, measurement_id)
        return stored


def _reference_path(store: NoiseStore, site: str) -> str:
    return os.path.join(store.folder, resources.check_name(resources.NOISE, f"noise_reference_{site_name(site)}"))


def save_reference(store: NoiseStore, site: str, reference: NoiseReference) -> str:
    """Store `reference` as the noise reference of scanner `site`; returns the file written."""
    values = np.array(list(reference.densities.values()), dtype=np.float64)
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise ValueError("a noise reference needs finite, positive levels")
    path = _reference_path(store, site)
    with atomic_output(path, overwrite=True) as temporary, open(temporary, "wb") as stream:
        np.savez(stream, labels=json.dumps(list(reference.densities)), densities=values, source=reference.source)
    return path


def load_reference(store: NoiseStore, site: str) -> NoiseReference | None:
    """The noise reference of scanner `site`, or None when there is none."""
    path = _reference_path(store, site)
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            labels = list(json.loads(str(f["labels"])))
            densities = np.asarray(f["densities"], dtype=np.float64)
            source = str(f["source"])
    except (OSError, KeyError, ValueError, EOFError) as err:
        raise ValueError(f"noise reference {path} is unreadable: {err}") from err
    if len(labels) != len(densities):
        raise ValueError(f"noise reference {path} is inconsistent ({len(labels)} labels, {len(densities)} levels)")
    return NoiseReference(dict(zip(labels, densities.tolist())), source)


def _check_finite(covariance: np.ndarray, measurement_id: str) -> None:
    if not np.isfinite(covariance).all():
        raise ValueError(f"the noise covariance of measurement {measurement_id} has NaN or infinite entries")
