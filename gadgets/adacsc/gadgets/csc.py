"""The CSC reconstruction gadget: one coil-combined image per slice in, the CSC reconstruction on
the super-resolved grid out, driven by NET_Theta sparsity maps (or a scalar lambda).

The gadget maps its chain properties to a typed reconstruction (adacsc.core.app.CSCRecon), built
once per process, settings and file version (`build_recon`, the gadget layer's only cache), so a
different dictionary per scan is a property change. The iteration count, the low-pass part and beta
default to what the weights were trained with (their metadata), so the chain follows the
weights. Dictionaries and weights are names, found by adacsc.resources: files in the operator's
folders ($ADACSC_DICTIONARY_DIR, $ADACSC_WEIGHTS_DIR) or shipped ones.

Noise. Every slice is reconstructed with its noise level: 1 (SNR units) when the incoming meta
says the readouts were prewhitened with a noise scan (adacsc.io.slice_meta), else an estimate
from the image (adacsc.mr.noise.estimate_noise_std); the source is logged once per scan and
stored in the QA meta. Noise-aware maps, the TV low-pass and the default scalar lambda
(`noise_lambda` times the noise level) follow it.

Trust. Every slice's QA meta carries the data residual ||A x* - y||^2 / (M sigma^2) and the
trust index, that residual over its in-distribution expectation (adacsc.core.trust): about 1 when
the image explains the acquired data as well as on good data. A slice whose index lies outside
[1 / trust_limit, trust_limit] is flagged "do not trust" (meta `Trust`, and a warning in the
log): the noise level is wrong, the data are corrupted, or the model cannot represent what was
scanned. So is a slice whose code atypicality (how unlike validation slices the solve's filter
usage and code density are for the data's SNR and grid) is above atypicality_limit: anatomy unlike
training, which the residual alone cannot see when the model fits it (meta `CodeAtypicality`,
`TrustReasons`). The default limits and their evidence: docs/SITE_QA.md.

Scan QA. Figures that noise_adjust sends down the chain (noise and EMI report, EMI removal;
adacsc.io.scan_qa) are added to the QA meta of every later image.

Series sent (base = image_series_index): base the reconstruction, base + 1 the zero-filled
image A^H y on the same grid (send_zero_filled), base + 2 the mean sparsity map over filters
(send_maps), base + 3 the residual map |A^H (A x* - y)| / sigma (send_residual). The images are
in SNR units, the maps in normalised units; `output` chooses the pixel format (float32, int16 with
recorded scaling, or complex) and adacsc.io.series the names, window, history and QA meta
(dictionary, iterations, reconstruction time, map statistics, low-pass part, noise level and its
source, trust). Everything but ImageArrays passes on at once.
"""

import dataclasses
import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ismrmrd
import numpy as np
import torch
from gadgetron.types import ImageArray

from adacsc import resources
from adacsc.core.app import CSCRecon, ReconImages, TrainedSettings
from adacsc.core.device import parse_device_name, resolve_device
from adacsc.core.lambdas import FixedLambda, LambdaStrategy, NoiseMultiple, SparsityMaps
from adacsc.core.reconstruct import DEFAULT_NOISE_LAMBDA, LOWPASS_KINDS
from adacsc.core.trust import ATYPICALITY_LIMIT
from adacsc.gadgets.contract import Connection, Gadget
from adacsc.gadgets.properties import setting
from adacsc.gadgets.slice_pool import OrderedSender, shared_pool
from adacsc.io.dictionary_file import load_dictionary
from adacsc.io.scan_qa import is_scan_qa, read_scan_qa
from adacsc.io.series import OUTPUT_FORMATS, Series, protocol_name, scanner_image
from adacsc.io import header as hdr
from adacsc.io.slice_meta import SliceSampling
from adacsc.io.weights_file import load_model, read_model_info
from adacsc.limits import GiB, LimitError, ScanBudget
from adacsc.mr.fft import fftc
from adacsc.mr.noise import estimate_noise_std
from adacsc.scan_context import ScanContext

log = logging.getLogger(__name__)

DEFAULT_TRUST_LIMIT = 1.25
"""trust index band [1 / limit, limit] of a slice to be trusted (evidence: docs/SITE_QA.md)"""

@dataclass(frozen=True)
class Settings:
    """The gadget's properties."""

    dictionary: str = setting(resources.DEFAULT_DICTIONARY, "dictionary name: a file in $ADACSC_DICTIONARY_DIR or a "
                              "shipped one (`adacsc dictionaries`)")
    weights: str = setting(resources.DEFAULT_WEIGHTS, "NET_Theta weights name: a file in $ADACSC_WEIGHTS_DIR or "
                           "shipped weights")
    mode: str = setting("maps", "maps (NET_Theta) or scalar (one lambda)", choices=("maps", "scalar"))
    lam: float = setting(0.0, "scalar-mode lambda in normalised units (bright tissue about 1); 0 follows the noise: "
                         "noise_lambda times the noise level", minimum=0, name="lambda")
    noise_lambda: float = setting(DEFAULT_NOISE_LAMBDA, "scalar-mode lambda in units of the noise level (used when "
                                  "lambda is 0); the default is the best single value over the test noise levels "
                                  "(docs/evaluation)", minimum=0)
    beta: float = setting(0.0, "Tikhonov low-pass weight; 0 takes the value trained with the weights (in both "
                          "modes)", minimum=0)
    lowpass: str = setting("auto", "low-pass part: tikhonov (published), tv (edge-preserving, follows the noise) or "
                           "auto (what the weights were trained with)", choices=("auto",) + LOWPASS_KINDS)
    tv_weight: float = setting(0.0, "TV low-pass weight in units of the noise level; 0 takes the trained value",
                               minimum=0)
    iterations: int = setting(0, "FISTA iterations; 0 takes the count the weights were trained with", minimum=0,
                              operator_limit="max_iterations")
    super_resolution: int = setting(2, "grid factor per axis (k-space zero-padding)", choices=(1, 2, 3, 4))
    device: str = setting("auto", "auto (CUDA when present), cpu, mps, cuda or cuda:N", parse=parse_device_name)
    send_zero_filled: bool = setting(True, "also send the zero-filled image (series base + 1)")
    send_maps: bool = setting(True, "also send the mean sparsity map (series base + 2)")
    send_residual: bool = setting(False, "also send the residual map |A^H (A x - y)| / sigma (series base + 3)")
    trust_limit: float = setting(DEFAULT_TRUST_LIMIT, "flag a slice \"do not trust\" when its trust index (the data "
                                 "residual over its in-distribution expectation, about 1 on good data) is above this "
                                 "or below its inverse (docs/SITE_QA.md)", minimum=1)
    atypicality_limit: float = setting(ATYPICALITY_LIMIT, "flag a slice \"do not trust\" when its code atypicality "
                                       "(the Mahalanobis distance of its code density and filter-usage entropy from "
                                       "those of validation slices of its SNR and grid) is above this; 0: off. Applies to the chain it was "
                                       "calibrated for (the default dictionary, weights, mode, low-pass, iterations "
                                       "and grid factor); other chains only report it (docs/SITE_QA.md)", minimum=0)
    image_series_index: int = setting(1, "series index of the reconstruction (base); the last series sent must fit "
                                      "in uint16", minimum=0, maximum=65533)
    output: str = setting("float32", "pixel format of every series: float32 (magnitude), int16 (magnitude scaled to "
                          "0..4095, scaling in the meta, for a scanner's image injector) or complex (for a "
                          "complex-image injector)", choices=OUTPUT_FORMATS)

NOISE_FROM_IMAGE = "estimated from the image"
DO_NOT_TRUST = "do not trust"
NOISE_FLOOR = 1e-3
"""the lowest noise level used, relative to the image's 99th-percentile magnitude (an SNR of 1000)"""
NOISE_FLOOR_SOURCE = "floor (the image has no measurable noise)"
MEMORY_WAIT_S = 60.0
"""how long a slice waits for the memory other slices of its scan hold before the scan fails"""


@dataclass(frozen=True)
class ReconSettings:
    """The properties that choose the reconstruction, typed; equal settings share one build."""

    dictionary: str
    weights: str
    mode: str
    lam: float
    noise_lambda: float
    beta: float
    lowpass: str
    tv_weight: float
    iterations: int
    super_resolution: int
    device: str

    @classmethod
    def of(cls, settings: Settings) -> "ReconSettings":
        """The reconstruction part of the gadget's settings."""
        return cls(**{item.name: getattr(settings, item.name) for item in dataclasses.fields(cls)})


def atypicality_calibrated(settings: ReconSettings) -> bool:
    """Whether the code atypicality's calibration (adacsc.core.trust.TYPICAL) holds for `settings`:
    those of the default chain, whatever the device."""
    default = ReconSettings.of(Settings())
    return dataclasses.replace(settings, device=default.device) == default


def build_recon(settings: ReconSettings) -> CSCRecon:
    """The reconstruction `settings` ask for, with the dictionary and weights found by name
    (adacsc.resources); built once per settings and file version.

    Zero-valued settings (beta, tv_weight, iterations) and lowpass "auto" take what the weights
    were trained with; scalar mode reads only the weights' metadata (no torch load)."""
    dictionary = resources.resolve(resources.DICTIONARY, settings.dictionary)
    weights = resources.resolve(resources.WEIGHTS, settings.weights)
    return _build(settings, dictionary, dictionary.stat().st_mtime_ns, weights, weights.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _build(settings: ReconSettings, dictionary: Path, dictionary_version: int, weights: Path,
           weights_version: int) -> CSCRecon:
    device = resolve_device(settings.device)
    sparsity: LambdaStrategy
    if settings.mode == "maps":
        network, info = load_model(weights, device)
        log.info("NET_Theta weights %s loaded on %s (%s)", weights, device, info.kind)
        sparsity = SparsityMaps(network)
    else:
        info = read_model_info(weights)
        sparsity = FixedLambda(settings.lam) if settings.lam else NoiseMultiple(settings.noise_lambda)
    trained = TrainedSettings.from_scalars(info.scalars).overridden(
        beta=settings.beta or None, iterations=settings.iterations or None, tv_weight=settings.tv_weight or None,
        lowpass=None if settings.lowpass == "auto" else settings.lowpass)
    return CSCRecon.from_trained(load_dictionary(dictionary), sparsity, trained,
                                 super_resolution=settings.super_resolution, device=device)


def preload() -> None:
    """Build the default reconstruction once (a long-running server calls this at start, so the
    first scan does not pay for loading it)."""
    build_recon(ReconSettings.of(Settings()))


def _slices(item: ImageArray) -> list[tuple[np.ndarray, ismrmrd.ImageHeader, dict[str, str]]]:
    """(image [Y, X], header, meta) for each image of an ImageArray."""
    data = np.asarray(item.data)
    headers = np.asarray(item.headers, dtype=object)
    slices = []
    for flat, index in enumerate(np.ndindex(*headers.shape)):
        volume = data[(slice(None),) * 4 + index]  # [X, Y, Z, CHA]
        if volume.shape[2] != 1 or volume.shape[3] != 1:
            raise ValueError(f"CSC expects one coil-combined 2-D image per entry, got [X,Y,Z,CHA] {volume.shape}")
        meta = ismrmrd.Meta.deserialize(item.meta[flat]) if item.meta and flat < len(item.meta) else {}
        slices.append((volume[:, :, 0, 0].T, headers[index], dict(meta)))
    return slices


def noise_level(image: np.ndarray, sampling: SliceSampling) -> tuple[float, str]:
    """(k-space noise std of a combined image, where it comes from): the level the coil
    combination recorded (prewhitened with a noise scan), else an estimate from the image; the
    image's noise is the k-space noise times sqrt(fraction of acquired lines). An estimate
    below NOISE_FLOOR of the image's 99th-percentile magnitude (noise-free or synthetic input)
    is raised to that floor: the solver's noise-scaled steps would otherwise amplify rounding."""
    if sampling.noise_level:
        return sampling.noise_level, sampling.noise_source
    magnitude = np.abs(image)
    if not magnitude.any():
        raise ValueError("the noise level of this image cannot be estimated: it is all zeros")
    floor = NOISE_FLOOR * float(np.percentile(magnitude, 99)) / np.sqrt(max(float(sampling.lines.mean()), 1e-6))
    estimate = estimate_noise_std(image) / np.sqrt(max(float(sampling.lines.mean()), 1e-6))
    if not estimate >= floor:
        return floor, NOISE_FLOOR_SOURCE
    return estimate, NOISE_FROM_IMAGE


def output_series(settings: Settings) -> list[tuple[str, Series]]:
    """(field of ReconImages, series) of every series the settings ask for."""
    base = settings.image_series_index
    candidates = [("reconstruction", Series(base, "CSC", "", "SNR", "CSC"), True),
                  ("zero_filled", Series(base + 1, "ZeroFilled", "_zerofilled", "SNR", "ZEROFILLED"),
                   settings.send_zero_filled),
                  ("mean_map", Series(base + 2, "SparsityMap", "_maps", "normalised", "SPARSITYMAP"),
                   settings.send_maps),
                  ("residual_map", Series(base + 3, "Residual", "_residual", "noise std", "RESIDUAL"),
                   settings.send_residual)]
    chosen = [(key, series) for key, series, wanted in candidates if wanted]
    if chosen[-1][1].index > 65535:
        raise ValueError(f"image_series_index {base}: series {chosen[-1][1].index} does not fit in uint16")
    return chosen


def trusted(index: float, limit: float) -> bool:
    """Whether a trust index lies inside [1 / limit, limit]."""
    return 1 / limit <= index <= limit


def distrust_reasons(images: ReconImages, trust_limit: float = DEFAULT_TRUST_LIMIT,
                     atypicality_limit: float = ATYPICALITY_LIMIT) -> list[str]:
    """Why a slice is not to be trusted (empty: it is): its data residual, its code atypicality."""
    reasons = []
    if not trusted(images.trust_index, trust_limit):
        reasons.append("data residual")
    if atypicality_limit > 0 and not images.atypicality <= atypicality_limit:
        reasons.append("code atypicality")
    return reasons


def qa_meta(recon: CSCRecon, images: ReconImages, elapsed_ms: float, noise: tuple[float, str],
            trust_limit: float = DEFAULT_TRUST_LIMIT,
            atypicality_limit: float = ATYPICALITY_LIMIT) -> dict[str, object]:
    """The scan's QA figures for the meta of every image of a slice."""
    maps = images.mean_map
    reasons = distrust_reasons(images, trust_limit, atypicality_limit)
    return {
        "TrustIndex": f"{images.trust_index:.4f}", "DataResidual": f"{images.data_residual:.4f}",
        "TrustLimit": f"{trust_limit:g}", "CodeAtypicality": f"{images.atypicality:.4f}",
        "AtypicalityLimit": f"{atypicality_limit:g}",
        "Trust": DO_NOT_TRUST if reasons else "ok", "TrustReasons": ", ".join(reasons) or "none",
        "Dictionary": recon.dictionary.name, "Filters": str(recon.dictionary.num_filters),
        "Iterations": str(recon.iterations), "Mode": recon.mode,
        "SuperResolution": str(recon.super_resolution), "ReconTimeMs": f"{elapsed_ms:.1f}",
        "MapMean": f"{float(maps.mean()):.6g}", "MapMin": f"{float(maps.min()):.6g}",
        "MapMax": f"{float(maps.max()):.6g}", "LowPass": recon.lowpass.kind,
        "NoiseLevel": f"{noise[0]:.6g}", "NoiseSource": noise[1]}


@dataclass(frozen=True)
class _Output:
    """What every slice of a scan is sent as: the series, the pixel format and the protocol name."""

    series: list[tuple[str, Series]]
    pixel_format: str
    protocol: str
    trust_limit: float = DEFAULT_TRUST_LIMIT
    atypicality_limit: float = ATYPICALITY_LIMIT


def run(connection: Connection, settings: Settings, scan: ScanContext) -> None:
    """ImageArray of coil-combined slices in, reconstruction (and inspection) images out.

    Slices are reconstructed on the process's slice pool while later ones arrive, and sent in
    arrival order (adacsc.gadgets.slice_pool)."""
    recon_settings = ReconSettings.of(settings)
    recon = build_recon(recon_settings)
    log.info("CSC: %s", recon.describe())
    atypicality_limit = settings.atypicality_limit
    if atypicality_limit > 0 and not atypicality_calibrated(recon_settings):
        log.info("code atypicality: calibrated for the default chain only, so reported but not part of the trust flag")
        atypicality_limit = 0.0
    check_grid(recon, connection.header, scan.budget)
    output = _Output(output_series(settings), settings.output, protocol_name(connection.header),
                     settings.trust_limit, atypicality_limit)
    count = 0
    sources: set[str] = set()
    scan_qa: dict[str, list[str]] = {}
    connection.filter(lambda item: isinstance(item, ImageArray) or is_scan_qa(item))
    with OrderedSender(connection.send, shared_pool()) as sender:
        for item in connection:
            if is_scan_qa(item):
                scan_qa = {**scan_qa, **read_scan_qa(item)}
                continue
            for image, header, meta in _slices(item):
                sampling = SliceSampling.from_meta(meta, image.shape[0])
                noise = noise_level(image, sampling)
                if noise[1] not in sources:
                    sources.add(noise[1])
                    if noise[1] == NOISE_FLOOR_SOURCE:
                        log.warning("slice %d has no measurable noise (noise-free or synthetic input?): using a "
                                    "noise floor of %g of its 99th-percentile magnitude (%.4g)", header.slice,
                                    NOISE_FLOOR, noise[0])
                    else:
                        log.info("noise level: %s (slice %d: %.4g)", noise[1], header.slice, noise[0])
                count += 1
                sender.later(functools.partial(_slice_images, recon, output, count, image, sampling.lines, noise,
                                               header, sampling.qa(), scan, scan_qa))


def check_grid(recon: CSCRecon, header: Any, budget: ScanBudget) -> None:
    """Refuse, before any data, a scan whose CSC grid would not fit the scan's budget: the
    largest slice the header allows (encoded lines x recon readout) at `super_resolution`."""
    encoding = hdr.encoding(header)
    acquired = (encoding.encoded_matrix[1], max(encoding.recon_matrix[0], 1))
    need = recon.peak_bytes(acquired)
    if need > budget.limit:
        grid_y, grid_x = recon.grid(acquired)
        raise LimitError(f"csc.super_resolution = {recon.super_resolution} makes a {grid_y}x{grid_x} grid with "
                         f"{recon.dictionary.num_filters} filters for the header's {acquired[0]}x{acquired[1]} "
                         f"matrix: {need / GiB:.1f} GiB per slice, over the scan limit of {budget.limit / GiB:.1f} "
                         "GiB; lower super_resolution or raise the limit")


def _slice_images(recon: CSCRecon, output: _Output, count: int, image: np.ndarray, lines: np.ndarray,
                  noise: tuple[float, str], header: ismrmrd.ImageHeader, sampling_qa: dict[str, str],
                  scan: ScanContext, scan_qa: dict[str, list[str]] | None = None) -> list[ismrmrd.Image]:
    """The images of one slice (a slice-pool job); `sampling_qa` (averages, kz undersampling) and
    `scan_qa` (noise and EMI report, EMI removal) join the QA meta; its working memory and images are
    charged to the scan's budget."""
    budget = scan.budget
    started = time.perf_counter()
    grid_y, grid_x = recon.grid(image.shape)
    with budget.reserve(recon.peak_bytes(image.shape),
                        f"the CSC reconstruction of slice {header.slice} ({grid_y}x{grid_x} grid, "
                        f"{recon.dictionary.num_filters} filters, super_resolution {recon.super_resolution})",
                        stop=scan.stop_or_after(MEMORY_WAIT_S)):
        images = recon(fftc(image.astype(np.complex64)), lines, noise[0],
                       residual_map=any(key == "residual_map" for key, _ in output.series))
        elapsed_ms = 1000 * (time.perf_counter() - started)
        qa = {**(scan_qa or {}), **qa_meta(recon, images, elapsed_ms, noise, output.trust_limit,
                                           output.atypicality_limit), **sampling_qa}
        log.info("slice %d reconstructed in %.0f ms (%d torch thread(s)), trust index %.3f, code atypicality %.2f",
                 header.slice, elapsed_ms, torch.get_num_threads(), images.trust_index, images.atypicality)
        if qa["Trust"] == DO_NOT_TRUST:
            log.warning("slice %d: do not trust (%s): trust index %.3f (band [%.3g, %.3g]: noise level wrong or "
                        "corrupted data), code atypicality %.2f (limit %g: anatomy unlike training)", header.slice,
                        qa["TrustReasons"], images.trust_index, 1 / output.trust_limit, output.trust_limit,
                        images.atypicality, output.atypicality_limit)
        results = []
        for key, wanted in output.series:
            nbytes = 8 * grid_y * grid_x
            budget.charge(nbytes, f"image {count} of series {wanted.index}", scan.stop_or_after(MEMORY_WAIT_S))
            results.append(budget.hold(scanner_image(getattr(images, key), header, wanted, output.pixel_format,
                                                     image_index=count, protocol=output.protocol, qa=qa), nbytes))
    return results


GADGET = Gadget("csc", Settings, run, preload)


def csc(connection: Any) -> None:
    """Gadgetron `<execute>` entry: the gadget under the limits of the node's environment."""
    GADGET.gadgetron_entry(connection)
