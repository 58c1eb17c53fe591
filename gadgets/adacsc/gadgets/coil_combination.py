"""Coil sensitivity estimation from the data itself and combination to one complex image per
slice. Maps come from the calibration region (the contiguous block of acquired lines around the
k-space centre, with the calibration-only lines of the ReconBit's reference buffer filling what the
image lacks) so undersampled scans work; single-coil data pass through unchanged.

Every E2, N, S and LOC index of a ReconData is used (ours, or Gadgetron's BucketToBuffer's): the
N entries of one image (same slice, contrast, phase, repetition and set in their headers) are its
averages, combined in k-space as the mean of each line over the averages that acquired it
(`averages=separate`: one image per average); a 3-D buffer (E2 > 1) is split into partitions by
an inverse FFT along kz, each sent as a 2-D slice at its own position (docs/DESIGN.md).

Output: a gadgetron ImageArray per slice, data [X, Y, 1, 1, 1, 1, 1] complex64 on the encoded
grid (after oversampling removal), with its sampling in the meta (adacsc.io.slice_meta) so the
reconstruction knows which k-space region was acquired. When every readout of the slice was
prewhitened (adacsc.gadgets.noise_adjust) the meta also says so: the noise std of the combined
image in SNR units, from a noise scan: 1 per coil image and pixel, or 1/sqrt(n) after n averages,
times the noise gain of the coil maps (adacsc.mr.coil_maps.noise_gain: 1 for normalised maps,
whose weights at a pixel never depend on that pixel's own noise).
"""

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ismrmrd
import numpy as np
from gadgetron.types import ImageArray, ReconData

from adacsc.gadgets.contract import Connection, Gadget
from adacsc.gadgets.noise_adjust import PREWHITENED_FLAG
from adacsc.gadgets.properties import setting
from adacsc.io.images import header_from_acquisition, make_image
from adacsc.io.series import PROCESSING_HISTORY, Series, protocol_name, series_names
from adacsc.io.slice_meta import SliceSampling
from adacsc.mr import averaging, coil_maps
from adacsc.mr.fft import ifftc
from adacsc.scan_context import ScanContext

log = logging.getLogger(__name__)

MEMORY_WAIT_S = 30.0
"""how long an image waits for the scan's budget to have room for its working memory"""

@dataclass(frozen=True)
class Settings:
    """The gadget's properties."""

    coil_map_method: str = setting("inati", "coil sensitivity estimation", choices=("inati", "walsh"))
    kernel_size: int = setting(7, "smoothing kernel (pixels) of the coil map estimate", minimum=coil_maps.MIN_KERNEL,
                              maximum=63)
    image_series_index: int = setting(1, "series index of the combined images", minimum=0, maximum=65535)
    averages: str = setting("combine", "combine (the mean of each line over the averages acquired) or separate "
                            "(one image per average)", choices=("combine", "separate"))
    output: str = setting("image_array", "image_array (for a reconstruction gadget downstream) or images (final "
                          "complex images)", choices=("image_array", "images"))


def combine_buffer(kspace: np.ndarray, lines: np.ndarray, method: str, kernel: int,
                   calibration: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """(coil-combined image [Y, X], its noise std per unit coil noise) from k-space [CHA, E1, RO]
    with acquired `lines` [E1]; the maps come from `kspace` or, when given, from `calibration`
    [CHA, E1, RO] (lines marked by `lines` and by non-zero calibration lines). The noise std is
    propagated through the maps (adacsc.mr.coil_maps.noise_gain): 1 for one coil."""
    images = ifftc(kspace)
    if kspace.shape[0] == 1:
        return images[0].astype(np.complex64), 1.0
    if calibration is None:
        maps = coil_maps.estimate(coil_maps.calibration_images(kspace, lines), method, kernel)
    else:
        calibrated = lines | (np.abs(calibration).sum(axis=(0, 2)) > 0)
        union = np.where(lines[None, :, None], kspace, calibration)
        maps = coil_maps.estimate(coil_maps.calibration_images(union, calibrated), method, kernel)
    return coil_maps.combine(images, maps), coil_maps.noise_gain(maps)


def working_bytes(shape: tuple[int, int, int], method: str) -> int:
    """Peak working memory of combine_buffer for k-space [CHA, E1, RO] (measured with tracemalloc
    at 4-16 coils: the FFT of one coil within 6 times the k-space, the Inati maps, from two
    checkerboard halves, within 13 times, Walsh's per-pixel coil covariances within 6 times that
    per coil)."""
    channels = shape[0]
    nbytes = 8 * channels * shape[1] * shape[2]
    if channels == 1:
        return 6 * nbytes
    return (6 * channels if method == "walsh" else 13) * nbytes


def _reference_header(headers: np.ndarray, lines: np.ndarray, centre: int) -> ismrmrd.AcquisitionHeader:
    """The header of the centre line, else of the acquired line closest to it."""
    acquired = np.flatnonzero(lines)
    line = acquired[np.argmin(np.abs(acquired - centre))]
    return headers[line]


def _has_samples(headers: np.ndarray) -> np.ndarray:
    """bool array of the headers' shape: which hold an acquired readout."""
    return np.vectorize(lambda h: h.number_of_samples > 0, otypes=[bool])(headers)


def _image_groups(headers: np.ndarray, acquired: np.ndarray, averages: str) -> dict[tuple, list[int]]:
    """N indices grouped into images: by slice, contrast, phase, repetition and set (and average
    when averages stay separate), from the headers [E1, E2, N] of one S, LOC."""
    groups: dict[tuple, list[int]] = {}
    for n in range(headers.shape[2]):
        present = np.argwhere(acquired[:, :, n])
        if not len(present):
            continue
        idx = headers[tuple(present[0]) + (n,)].idx
        key = (idx.slice, idx.contrast, idx.phase, idx.repetition, idx.set)
        groups.setdefault(key + ((idx.average,) if averages == "separate" else ()), []).append(n)
    return groups


def image_index(header: ismrmrd.ImageHeader, partitions: int, limits: Any) -> int:
    """A unique 1-based image index over slice (times the 3-D partitions), contrast, phase, set,
    repetition and average, from the header's encodingLimits: slice + 1 for a plain 2-D scan."""
    index = 0
    for name, value in (("repetition", header.repetition), ("set", header.set), ("phase", header.phase),
                        ("contrast", header.contrast), ("average", header.average)):
        index = index * _extent(limits, name) + value
    return 1 + index * _extent(limits, "slice") * partitions + header.slice


def _extent(limits: Any, name: str) -> int:
    limit = getattr(limits, name, None) if limits is not None else None
    return int(limit.maximum) + 1 if limit is not None and limit.maximum is not None else 1


def combine_recon_data(recon: ReconData, settings: Settings, limits: Any = None,
                       scan: ScanContext | None = None) -> Iterator[tuple[np.ndarray, ismrmrd.ImageHeader, dict]]:
    """(image [Y, X], image header, meta) for every image in a ReconData: every S and LOC, every
    group of N (averages combined or kept apart, other counters separate) and every partition E2,
    each as soon as it is combined (the reconstruction of a 3-D slab's first partition starts
    while the others are combined). The working memory is charged to the scan's budget while it is
    used (`scan`: default limits when None)."""
    scan = scan if scan is not None else ScanContext()
    for bit in recon:
        buffer = bit.data
        data = np.asarray(buffer.data)  # [RO, E1, E2, CHA, N, S, LOC]
        all_headers = np.asarray(buffer.headers)  # [E1, E2, N, S, LOC]
        acquired_all = _has_samples(all_headers)
        if not acquired_all.any():
            log.warning("buffer without acquired lines skipped")
            continue
        reference = None if bit.ref is None else np.asarray(bit.ref.data)
        for s, loc in np.ndindex(*data.shape[5:]):
            headers, acquired = all_headers[:, :, :, s, loc], acquired_all[:, :, :, s, loc]
            calibration = None if reference is None else \
                reference[:, :, :, :, 0, min(s, reference.shape[5] - 1), min(loc, reference.shape[6] - 1)]
            for members in _image_groups(headers, acquired, settings.averages).values():
                yield from _combine_image(data[:, :, :, :, members, s, loc], headers[:, :, members],
                                          acquired[:, :, members], calibration, buffer.sampling, settings, limits,
                                          scan)


def _combine_image(data: np.ndarray, headers: np.ndarray, acquired: np.ndarray, calibration: np.ndarray | None,
                   sampling: Any, settings: Settings, limits: Any,
                   scan: ScanContext) -> Iterator[tuple[np.ndarray, ismrmrd.ImageHeader, dict]]:
    """The images (one per partition) of one image's k-space [RO, E1, E2, CHA, N] with headers [E1, E2, N]."""
    readout, n_lines, n_partitions = data.shape[:3]
    kspace, counts = averaging.mean_of_averages(data, acquired)
    lines = (counts > 0).any(axis=1)
    line_headers = np.empty(n_lines, dtype=object)
    for e1 in np.flatnonzero(lines):
        line_headers[e1] = headers[e1][tuple(np.argwhere(acquired[e1])[0])]
    reference = _reference_header(line_headers, lines, sampling.sampling_limits[1].center)
    averages = int(counts.max())
    whitened = all(h.is_flag_set(PREWHITENED_FLAG) for h in headers[acquired])
    undersampled = n_partitions > 1 and averaging.kz_undersampled(
        counts, (sampling.sampling_limits[2].min, sampling.sampling_limits[2].max))
    if undersampled:
        log.warning("slice %d: kz undersampled inside its encoding limits; each partition is reconstructed "
                    "from the zero-filled kz (aliasing along the slab)", reference.idx.slice)
    level = averaging.noise_after_averaging(counts)
    extra = {"averages": averages, "kz_undersampled": undersampled}
    hybrid = averaging.partitions(kspace)
    reference_hybrid = None if calibration is None else averaging.partitions(calibration)
    thickness = sampling.encoded_FOV[2] / n_partitions
    for partition in range(n_partitions):
        image_kspace = np.transpose(hybrid[:, :, partition, :], (2, 1, 0))  # [CHA, E1, RO]
        reference_kspace = (None if reference_hybrid is None
                            else np.transpose(reference_hybrid[:, :, partition, :], (2, 1, 0)))
        name = (f"slice {reference.idx.slice}" + (f" partition {partition}" if n_partitions > 1 else "")
                + f" repetition {reference.idx.repetition}")
        with scan.budget.reserve(working_bytes(image_kspace.shape, settings.coil_map_method),
                            f"the coil combination of {name} ({image_kspace.shape[0]} coils x "
                            f"{image_kspace.shape[1]} lines x {image_kspace.shape[2]} samples)",
                            scan.stop_or_after(MEMORY_WAIT_S)):
            try:
                image, gain = combine_buffer(image_kspace, lines, settings.coil_map_method, settings.kernel_size,
                                             reference_kspace)
            except ValueError as err:
                log.error("%s not reconstructed: %s", name, err)
                continue
        slices = (SliceSampling.prewhitened(lines, level * gain, **extra) if whitened
                  else SliceSampling(lines, **extra))
        bad = ~np.isfinite(image)
        if bad.any():
            log.warning("%s: %d NaN or infinite pixels set to 0", name, int(bad.sum()))
            image = np.where(bad, 0, image).astype(image.dtype)
        header = header_from_acquisition(
            reference,
            field_of_view=(sampling.encoded_FOV[0], sampling.encoded_FOV[1],
                           thickness if n_partitions > 1 else sampling.encoded_FOV[2]),
            image_type=ismrmrd.IMTYPE_COMPLEX,
            image_series_index=settings.image_series_index,
        )
        if n_partitions > 1:
            offset = (partition - n_partitions // 2) * thickness
            header.position = tuple(p + offset * d for p, d in zip(reference.position, reference.slice_dir))
            header.slice = reference.idx.slice * n_partitions + partition
        if settings.averages != "separate":
            header.average = 0
        header.image_index = image_index(header, n_partitions, limits)
        meta = {
            **slices.to_meta(),
            "KSpaceCentreLine": str(sampling.sampling_limits[1].center),
            "Channels": str(image_kspace.shape[0]),
            "CoilMapMethod": settings.coil_map_method if image_kspace.shape[0] > 1 else "none",
            "DataRole": "CoilCombined",
        }
        log.debug("%s combined from %d coils, %d of %d lines, %d average(s)", name, image_kspace.shape[0],
                  lines.sum(), n_lines, averages)
        yield image.reshape(n_lines, readout), header, meta


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


def run(connection: Connection, settings: Settings, scan: ScanContext) -> None:
    """ReconData in, one combined complex image per slice out; other items pass on."""
    limits = _encoding_limits(connection.header)
    names = final_image_names(protocol_name(connection.header))
    connection.filter(ReconData)
    for item in connection:
        for image, header, meta in combine_recon_data(item, settings, limits, scan):
            scan.budget.charge(image.nbytes, f"the combined image of slice {header.slice}",
                               scan.stop_or_after(MEMORY_WAIT_S))
            output = (make_image(image, header, {**meta, **names}) if settings.output == "images"
                      else to_image_array(image, header, meta))
            connection.send(scan.budget.hold(output, image.nbytes))


def _encoding_limits(header: Any) -> Any:
    """The first encoding's encodingLimits, or None."""
    encodings = getattr(header, "encoding", None) or []
    return encodings[0].encodingLimits if encodings else None


GADGET = Gadget("coil_combination", Settings, run)


def coil_combination(connection: Any) -> None:
    """Gadgetron `<execute>` entry: the gadget under the limits of the node's environment."""
    GADGET.gadgetron_entry(connection)
