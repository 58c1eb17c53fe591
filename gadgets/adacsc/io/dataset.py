"""Reading ISMRMRD files with clear errors for files that are not ISMRMRD or are damaged."""

import inspect
import logging
from collections.abc import Iterator
from pathlib import Path

import h5py
import ismrmrd

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """An input file is missing, not ISMRMRD, or damaged."""


def _open_read_only(path: Path, group: str) -> ismrmrd.Dataset:
    """An ismrmrd.Dataset that never writes: ismrmrd 1.15 takes mode='r'; 1.14 always opens
    read-write, so there the dataset is given a read-only h5py file (its reads go through it)."""
    if "mode" in inspect.signature(ismrmrd.Dataset.__init__).parameters:
        return ismrmrd.Dataset(str(path), group, create_if_needed=False, mode="r")
    dataset = object.__new__(ismrmrd.Dataset)
    dataset._file = h5py.File(path, "r")
    dataset._dataset_name = group
    return dataset


class InputScan:
    """An ISMRMRD file opened for reading: header bytes and acquisitions in file order."""

    def __init__(self, path: str | Path, group: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(f"{self.path}: no such file")
        if not h5py.is_hdf5(self.path):
            raise DatasetError(f"{self.path}: not an ISMRMRD file (not HDF5)")
        with h5py.File(self.path, "r") as f:
            groups = [name for name in f if isinstance(f[name], h5py.Group) and "xml" in f[name]]
        if group is None:
            if not groups:
                raise DatasetError(f"{self.path}: not an ISMRMRD file (no group with an 'xml' header)")
            group = "dataset" if "dataset" in groups else groups[0]
        elif group not in groups:
            raise DatasetError(f"{self.path}: no ISMRMRD group {group!r} (found {groups})")
        self.group = group
        self._dataset = _open_read_only(self.path, group)

    def header_bytes(self) -> bytes:
        """The XML header as stored."""
        try:
            xml = self._dataset.read_xml_header()
        except Exception as err:
            raise DatasetError(f"{self.path}: cannot read the ISMRMRD header: {err}") from err
        return xml if isinstance(xml, bytes) else str(xml).encode()

    def number_of_acquisitions(self) -> int:
        """How many acquisitions the file holds (0 when it has none)."""
        try:
            return self._dataset.number_of_acquisitions()
        except Exception:
            return 0

    def acquisitions(self) -> Iterator[ismrmrd.Acquisition]:
        """Acquisitions in file order; a damaged record ends the stream with a DatasetError."""
        for index in range(self.number_of_acquisitions()):
            try:
                yield self._dataset.read_acquisition(index)
            except Exception as err:
                raise DatasetError(f"{self.path}: acquisition {index} cannot be read: {err}") from err

    def close(self) -> None:
        """Release the file."""
        self._dataset.close()

    def __enter__(self) -> "InputScan":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
