"""Reading ISMRMRD files, read-only and in blocks, with clear errors for files that are not
ISMRMRD or are damaged. (ismrmrd.Dataset reads each record three times and, in ismrmrd 1.14,
opens files read-write; here the records are read through h5py in blocks.)"""

import threading
from collections.abc import Iterator
from pathlib import Path

import h5py
import ismrmrd
import numpy as np


_BLOCK = 256
"""Records read from the file at a time."""

HDF5_LOCK = threading.RLock()
"""Held around every HDF5 call of adacsc.io: concurrent vlen reads and writes from several
threads of one process (a server, concurrent replays) corrupt data even through h5py's lock."""


class DatasetError(ValueError):
    """An input file is missing, not ISMRMRD, or damaged."""


def acquisition_from_record(record: np.void) -> ismrmrd.Acquisition:
    """An Acquisition from one record of an ISMRMRD `data` dataset (head, traj, data)."""
    acquisition = ismrmrd.Acquisition(record["head"])
    shape = (acquisition.active_channels, acquisition.number_of_samples)
    samples = np.asarray(record["data"], dtype=np.float32).view(np.complex64)
    if samples.size != shape[0] * shape[1]:
        raise ValueError(f"holds {samples.size} samples, its header says {shape[0]} x {shape[1]}")
    acquisition.data[:] = samples.reshape(shape)
    if acquisition.traj.size:
        acquisition.traj[:] = np.asarray(record["traj"]).reshape(acquisition.traj.shape)
    return acquisition


class InputScan:
    """An ISMRMRD file opened read-only: header bytes and acquisitions in file order."""

    def __init__(self, path: str | Path, group: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(f"{self.path}: no such file")
        if not h5py.is_hdf5(self.path):
            raise DatasetError(f"{self.path}: not an ISMRMRD file (not HDF5)")
        try:
            with HDF5_LOCK:
                self._file = h5py.File(self.path, "r")
                groups = [n for n in self._file if isinstance(self._file[n], h5py.Group) and "xml" in self._file[n]]
        except OSError as err:
            if "lock" in str(err).lower():
                raise DatasetError(f"{self.path}: locked by another program that has it open for writing; try "
                                   "again once it has closed the file") from err
            raise DatasetError(f"{self.path}: damaged HDF5 file: {err}") from err
        if group is None:
            if not groups:
                self._file.close()
                raise DatasetError(f"{self.path}: not an ISMRMRD file (no group with an 'xml' header)")
            group = "dataset" if "dataset" in groups else groups[0]
        elif group not in groups:
            self._file.close()
            raise DatasetError(f"{self.path}: no ISMRMRD group {group!r} (found {groups})")
        self.group = group
        self._group = self._file[group]

    def header_bytes(self) -> bytes:
        """The XML header as stored."""
        try:
            with HDF5_LOCK:
                xml = self._group["xml"][0]
        except (OSError, IndexError, ValueError) as err:
            raise DatasetError(f"{self.path}: cannot read the ISMRMRD header: {err}") from err
        return xml if isinstance(xml, bytes) else str(xml).encode()

    def number_of_acquisitions(self) -> int:
        """How many acquisitions the file holds (0 when it has none)."""
        with HDF5_LOCK:
            return int(self._group["data"].shape[0]) if "data" in self._group else 0

    def acquisitions(self) -> Iterator[ismrmrd.Acquisition]:
        """Acquisitions in file order; a damaged record ends the stream with a DatasetError."""
        total = self.number_of_acquisitions()
        for start in range(0, total, _BLOCK):
            try:
                with HDF5_LOCK:
                    records = self._group["data"][start:min(start + _BLOCK, total)]
            except (OSError, ValueError) as err:
                raise DatasetError(f"{self.path}: acquisitions {start}.. cannot be read: {err}") from err
            for offset, record in enumerate(records):
                try:
                    yield acquisition_from_record(record)
                except (ValueError, TypeError) as err:
                    raise DatasetError(f"{self.path}: acquisition {start + offset} {err}") from err

    def close(self) -> None:
        """Release the file."""
        with HDF5_LOCK:
            self._file.close()

    def __enter__(self) -> "InputScan":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def read_images(path: str | Path, group: str | None = None) -> dict[str, list[ismrmrd.Image]]:
    """Every image series of `group` (default: the newest group) of an output file, as written by
    `adacsc recon`, `adacsc send` or gadgetron_ismrmrd_client."""
    with h5py.File(path, "r") as f:
        group = group or sorted(f.keys())[-1]
        names = sorted(n for n in f[group] if n.startswith("image_"))
    dataset = ismrmrd.Dataset(str(path), group, create_if_needed=False)
    try:
        return {n: [dataset.read_image(n, i) for i in range(dataset.number_of_images(n))] for n in names}
    finally:
        dataset.close()
