"""The CSC reconstruction gadget: one coil-combined image per slice in, the CSC reconstruction on
the super-resolved grid out, driven by NET_Theta sparsity maps (or a scalar lambda).

The dictionary, weights, iterations, super-resolution factor and mode are chain properties, so a
different dictionary per scan is a property change. The iteration count, the low-pass part and
beta default to what the weights were trained with (their metadata), so the chain follows the
weights. Dictionaries and weights are names: shipped ones, or files inside the operator's folders
($ADACSC_DICTIONARY_DIR, $ADACSC_WEIGHTS_DIR). Loaded dictionaries, networks and solvers are
cached per process and reused across scans.

Noise. Every slice is reconstructed with its noise level: 1 (SNR units) when the incoming meta
says the readouts were prewhitened with a noise scan (adacsc.gadgets.coil_combination), else an
estimate from the image (adacsc.mr.noise.estimate_noise_std); the source is logged once per scan
and stored in the QA meta. Noise-aware maps, the TV low-pass and the default scalar lambda
(`noise_lambda` times the noise level) follow it.

Series sent (base = image_series_index): base the reconstruction, base + 1 the zero-filled
image A^H y on the same grid (send_zero_filled), base + 2 the mean sparsity map over filters
(send_maps). The images are in SNR units, the maps in normalised units; `output` chooses the
pixel format (float32, int16 with recorded scaling, or complex) and adacsc.io.series the names,
window, history and QA meta (dictionary, iterations, reconstruction time, map statistics, low-pass
part, noise level and its source). Images that arrive as images pass on unchanged.
"""

import functools
import logging
import time
from typing import Any

import ismrmrd
import numpy as np
import torch
from gadgetron.types import ImageArray

from adacsc import settings
from adacsc.core.device import parse_device_name, resolve_device
from adacsc.core.reconstruct import (
    DEFAULT_NOISE_LAMBDA, LOWPASS_KINDS, CSCReconstructor, NoiseMultiple, TrainedSettings,
)
from adacsc.core.registry import DEFAULT_DICTIONARY, get_dictionary
from adacsc.core.weights import load_named_model, read_model_info, resolve_weights
from adacsc.gadgets.properties import Property, PropertySpec, parse_bool, read_properties
from adacsc.gadgets.slice_pool import OrderedSender, shared_pool
from adacsc.io.series import OUTPUT_FORMATS, Series, protocol_name, scanner_image
from adacsc.mr.fft import fftc
from adacsc.mr.noise import estimate_noise_std

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = "netv3_lowfield_tv"

SPEC = PropertySpec("csc", (
    Property("dictionary", str, DEFAULT_DICTIONARY, "shipped dictionary name or a file in $ADACSC_DICTIONARY_DIR"),
    Property("weights", str, DEFAULT_WEIGHTS, "shipped NET_Theta weights name or a file in $ADACSC_WEIGHTS_DIR"),
    Property("mode", str, "maps", "maps (NET_Theta) or scalar (one lambda)", choices=("maps", "scalar")),
    Property("lambda", float, 0.0, "scalar-mode lambda in normalised units (bright tissue about 1); 0 follows "
             "the noise: noise_lambda times the noise level", minimum=0),
    Property("noise_lambda", float, DEFAULT_NOISE_LAMBDA, "scalar-mode lambda in units of the noise level "
             "(used when lambda is 0); the default is the best single value over the test noise levels "
             "(docs/evaluation)", minimum=0),
    Property("beta", float, 0.0, "Tikhonov low-pass weight; 0 takes the value trained with the weights (in both "
             "modes)", minimum=0),
    Property("lowpass", str, "auto", "low-pass part: tikhonov (published), tv (edge-preserving, follows the "
             "noise) or auto (what the weights were trained with)", choices=("auto",) + LOWPASS_KINDS),
    Property("tv_weight", float, 0.0, "TV low-pass weight in units of the noise level; 0 takes the trained value",
             minimum=0),
    Property("iterations", int, 0, "FISTA iterations; 0 takes the count the weights were trained with", minimum=0,
             operator_limit="max_iterations"),
    Property("super_resolution", int, 2, "grid factor per axis (k-space zero-padding)", choices=(1, 2, 3, 4)),
    Property("device", parse_device_name, "auto", "auto (CUDA when present), cpu, mps, cuda or cuda:N"),
    Property("send_zero_filled", parse_bool, True, "also send the zero-filled image (series base + 1)"),
    Property("send_maps", parse_bool, True, "also send the mean sparsity map (series base + 2)"),
    Property("image_series_index", int, 1, "series index of the reconstruction (base); base + 2 must fit in "
             "uint16", minimum=0, maximum=65533),
    Property("output", str, "float32", "pixel format of every series: float32 (magnitude), int16 (magnitude "
             "scaled to 0..4095, scaling in the meta, for a scanner's image injector) or complex (for a "
             "complex-image injector)", choices=OUTPUT_FORMATS),
))

NOISE_FROM_IMAGE = "estimated from the image"


@functools.lru_cache(maxsize=16)
def _dictionary(name: str, folder: str | None) -> Any:
    return get_dictionary(name, folder)


@functools.lru_cache(maxsize=8)
def _network(name: str, folder: str | None, device: str) -> tuple[torch.nn.Module, Any]:
    network, info = load_named_model(name, folder, device)
    log.info("NET_Theta weights %s loaded on %s (%s)", name, device, info.kind)
    return network, info


@functools.lru_cache(maxsize=16)
def _solver(dictionary: str, folder: str | None, beta: float, iterations: int, lowpass: str, tv_weight: float,
            device: str) -> CSCReconstructor:
    return CSCReconstructor(_dictionary(dictionary, folder).filters, beta=beta, n_iter=iterations,
                            lowpass=lowpass, tv_weight=tv_weight).to(device)


def preload() -> None:
    """Load the default dictionary and weights once (a long-running server calls this at start,
    so the first scan does not pay for it)."""
    device = str(resolve_device("auto"))
    _dictionary(DEFAULT_DICTIONARY, None)
    _network(DEFAULT_WEIGHTS, None, device)


class CSCStep:
    """The reconstruction of one scan: resources resolved once from the properties."""

    def __init__(self, props: dict[str, Any]) -> None:
        self.device = resolve_device(props["device"])
        dictionary_dir = settings.dictionary_dir()
        dictionary_folder = str(dictionary_dir) if dictionary_dir else None
        self.dictionary = _dictionary(props["dictionary"], dictionary_folder)
        weights_dir = settings.weights_dir()
        weights_folder = str(weights_dir) if weights_dir else None
        if props["mode"] == "maps":
            self.lam, info = _network(props["weights"], weights_folder, str(self.device))
        else:  # scalar mode: the trained settings from the weights' metadata only (no torch load)
            info = read_model_info(resolve_weights(props["weights"], weights_folder))
            self.lam = props["lambda"] or NoiseMultiple(props["noise_lambda"])
        trained = TrainedSettings.from_scalars(info.scalars)
        self.beta = float(props["beta"] or trained.beta)
        self.lowpass = trained.lowpass if props["lowpass"] == "auto" else props["lowpass"]
        self.tv_weight = float(props["tv_weight"] or trained.tv_weight)
        self.props = {**props, "iterations": int(props["iterations"] or trained.iterations)}
        self.solver = _solver(props["dictionary"], dictionary_folder, self.beta, self.props["iterations"],
                              self.lowpass, self.tv_weight, str(self.device))
        low = f"beta {self.beta:.4g}" if self.lowpass == "tikhonov" else f"TV weight {self.tv_weight:g} x noise"
        log.info("CSC: dictionary %s (K=%d, %dx%d), mode %s, %d iterations, super-resolution %dx, %s low-pass, %s, %s",
                 self.dictionary.name, self.dictionary.num_filters, *self.dictionary.filter_shape, props["mode"],
                 self.props["iterations"], props["super_resolution"], self.lowpass, low, self.device)

    def reconstruct(self, image: np.ndarray, lines: np.ndarray, noise_std: float) -> dict[str, np.ndarray]:
        """Images [H, W] (reconstruction, zero-filled, mean map) from a combined image [Y, X] whose
        k-space noise std is `noise_std`."""
        kspace = fftc(image.astype(np.complex64))
        mask = None if lines.all() else np.broadcast_to(lines[:, None], kspace.shape).astype(np.float32)
        factor = self.props["super_resolution"]
        grid = (kspace.shape[0] * factor, kspace.shape[1] * factor)
        y = torch.from_numpy(np.ascontiguousarray(kspace)).to(self.device)[None]
        result = self.solver.infer(y, grid, self.lam, mask, noise_std=noise_std)
        if isinstance(result.lam, torch.Tensor):
            mean_map = result.lam.mean(dim=1)[0].cpu().numpy()
        else:
            mean_map = np.full(grid, result.lam, np.float32)
        return {
            "reconstruction": result.image[0].abs().cpu().numpy(),
            "zero_filled": result.x0[0].abs().cpu().numpy(),
            "maps": mean_map,
        }


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


def _sampled_lines(meta: dict[str, Any], lines: int) -> np.ndarray:
    mask = meta.get("SamplingMask")
    if isinstance(mask, list):
        mask = mask[0]
    if not mask:
        return np.ones(lines, bool)
    if len(mask) != lines or set(mask) - {"0", "1"}:
        raise ValueError(f"SamplingMask meta does not describe {lines} phase-encode lines")
    return np.array([c == "1" for c in mask])


def noise_level(image: np.ndarray, lines: np.ndarray, meta: dict[str, Any]) -> tuple[float, str]:
    """(k-space noise std of a combined image, where it comes from): the incoming meta's
    NoiseLevel (prewhitened with a noise scan), else an estimate from the image; the image's noise
    is the k-space noise times sqrt(fraction of acquired lines)."""
    level = meta.get("NoiseLevel")
    if isinstance(level, list):
        level = level[0]
    if level:
        source = meta.get("NoiseSource", "meta")
        return float(level), source[0] if isinstance(source, list) else source
    estimate = estimate_noise_std(image) / np.sqrt(max(float(lines.mean()), 1e-6))
    if not estimate > 0:
        raise ValueError("the noise level of this image cannot be estimated (is it all zeros?)")
    return estimate, NOISE_FROM_IMAGE


def output_series(props: dict[str, Any]) -> list[tuple[str, Series]]:
    """(key of CSCStep.reconstruct's result, series) of every series the properties ask for."""
    base = props["image_series_index"]
    candidates = [("reconstruction", Series(base, "CSC", "", "SNR", "CSC"), True),
                  ("zero_filled", Series(base + 1, "ZeroFilled", "_zerofilled", "SNR", "ZEROFILLED"),
                   props["send_zero_filled"]),
                  ("maps", Series(base + 2, "SparsityMap", "_maps", "normalised", "SPARSITYMAP"), props["send_maps"])]
    return [(key, series) for key, series, wanted in candidates if wanted]


def qa_meta(step: CSCStep, outputs: dict[str, np.ndarray], elapsed_ms: float,
            noise: tuple[float, str]) -> dict[str, object]:
    """The scan's QA figures for the meta of every image of a slice."""
    props, maps = step.props, outputs["maps"]
    qa: dict[str, object] = {
        "Dictionary": step.dictionary.name, "Filters": str(step.dictionary.num_filters),
        "Iterations": str(props["iterations"]), "Mode": props["mode"],
        "SuperResolution": str(props["super_resolution"]), "ReconTimeMs": f"{elapsed_ms:.1f}",
        "MapMean": f"{float(maps.mean()):.6g}", "MapMin": f"{float(maps.min()):.6g}",
        "MapMax": f"{float(maps.max()):.6g}", "LowPass": step.lowpass,
        "NoiseLevel": f"{noise[0]:.6g}", "NoiseSource": noise[1]}
    return qa


def csc(connection: Any) -> None:
    """Gadget: ImageArray of coil-combined slices in, reconstruction (and inspection) images out.

    Slices are reconstructed on the process's slice pool while later ones arrive; everything is
    sent in arrival order (adacsc.gadgets.slice_pool)."""
    props = read_properties(connection, SPEC)
    step = CSCStep(props)
    series = output_series(props)
    protocol = protocol_name(connection.header)
    count = 0
    sources: set[str] = set()
    with OrderedSender(connection.send, shared_pool()) as output:
        for item in connection:
            if not isinstance(item, ImageArray):
                output.now(item)
                continue
            for image, header, meta in _slices(item):
                lines = _sampled_lines(meta, image.shape[0])
                noise = noise_level(image, lines, meta)
                if noise[1] not in sources:
                    sources.add(noise[1])
                    log.info("noise level: %s (slice %d: %.4g)", noise[1], header.slice, noise[0])
                count += 1
                output.later(functools.partial(_slice_images, step, series, protocol, count, image, lines, noise,
                                               header))


def _slice_images(step: CSCStep, series: list[tuple[str, Series]], protocol: str, count: int, image: np.ndarray,
                  lines: np.ndarray, noise: tuple[float, str], header: ismrmrd.ImageHeader) -> list[ismrmrd.Image]:
    """The images of one slice (a slice-pool job)."""
    started = time.perf_counter()
    outputs = step.reconstruct(image, lines, noise[0])
    elapsed_ms = 1000 * (time.perf_counter() - started)
    qa = qa_meta(step, outputs, elapsed_ms, noise)
    log.info("slice %d reconstructed in %.0f ms (%d torch thread(s))", header.slice, elapsed_ms,
             torch.get_num_threads())
    return [scanner_image(outputs[key], header, wanted, step.props["output"], image_index=count,
                          protocol=protocol, qa=qa) for key, wanted in series]
