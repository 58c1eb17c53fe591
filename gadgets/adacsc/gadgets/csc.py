"""The CSC reconstruction gadget: one coil-combined image per slice in, the CSC reconstruction on
the super-resolved grid out, driven by NET_Theta sparsity maps (or a scalar lambda).

The dictionary, weights, iterations, super-resolution factor and mode are chain properties, so a
different dictionary per scan is a property change. Dictionaries and weights are names: shipped
ones, or files inside the operator's folders ($ADACSC_DICTIONARY_DIR, $ADACSC_WEIGHTS_DIR).
Loaded dictionaries, networks and solvers are cached per process and reused across scans.

Series sent (base = image_series_index): base the reconstruction, base + 1 the zero-filled
image A^H y on the same grid (send_zero_filled), base + 2 the mean sparsity map over filters
(send_maps). The images are in SNR units, the maps in normalised units; `output` chooses the
pixel format (float32, int16 with recorded scaling, or complex) and adacsc.io.series the names,
window, history and QA meta (dictionary, iterations, reconstruction time, map statistics, and the
noise level with its source when the incoming image's meta has them). Images that arrive as
images pass on unchanged.
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
from adacsc.core.device import resolve_device
from adacsc.core.reconstruct import DEFAULT_BETA, CSCReconstructor
from adacsc.core.registry import DEFAULT_DICTIONARY, get_dictionary
from adacsc.core.weights import load_named_model, read_model_info, resolve_weights
from adacsc.gadgets.properties import Property, PropertySpec, parse_bool, read_properties
from adacsc.gadgets.slice_pool import OrderedSender, shared_pool
from adacsc.io.series import OUTPUT_FORMATS, Series, protocol_name, scanner_image
from adacsc.mr.fft import fftc

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = "netv3_light"

SPEC = PropertySpec("csc", (
    Property("dictionary", str, DEFAULT_DICTIONARY, "shipped dictionary name or a file in $ADACSC_DICTIONARY_DIR"),
    Property("weights", str, DEFAULT_WEIGHTS, "shipped NET_Theta weights name or a file in $ADACSC_WEIGHTS_DIR"),
    Property("mode", str, "maps", "maps (NET_Theta) or scalar (one lambda)", choices=("maps", "scalar")),
    Property("lambda", float, 0.08, "scalar-mode lambda, in normalised units (bright tissue about 1); the "
             "default is the best single value over both test noise levels (docs/evaluation)"),
    Property("beta", float, 0.0, "low-pass weight; 0 takes the value trained with the weights (in both modes)"),
    Property("iterations", int, 64, "FISTA iterations"),
    Property("super_resolution", int, 2, "grid factor per axis (k-space zero-padding)", choices=(1, 2, 3, 4)),
    Property("device", str, "auto", "auto (CUDA when present), cpu, cuda or cuda:N"),
    Property("send_zero_filled", parse_bool, True, "also send the zero-filled image (series base + 1)"),
    Property("send_maps", parse_bool, True, "also send the mean sparsity map (series base + 2)"),
    Property("image_series_index", int, 1, "series index of the reconstruction (base)"),
    Property("output", str, "float32", "pixel format of every series: float32 (magnitude), int16 (magnitude "
             "scaled to 0..4095, scaling in the meta, for a scanner's image injector) or complex (for a "
             "complex-image injector)", choices=OUTPUT_FORMATS),
))

NOISE_META = ("NoiseLevel", "NoiseSource")
"""Entries of an incoming image's meta copied to the QA meta of its reconstruction."""


@functools.lru_cache(maxsize=16)
def _dictionary(name: str, folder: str | None) -> Any:
    return get_dictionary(name, folder)


@functools.lru_cache(maxsize=8)
def _network(name: str, folder: str | None, device: str) -> tuple[torch.nn.Module, Any]:
    network, info = load_named_model(name, folder, device)
    log.info("NET_Theta weights %s loaded on %s (%s)", name, device, info.kind)
    return network, info


@functools.lru_cache(maxsize=16)
def _solver(dictionary: str, folder: str | None, beta: float, iterations: int, device: str) -> CSCReconstructor:
    return CSCReconstructor(_dictionary(dictionary, folder).filters, beta=beta, n_iter=iterations).to(device)


def preload() -> None:
    """Load the default dictionary and weights once (a long-running server calls this at start,
    so the first scan does not pay for it)."""
    device = str(resolve_device("auto"))
    _dictionary(DEFAULT_DICTIONARY, None)
    _network(DEFAULT_WEIGHTS, None, device)


class CSCStep:
    """The reconstruction of one scan: resources resolved once from the properties."""

    def __init__(self, props: dict[str, Any]) -> None:
        if props["iterations"] < 1:
            raise ValueError(f"iterations must be >= 1, got {props['iterations']}")
        self.props = props
        self.device = resolve_device(props["device"])
        dictionary_dir = settings.dictionary_dir()
        self.dictionary = _dictionary(props["dictionary"], str(dictionary_dir) if dictionary_dir else None)
        weights_dir = settings.weights_dir()
        weights_folder = str(weights_dir) if weights_dir else None
        self.lam: Any = props["lambda"]
        beta = props["beta"]
        if props["mode"] == "maps":
            self.lam, info = _network(props["weights"], weights_folder, str(self.device))
            beta = beta or info.scalars.get("beta", DEFAULT_BETA)
        elif not beta:  # scalar mode: the trained low-pass weight, from the weights' metadata only
            beta = read_model_info(resolve_weights(props["weights"], weights_folder)).scalars.get("beta", DEFAULT_BETA)
        self.beta = float(beta)
        self.solver = _solver(props["dictionary"], str(dictionary_dir) if dictionary_dir else None,
                              self.beta, props["iterations"], str(self.device))
        log.info("CSC: dictionary %s (K=%d, %dx%d), mode %s, %d iterations, super-resolution %dx, beta %.4g, %s",
                 self.dictionary.name, self.dictionary.num_filters, *self.dictionary.filter_shape,
                 props["mode"], props["iterations"], props["super_resolution"], self.beta, self.device)

    def reconstruct(self, image: np.ndarray, lines: np.ndarray) -> dict[str, np.ndarray]:
        """Images [H, W] (reconstruction, zero-filled, mean map) from a combined image [Y, X]."""
        kspace = fftc(image.astype(np.complex64))
        mask = None if lines.all() else np.broadcast_to(lines[:, None], kspace.shape).astype(np.float32)
        factor = self.props["super_resolution"]
        grid = (kspace.shape[0] * factor, kspace.shape[1] * factor)
        y = torch.from_numpy(np.ascontiguousarray(kspace)).to(self.device)[None]
        result = self.solver.infer(y, grid, self.lam, mask)
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


def output_series(props: dict[str, Any]) -> list[tuple[str, Series]]:
    """(key of CSCStep.reconstruct's result, series) of every series the properties ask for."""
    base = props["image_series_index"]
    candidates = [("reconstruction", Series(base, "CSC", "", "SNR", "CSC"), True),
                  ("zero_filled", Series(base + 1, "ZeroFilled", "_zerofilled", "SNR", "ZEROFILLED"),
                   props["send_zero_filled"]),
                  ("maps", Series(base + 2, "SparsityMap", "_maps", "normalised", "SPARSITYMAP"), props["send_maps"])]
    return [(key, series) for key, series, wanted in candidates if wanted]


def qa_meta(step: CSCStep, outputs: dict[str, np.ndarray], elapsed_ms: float,
            incoming: dict[str, Any]) -> dict[str, object]:
    """The scan's QA figures for the meta of every image of a slice."""
    props, maps = step.props, outputs["maps"]
    qa: dict[str, object] = {
        "Dictionary": step.dictionary.name, "Filters": str(step.dictionary.num_filters),
        "Iterations": str(props["iterations"]), "Mode": props["mode"],
        "SuperResolution": str(props["super_resolution"]), "ReconTimeMs": f"{elapsed_ms:.1f}",
        "MapMean": f"{float(maps.mean()):.6g}", "MapMin": f"{float(maps.min()):.6g}",
        "MapMax": f"{float(maps.max()):.6g}"}
    qa.update({key: incoming[key] for key in NOISE_META if key in incoming})
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
    with OrderedSender(connection.send, shared_pool()) as output:
        for item in connection:
            if not isinstance(item, ImageArray):
                output.now(item)
                continue
            for image, header, meta in _slices(item):
                count += 1
                output.later(functools.partial(_slice_images, step, series, protocol, count, image, header, meta))


def _slice_images(step: CSCStep, series: list[tuple[str, Series]], protocol: str, count: int, image: np.ndarray,
                  header: ismrmrd.ImageHeader, meta: dict[str, str]) -> list[ismrmrd.Image]:
    """The images of one slice (a slice-pool job)."""
    started = time.perf_counter()
    outputs = step.reconstruct(image, _sampled_lines(meta, image.shape[0]))
    elapsed_ms = 1000 * (time.perf_counter() - started)
    qa = qa_meta(step, outputs, elapsed_ms, meta)
    log.info("slice %d reconstructed in %.0f ms (%d torch thread(s))", header.slice, elapsed_ms,
             torch.get_num_threads())
    return [scanner_image(outputs[key], header, wanted, step.props["output"], image_index=count,
                          protocol=protocol, qa=qa) for key, wanted in series]
