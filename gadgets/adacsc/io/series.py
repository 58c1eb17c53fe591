"""Scanner-ready image series: the pixel format a scanner's image injector takes, the series
naming and history a scanner shows, and the scan's QA figures, all in the image's own meta.

Formats (the `output` property of a reconstruction gadget):

- `float32`: magnitude float32 in the reconstruction's own units (as adacsc always sent).
- `int16`: magnitude int16 for a scanner's image injector (ICE stores 12 bits). Each image is
  scaled so its maximum is 4095: stored = round(value * scale), clipped to [0, 4095]. The scaling
  is recorded per image as DICOM does it, value = stored * RescaleSlope + RescaleIntercept
  (RescaleSlope = 1 / scale, RescaleIntercept = 0), with RescaleType naming the value's units.
- `complex`: complex64 for a complex-image injector; a real image travels with zero phase.

Magnitude images carry WindowCenter/WindowWidth (stored units) spanning the 0.5th to 99.5th
percentile, so a viewer opens them with a usable contrast. Every image carries DataRole,
SeriesDescription (`<protocol>_adacsc` plus the series' suffix), SeriesDescriptionAdditional and
SequenceDescriptionAdditional (ICE appends the latter to the series name), ImageProcessingHistory,
Keep_image_geometry with ImageRowDir/ImageColumnDir, and the QA entries the caller passes.
The header's geometry (position, read/phase/slice directions, field of view) is the template's:
on a super-resolved grid the field of view stays and the matrix grows.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import ismrmrd
import numpy as np

from adacsc.io.images import make_image

OUTPUT_FORMATS = ("float32", "int16", "complex")
INT16_STORED_MAX = 4095
"""The largest stored value of an int16 image (12 bits, as ICE stores magnitude images)."""
WINDOW_PERCENTILES = (0.5, 99.5)
PROCESSING_HISTORY = ("PYTHON", "ADACSC")
DEFAULT_PROTOCOL = "adacsc"
"""The series name's stem when the scan's header names no protocol."""


@dataclass(frozen=True)
class Series:
    """One output series: its index, role, name suffix, units and processing step."""

    index: int
    role: str
    """DataRole and ImageComment, e.g. CSC, ZeroFilled, SparsityMap"""
    suffix: str
    """appended to `<protocol>_adacsc`, e.g. '' or '_maps'"""
    units: str
    """what a pixel value means, e.g. SNR (noise standard deviation 1) or normalised"""
    step: str
    """the last ImageProcessingHistory entry, e.g. CSC"""


def protocol_name(header: object) -> str:
    """The scan's protocol name from a parsed ISMRMRD header, else DEFAULT_PROTOCOL."""
    info = getattr(header, "measurementInformation", None)
    name = (getattr(info, "protocolName", None) or "").strip()
    return name or DEFAULT_PROTOCOL


def series_names(protocol: str, series: Series) -> dict[str, str]:
    """SeriesDescription, SeriesDescriptionAdditional and SequenceDescriptionAdditional."""
    additional = f"adacsc{series.suffix}"
    return {"SeriesDescription": f"{protocol}_{additional}", "SeriesDescriptionAdditional": additional,
            "SequenceDescriptionAdditional": additional}


def to_int16(values: np.ndarray) -> tuple[np.ndarray, float]:
    """(stored int16 image, scale) with stored = round(|values| * scale) and the maximum at 4095."""
    magnitude = np.abs(values).astype(np.float64)
    peak = float(magnitude.max()) if magnitude.size else 0.0
    scale = INT16_STORED_MAX / peak if peak > 0 and np.isfinite(peak) else 1.0
    stored = np.clip(np.rint(np.nan_to_num(magnitude * scale)), 0, INT16_STORED_MAX).astype(np.int16)
    return stored, scale


def display_window(stored: np.ndarray) -> tuple[float, float]:
    """(WindowCenter, WindowWidth) spanning the 0.5th to 99.5th percentile of a magnitude image."""
    low, high = (float(v) for v in np.percentile(stored, WINDOW_PERCENTILES))
    width = max(high - low, 1.0)
    return low + width / 2, width


def _format(value: float) -> str:
    return f"{value:.6g}"


def scanner_image(values: np.ndarray, template: ismrmrd.ImageHeader, series: Series, output: str, *,
                  image_index: int, protocol: str, qa: Mapping[str, object] | None = None) -> ismrmrd.Image:
    """An image [Y, X] of `series` in format `output` with the template's geometry and the meta
    described in the module docstring; `qa` entries (noise level, timing, ...) are added as given."""
    if output not in OUTPUT_FORMATS:
        raise ValueError(f"output format {output!r} is not one of {', '.join(OUTPUT_FORMATS)}")
    meta: dict[str, object] = {"DataRole": series.role, "ImageComment": series.role,
                               **series_names(protocol, series),
                               "ImageProcessingHistory": [*PROCESSING_HISTORY, series.step],
                               "Keep_image_geometry": "1",
                               "ImageRowDir": [f"{v:.9f}" for v in template.read_dir],
                               "ImageColumnDir": [f"{v:.9f}" for v in template.phase_dir],
                               "Units": series.units}
    if output == "complex":
        pixels = np.asarray(values).astype(np.complex64)
        image_type = ismrmrd.IMTYPE_COMPLEX
    elif output == "int16":
        pixels, scale = to_int16(values)
        meta.update(RescaleSlope=_format(1 / scale), RescaleIntercept="0", RescaleType=series.units)
        image_type = ismrmrd.IMTYPE_MAGNITUDE
    else:
        pixels = np.abs(values).astype(np.float32)
        image_type = ismrmrd.IMTYPE_MAGNITUDE
    if output != "complex":
        center, width = display_window(pixels)
        meta.update(WindowCenter=_format(center), WindowWidth=_format(width))
    meta.update(qa or {})
    return make_image(pixels, template, meta, image_series_index=series.index, image_index=image_index,
                      image_type=image_type)
