"""Coil sensitivity estimation from the data itself and combination to one complex image per
slice. Maps come from the calibration region (the contiguous block of acquired lines around the
k-space centre) so undersampled scans work; single-coil data pass through unchanged.

Output: a gadgetron ImageArray per slice, data [X, Y, 1, 1, 1, 1, 1] complex64 on the encoded
grid (after oversampling removal), with its sampling in the meta (adacsc.io.slice_meta) so the
reconstruction knows which k-space region was acquired. When every readout of the slice was
prewhitened (adacsc.gadgets.noise_adjust) the meta also says so: noise level 1 (the combined image
is in SNR units, noise std 1 per pixel) from a noise scan.
"""

import logging
from typing import Any

import ismrmrd
import numpy as np
from gadgetron.types import ImageArray, ReconData

from adacsc.core import cancel
from adacsc.gadgets.noise_adjust import PREWHITENED_FLAG
from adacsc.gadgets.properties import Property, PropertySpec, read_properties
from adacsc.io.images import header_from_acquisition, make_image
from adacsc.io.series import PROCESSING_HISTORY, Series, protocol_name, series_names
from adacsc.io.slice_meta import SliceSampling
from adacsc.limits import ScanBudget, ScanLimits
from adacsc.mr import coil_maps
from adacsc.mr.fft import ifftc

log = logging.getLogger(__name__)

MEMORY_WAIT_S = 30.0
"""how long a slice waits for the scan's budget to have room for its working memory"""

SPEC = PropertySpec("coil_combination", (
    Property("coil_map_method", str, "inati", "coil sensitivity estimation", choices=("inati", "walsh")),
    Property("kernel_size", int, 7, "smoothing kernel (pixels) of the coil map estimate", minimum=1, maximum=63),
    Property("image_series_index", int, 1, "series index of the combined images", minimum=0, maximum=65535),
    Property("output", str, "image_array",
             "image_array (for a reconstruction gadget downstream) or images (final complex images)",
             choices=("image_array", "images")),
))


def sampled_lines(headers: np.ndarray) -> np.ndarray:
    """Which phase-encode lines hold data: acquired lines carry a header with samples."""
    return np.array([h.number_of_samples > 0 for h in headers.reshape(headers.shape[0], -1)[:, 0]])


def combine_buffer(kspace: np.ndarray, lines: np.ndarray, method: str, kernel: int) -> np.ndarray:
    """Coil-combined image [Y, X] from k-space [CHA, E1, RO] with acquired `lines` [E1]."""
    images = ifftc(kspace)
    if kspace.shape[0] == 1:
        return images[0].astype(np.complex64)
    maps = coil_maps.estimate(coil_maps.calibration_images(kspace, lines), method, kernel)
    return coil_maps.combine(images, maps)


def working_bytes(shape: tuple[int, int, int], method: str) -> int:
    """Peak working memory of combine_buffer for k-space [CHA, E1, RO] (measured: the FFTs and
    the Inati maps stay within 6 times the k-space, Walsh's per-pixel coil covariances within 6
    times that per coil)."""
    channels = shape[0]
    nbytes = 8 * channels * shape[1] * shape[2]
    return 6 * nbytes * (channels if method == "walsh" and channels > 1 else 1)


def prewhitened(headers: np.ndarray, lines: np.ndarray) -> bool:
    """Whether every acquired readout [E1] of a slice carries the prewhitening flag."""
    return all(h.is_flag_set(PREWHITENED_FLAG) for h in headers[lines])


def _reference_header(headers: np.ndarray, lines: np.ndarray, centre: int) -> ismrmrd.AcquisitionHeader:
    """The header of the centre line, else of the acquired line closest to it."""
    acquired = np.flatnonzero(lines)
    line = acquired[np.argmin(np.abs(acquired - centre))]
    return headers[line]


def combine_recon_data(recon: ReconData, props: dict[str, Any], budget: ScanBudget | None = None,
                       ) -> list[tuple[np.ndarray, ismrmrd.ImageHeader, dict]]:
    """(image [Y, X], image header, meta) for every slice in a ReconData; the working memory is
    charged to `budget` while it is used."""
    budget = budget if budget is not None else ScanBudget(ScanLimits.from_environment().max_scan_bytes)
    results = []
    for bit in recon:
        buffer = bit.data
        data = np.asarray(buffer.data)  # [RO, E1, E2, CHA, N, S, LOC]
        sampling = buffer.sampling
        lines = sampled_lines(np.asarray(buffer.headers))
        if not lines.any():
            log.warning("buffer without acquired lines skipped")
            continue
        readout, n_lines = data.shape[0], data.shape[1]
        for n, s, loc in np.ndindex(*data.shape[4:]):
            kspace = np.transpose(data[:, :, 0, :, n, s, loc], (2, 1, 0))  # [CHA, E1, RO]
            reference = _reference_header(np.asarray(buffer.headers)[:, 0, n, s, loc], lines,
                                          sampling.sampling_limits[1].center)
            with budget.reserve(working_bytes(kspace.shape, props["coil_map_method"]),
                                f"the coil combination of slice {reference.idx.slice} ({kspace.shape[0]} "
                                f"coils x {kspace.shape[1]} lines x {kspace.shape[2]} samples)",
                                cancel.stop_or_after(MEMORY_WAIT_S)):
                try:
                    image = combine_buffer(kspace, lines, props["coil_map_method"], props["kernel_size"])
                except ValueError as err:
                    log.error("slice %d repetition %d not reconstructed: %s", reference.idx.slice,
                              reference.idx.repetition, err)
                    continue
            bad = ~np.isfinite(image)
            if bad.any():
                log.warning("slice %d repetition %d: %d NaN or infinite pixels set to 0", reference.idx.slice,
                            reference.idx.repetition, int(bad.sum()))
                image = np.where(bad, 0, image).astype(image.dtype)
            header = header_from_acquisition(
                reference,
                field_of_view=(sampling.encoded_FOV[0], sampling.encoded_FOV[1], sampling.encoded_FOV[2]),
                image_type=ismrmrd.IMTYPE_COMPLEX,
                image_series_index=props["image_series_index"],
                image_index=reference.idx.slice + 1,
            )
            whitened = prewhitened(np.asarray(buffer.headers)[:, 0, n, s, loc], lines)
            meta = {
                **(SliceSampling.prewhitened(lines) if whitened else SliceSampling(lines)).to_meta(),
                "KSpaceCentreLine": str(sampling.sampling_limits[1].center),
                "Channels": str(kspace.shape[0]),
                "CoilMapMethod": props["coil_map_method"] if kspace.shape[0] > 1 else "none",
                "DataRole": "CoilCombined",
            }
            log.debug("slice %d combined from %d coils, %d of %d lines", reference.idx.slice,
                      kspace.shape[0], lines.sum(), n_lines)
            results.append((image.reshape(n_lines, readout), header, meta))
    return results


COMBINED_SERIES = Series(1, "CoilCombined", "_coilcombined", "SNR", "COILCOMBINED")


def final_image_names(protocol: str) -> dict[str, object]:
    """The series names and processing history of combined images sent as final images (the
    front-end chain's output), as adacsc.io.series gives the reconstruction's."""
    return {**series_names(protocol, COMBINED_SERIES),
            "ImageProcessingHistory": [*PROCESSING_HISTORY, COMBINED_SERIES.step]}


def to_image_array(image: np.ndarray, header: ismrmrd.ImageHeader, meta: dict) -> ImageArray:
    """An ImageArray [X, Y, 1, 1, 1, 1, 1] holding one combined image."""
    header.matrix_size = (image.shape[1], image.shape[0], 1)
    header.channels = 1
    header.data_type = ismrmrd.DATATYPE_CXFLOAT
    headers = np.empty((1, 1, 1), dtype=object)
    headers[0, 0, 0] = header
    serialised = ismrmrd.Meta()
    serialised.update(meta)
    data = np.ascontiguousarray(image.T.reshape(image.shape[1], image.shape[0], 1, 1, 1, 1, 1), dtype=np.complex64)
    return ImageArray(data=data, headers=headers, meta=[serialised.serialize()], waveform=None, acq_headers=None)


def coil_combination(connection: Any) -> None:
    """Gadget: ReconData in, one combined complex image per slice out; other items pass on."""
    props = read_properties(connection, SPEC)
    budget = getattr(connection, "budget", None) or ScanBudget(ScanLimits.from_environment().max_scan_bytes)
    names = final_image_names(protocol_name(connection.header))
    connection.filter(ReconData)
    for item in connection:
        for image, header, meta in combine_recon_data(item, props, budget):
            if props["output"] == "images":
                meta = {**meta, **names}
            budget.charge(image.nbytes, f"the combined image of slice {header.slice}",
                          cancel.stop_or_after(MEMORY_WAIT_S))
            output = (make_image(image, header, meta) if props["output"] == "images"
                      else to_image_array(image, header, meta))
            connection.send(budget.hold(output, image.nbytes))
