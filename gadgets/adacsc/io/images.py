"""Building ismrmrd.Image objects with complete headers, and writing output files the way
gadgetron_ismrmrd_client does (one `image_<series>` entry per image series in one group)."""

import logging
import time
from pathlib import Path

import ismrmrd
import numpy as np

from gadgetron.types import ImageArray

from adacsc.io.dataset import HDF5_LOCK
from adacsc.io.scan_qa import is_scan_qa

log = logging.getLogger(__name__)

_ACQUISITION_FIELDS = (
    "version", "measurement_uid", "position", "read_dir", "phase_dir", "slice_dir",
    "patient_table_position", "acquisition_time_stamp", "physiology_time_stamp",
    "user_int", "user_float",
)
_INDEX_FIELDS = ("average", "slice", "contrast", "phase", "repetition", "set")


def header_from_acquisition(acquisition: ismrmrd.AcquisitionHeader, **fields: object) -> ismrmrd.ImageHeader:
    """An image header carrying the acquisition's geometry, time stamps and indices."""
    header = ismrmrd.ImageHeader()
    for name in _ACQUISITION_FIELDS:
        setattr(header, name, getattr(acquisition, name))
    for name in _INDEX_FIELDS:
        setattr(header, name, getattr(acquisition.idx, name))
    for name, value in fields.items():
        setattr(header, name, value)
    return header


def make_image(array: np.ndarray, template: ismrmrd.ImageHeader, meta: dict[str, object] | None = None,
               **fields: object) -> ismrmrd.Image:
    """An ismrmrd.Image holding a 2-D array [Y, X] with `template`'s header updated by `fields`.

    Complex arrays become complex64, int16 stays int16 (a scanner's magnitude format), everything
    else becomes float32.
    """
    if array.ndim != 2:
        raise ValueError(f"an image must be 2-D [y, x], got shape {array.shape}")
    dtype = np.complex64 if np.iscomplexobj(array) else np.int16 if array.dtype == np.int16 else np.float32
    data = np.ascontiguousarray(array, dtype=dtype)[np.newaxis, np.newaxis]
    image = ismrmrd.Image.from_array(data, transpose=False)
    header = ismrmrd.ImageHeader.from_buffer_copy(template)
    for name, value in fields.items():
        setattr(header, name, value)
    header.data_type = image.getHead().data_type
    header.channels = 1
    header.matrix_size = (array.shape[1], array.shape[0], 1)
    image.setHead(header)
    if meta:
        image_meta = ismrmrd.Meta()
        for key, value in meta.items():
            image_meta[key] = value if isinstance(value, (list, tuple)) else str(value)
        image.attribute_string = image_meta.serialize()
    return image


def split_image_array(array: ImageArray) -> list[ismrmrd.Image]:
    """One ismrmrd.Image per [N, S, LOC] entry of an ImageArray (like ImageArraySplitGadget)."""
    data = np.asarray(array.data)
    headers = np.asarray(array.headers, dtype=object)
    images = []
    for flat, index in enumerate(np.ndindex(*headers.shape)):
        volume = data[(slice(None),) * 4 + index]  # [X, Y, Z, CHA]
        channels = np.ascontiguousarray(np.transpose(volume, (3, 2, 1, 0)), dtype=np.complex64)
        image = ismrmrd.Image.from_array(channels, transpose=False)
        header = ismrmrd.ImageHeader.from_buffer_copy(headers[index])
        header.data_type = image.getHead().data_type
        header.channels = channels.shape[0]
        header.matrix_size = (channels.shape[3], channels.shape[2], channels.shape[1])
        image.setHead(header)
        if array.meta and flat < len(array.meta):
            image.attribute_string = array.meta[flat]
        images.append(image)
    return images


class OutputWriter:
    """Appends images to an ISMRMRD file: group `group` (default: the current date and time, as
    gadgetron_ismrmrd_client does), one `image_<image_series_index>` entry per series."""

    def __init__(self, path: str | Path, group: str | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.group = group or time.strftime("%Y-%m-%d %H:%M:%S")
        with HDF5_LOCK:
            self._dataset = ismrmrd.Dataset(str(self.path), self.group, create_if_needed=True)
        self.counts: dict[str, int] = {}

    def write_header(self, xml: bytes) -> None:
        """Store the scan's header beside the images."""
        with HDF5_LOCK:
            self._dataset.write_xml_header(xml)

    def write(self, item: object) -> None:
        """Write an Image or every image of an ImageArray; a scan QA waveform (adacsc.io.scan_qa)
        is left out; anything else is an error."""
        if isinstance(item, ImageArray):
            for image in split_image_array(item):
                self.write(image)
            return
        if is_scan_qa(item):
            return  # chain-internal: its figures are in the images' QA meta
        if not isinstance(item, ismrmrd.Image):
            raise TypeError(f"cannot store a {type(item).__name__} in an image file")
        name = f"image_{item.image_series_index}"
        with HDF5_LOCK:
            self._dataset.append_image(name, item)
        self.counts[name] = self.counts.get(name, 0) + 1

    def close(self) -> None:
        """Flush and close the file."""
        with HDF5_LOCK:
            self._dataset.close()
        log.info("wrote %s to %s (group %r)",
                 ", ".join(f"{n} x{c}" for n, c in sorted(self.counts.items())) or "no images",
                 self.path, self.group)
