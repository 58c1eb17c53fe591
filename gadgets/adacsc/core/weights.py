"""Saving and loading map-network weights: safetensors files with JSON metadata.

File format (one self-contained file, extension ".safetensors"):
- the tensors: the network's state_dict (float32), nothing else; safetensors holds raw tensor
  bytes only, so loading executes no code (no pickle);
- the safetensors header metadata (string -> string) holds one key, "adacsc", whose value is a JSON
  object:
    {"format": "adacsc-map-network", "format_version": 1,
     "kind": "v3" | "v1", "num_filters": null | K (V1 only),
     "config": {...NetworkConfig...}, "lambda_max": float,
     "scalars": {"beta": 0.1, ...}       learned scalars of the reconstruction (e.g. low-pass beta),
     "provenance": {...}}                free-form training provenance (data, dictionaries, commit...)
  "lambda_max" repeats config["lambda_max"] for readers that do not parse the config.

Names. Weights shipped with the package live in adacsc/data/weights/NAME.safetensors; an operator
may configure a folder of their own. `resolve_weights(name, weights_dir)` accepts a bare name
(letters, digits, '.', '_', '-'; no separators, no '..', not absolute; the ".safetensors" suffix
is optional), looks in the operator folder first, then in the shipped folder.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adacsc.core.network import NETWORK_KINDS, MapNetwork, NetworkConfig, V1MapNetwork, build_network

__all__ = [
    "WeightsError",
    "ModelInfo",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "WEIGHTS_SUFFIX",
    "save_model",
    "load_model",
    "read_model_info",
    "shipped_weights_dir",
    "list_weights",
    "validate_weights_name",
    "resolve_weights",
    "load_named_model",
]

FORMAT_NAME = "adacsc-map-network"
FORMAT_VERSION = 1
WEIGHTS_SUFFIX = ".safetensors"
_METADATA_KEY = "adacsc"
_MAX_HEADER_BYTES = 100 * 2**20
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


class WeightsError(ValueError):
    """A weights file or name is missing, malformed or does not match the network."""


@dataclass
class ModelInfo:
    """What a weights file says about its network (everything except the tensors)."""

    kind: str
    config: NetworkConfig
    num_filters: int | None = None
    scalars: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    path: Path | None = None

    @property
    def lambda_max(self) -> float:
        return self.config.lambda_max

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "kind": self.kind,
            "num_filters": self.num_filters,
            "config": self.config.to_dict(),
            "lambda_max": self.config.lambda_max,
            "scalars": dict(self.scalars),
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, data: Any, path: Path | None = None) -> "ModelInfo":
        where = f" in {path}" if path is not None else ""
        if not isinstance(data, dict):
            raise WeightsError(f"model metadata{where} must be a JSON object")
        if data.get("format") != FORMAT_NAME:
            raise WeightsError(f"model metadata{where}: 'format' is {data.get('format')!r}, expected {FORMAT_NAME!r}")
        version = data.get("format_version")
        if not isinstance(version, int) or version < 1 or version > FORMAT_VERSION:
            raise WeightsError(
                f"model metadata{where}: unsupported format_version {version!r} (this adacsc reads <= {FORMAT_VERSION})"
            )
        missing = [key for key in ("kind", "config") if key not in data]
        if missing:
            raise WeightsError(f"model metadata{where} lacks {missing}")
        kind = data["kind"]
        if kind not in NETWORK_KINDS:
            raise WeightsError(f"model metadata{where}: unknown network kind {kind!r}; known: {list(NETWORK_KINDS)}")
        try:
            config = NetworkConfig.from_dict(data["config"])
        except (TypeError, ValueError) as exc:
            raise WeightsError(f"model metadata{where}: invalid network config: {exc}") from None
        if "lambda_max" in data and data["lambda_max"] != config.lambda_max:
            raise WeightsError(
                f"model metadata{where}: lambda_max {data['lambda_max']!r} disagrees with the config's "
                f"{config.lambda_max!r}"
            )
        num_filters = data.get("num_filters")
        if kind == "v1":
            if isinstance(num_filters, bool) or not isinstance(num_filters, int) or num_filters < 1:
                raise WeightsError(
                    f"model metadata{where}: a V1 network needs a positive 'num_filters', got {num_filters!r}"
                )
        elif num_filters is not None:
            raise WeightsError(f"model metadata{where}: 'num_filters' must be null for kind {kind!r}")
        scalars = data.get("scalars", {})
        if not isinstance(scalars, dict):
            raise WeightsError(f"model metadata{where}: 'scalars' must be an object")
        for name, value in scalars.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise WeightsError(f"model metadata{where}: scalar {name!r} must be a finite number, got {value!r}")
        provenance = data.get("provenance", {})
        if not isinstance(provenance, dict):
            raise WeightsError(f"model metadata{where}: 'provenance' must be an object")
        return cls(
            kind=kind,
            config=config,
            num_filters=num_filters,
            scalars={str(k): float(v) for k, v in scalars.items()},
            provenance=provenance,
            format_version=version,
            path=path,
        )


# ---------------------------------------------------------------------------------------------
# saving
# ---------------------------------------------------------------------------------------------
def _describe(model: nn.Module) -> tuple[str, NetworkConfig, int | None]:
    if isinstance(model, MapNetwork):
        return "v3", model.config, None
    if isinstance(model, V1MapNetwork):
        return "v1", model.config, model.num_filters
    raise TypeError(f"expected a MapNetwork or V1MapNetwork, got {type(model).__name__}")


def save_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    scalars: dict[str, float] | None = None,
    provenance: dict[str, Any] | None = None,
    overwrite: bool = True,
) -> ModelInfo:
    """Write `model` (MapNetwork or V1MapNetwork) to a safetensors file with its metadata.

    scalars: learned reconstruction scalars (e.g. {"beta": 0.3}); provenance: JSON-serialisable
    description of the training. The file is written atomically (temporary file + rename).
    Returns the ModelInfo that was written.
    """
    path = Path(path)
    if path.suffix != WEIGHTS_SUFFIX:
        raise WeightsError(f"weights files must end with {WEIGHTS_SUFFIX!r}: {path}")
    if path.exists() and not overwrite:
        raise WeightsError(f"refusing to overwrite existing weights file {path}")
    kind, config, num_filters = _describe(model)
    info = ModelInfo(
        kind=kind,
        config=config,
        num_filters=num_filters,
        scalars={str(k): float(v) for k, v in (scalars or {}).items()},
        provenance=dict(provenance or {}),
    )
    ModelInfo.from_dict(info.to_dict())  # validates scalars
    try:
        metadata = {_METADATA_KEY: json.dumps(info.to_dict(), sort_keys=True, allow_nan=False)}
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"model metadata is not JSON-serialisable: {exc}") from None
    write_state(model, path, metadata)
    info.path = path
    return info


def write_state(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """Write a model's state (float32, CPU) and string metadata to a safetensors file, atomically
    (temporary file + rename), readable by everyone like any shipped data file."""
    from safetensors.torch import save_file

    tensors = {
        name: tensor.detach().to(device="cpu", dtype=torch.float32).contiguous().clone()
        for name, tensor in model.state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata=metadata)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def _read_header(path: Path) -> dict[str, Any]:
    """Parse the safetensors header ourselves so that anything else fails with a clear message."""
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    if not path.is_file():
        raise WeightsError(f"weights path is not a file: {path}")
    size = path.stat().st_size
    not_safetensors = f"{path} is not a safetensors file"
    with path.open("rb") as stream:
        prefix = stream.read(8)
        if len(prefix) < 8:
            raise WeightsError(f"{not_safetensors} (only {size} bytes)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len < 2 or header_len > min(_MAX_HEADER_BYTES, size - 8):
            hint = ""
            if prefix[:1] == b"\x80":
                hint = "; it looks like a Python pickle, which adacsc never loads"
            elif prefix[:2] == b"PK":
                hint = "; it looks like a zip archive (e.g. torch.save output), which adacsc never loads"
            raise WeightsError(f"{not_safetensors} (invalid header length {header_len}){hint}")
        raw = stream.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WeightsError(f"{not_safetensors} (header is not JSON)") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{not_safetensors} (header is not a JSON object)")
    data_bytes = size - 8 - header_len
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            raise WeightsError(f"{not_safetensors} (bad header entry for tensor {name!r})")
        offsets = entry["data_offsets"]
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_bytes
        ):
            raise WeightsError(f"{path}: tensor {name!r} points outside the file (truncated or corrupt)")
    return header


def read_model_info(path: str | os.PathLike[str]) -> ModelInfo:
    """The metadata of a weights file, without loading the tensors."""
    path = Path(path)
    return _info_from_header(path, _read_header(path))


def _info_from_header(path: Path, header: dict[str, Any]) -> ModelInfo:
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or _METADATA_KEY not in metadata:
        raise WeightsError(f"{path} is a safetensors file but carries no adacsc model metadata (key {_METADATA_KEY!r})")
    try:
        data = json.loads(metadata[_METADATA_KEY])
    except (TypeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: adacsc metadata is not valid JSON: {exc}") from None
    return ModelInfo.from_dict(data, path=path)


def _check_state(path: Path, header: dict[str, Any], model: nn.Module) -> None:
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    stored = {name: entry for name, entry in header.items() if name != "__metadata__"}
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing tensors {missing}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected}")
    for name in sorted(set(expected) & set(stored)):
        shape = tuple(stored[name]["shape"])
        if shape != expected[name]:
            problems.append(f"tensor {name!r} has shape {list(shape)}, the network expects {list(expected[name])}")
        if stored[name]["dtype"] not in _DTYPES:
            problems.append(f"tensor {name!r} has dtype {stored[name]['dtype']}, expected a float type")
    if problems:
        raise WeightsError(f"{path} does not match its declared network: " + "; ".join(problems))


def load_model(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[MapNetwork | V1MapNetwork, ModelInfo]:
    """Load a network from a weights file. Returns (network in eval mode on `device`, ModelInfo).

    Raises WeightsError naming the problem for a missing file, a file that is not safetensors
    (a pickle is refused, never unpickled), missing metadata, missing/unexpected tensors, shape or
    dtype mismatches and non-finite values.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    header = _read_header(path)
    info = _info_from_header(path, header)
    model = build_network(info.kind, info.config, info.num_filters)
    _check_state(path, header, model)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise WeightsError(f"cannot read tensors from {path}: {exc}") from None
    state = {}
    for name, tensor in tensors.items():
        tensor = tensor.to(torch.float32)
        if not torch.isfinite(tensor).all():
            raise WeightsError(f"{path}: tensor {name!r} contains NaN or Inf values")
        state[name] = tensor
    model.load_state_dict(state, strict=True)
    model.to(device)
    model.eval()
    return model, info


# ---------------------------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------------------------
def shipped_weights_dir() -> Path:
    """The folder of the weights shipped with the package (adacsc/data/weights)."""
    return Path(__file__).resolve().parent.parent / "data" / "weights"


def validate_weights_name(name: str) -> str:
    """Check a weights name and return the file name (with the .safetensors suffix).

    A name is a name, not a path: letters, digits, '.', '_' and '-', not starting with '.', no
    separators, no '..'.
    """
    if not isinstance(name, str) or not name:
        raise WeightsError(f"weights name must be a non-empty string, got {name!r}")
    if "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
        raise WeightsError(f"weights name {name!r} must not contain path separators (give a name, not a path)")
    if ".." in name:
        raise WeightsError(f"weights name {name!r} must not contain '..'")
    if os.path.isabs(name) or not _NAME_PATTERN.fullmatch(name):
        raise WeightsError(
            f"invalid weights name {name!r}: use letters, digits, '.', '_' and '-', starting with a letter or digit"
        )
    return name if name.endswith(WEIGHTS_SUFFIX) else name + WEIGHTS_SUFFIX


def list_weights(weights_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Names (without suffix) of the weights in `weights_dir` (default: the shipped folder)."""
    folder = Path(weights_dir) if weights_dir is not None else shipped_weights_dir()
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(WEIGHTS_SUFFIX)] for p in folder.glob(f"*{WEIGHTS_SUFFIX}") if p.is_file())


def resolve_weights(
    name: str,
    weights_dir: str | os.PathLike[str] | None = None,
    *,
    search_shipped: bool = True,
) -> Path:
    """Path of the weights called `name`: first in the operator folder `weights_dir` (if given),
    then among the shipped weights (unless search_shipped is False)."""
    filename = validate_weights_name(name)
    folders: list[Path] = []
    if weights_dir is not None:
        folder = Path(weights_dir)
        if not folder.is_dir():
            raise WeightsError(f"configured weights folder does not exist: {folder}")
        folders.append(folder)
    if search_shipped:
        folders.append(shipped_weights_dir())
    for folder in folders:
        candidate = folder / filename
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(f) for f in folders) or "(no folder)"
    available = sorted({n for f in folders for n in list_weights(f)})
    raise WeightsError(f"no weights named {name!r} in {searched}; available: {available or 'none'}")


def load_named_model(
    name: str,
    weights_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    *,
    search_shipped: bool = True,
) -> tuple[MapNetwork | V1MapNetwork, ModelInfo]:
    """resolve_weights + load_model."""
    return load_model(resolve_weights(name, weights_dir, search_shipped=search_shipped), device)
