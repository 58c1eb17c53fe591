"""The weights file of a map network: a safetensors file with its description as JSON metadata.

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

The header is read by the safetensors library; files are written atomically
(adacsc.io.output_file). Weights are found by name with adacsc.resources.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from adacsc import resources
from adacsc.core.network import NETWORK_KINDS, MapNetwork, NetworkConfig, V1MapNetwork, build_network
from adacsc.io.output_file import atomic_output

__all__ = ["WeightsError", "ModelInfo", "FORMAT_NAME", "FORMAT_VERSION", "save_model", "write_state",
           "load_model", "read_model_info", "load_named_model"]

FORMAT_NAME = "adacsc-map-network"
FORMAT_VERSION = 1
_METADATA_KEY = "adacsc"
_FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")


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


def _describe(model: nn.Module) -> tuple[str, NetworkConfig, int | None]:
    if isinstance(model, MapNetwork):
        return "v3", model.config, None
    if isinstance(model, V1MapNetwork):
        return "v1", model.config, model.num_filters
    raise TypeError(f"expected a MapNetwork or V1MapNetwork, got {type(model).__name__}")


def save_model(model: nn.Module, path: str | os.PathLike[str], *, scalars: dict[str, float] | None = None,
               provenance: dict[str, Any] | None = None, overwrite: bool = True) -> ModelInfo:
    """Write `model` (MapNetwork or V1MapNetwork) to a safetensors file with its metadata.

    scalars: learned reconstruction scalars (e.g. {"beta": 0.3}); provenance: JSON-serialisable
    description of the training. Returns the ModelInfo that was written.
    """
    path = Path(path)
    if path.suffix != resources.WEIGHTS.suffix:
        raise WeightsError(f"weights files must end with {resources.WEIGHTS.suffix!r}: {path}")
    if path.exists() and not overwrite:
        raise WeightsError(f"refusing to overwrite existing weights file {path}")
    kind, config, num_filters = _describe(model)
    info = ModelInfo(kind=kind, config=config, num_filters=num_filters,
                     scalars={str(k): float(v) for k, v in (scalars or {}).items()},
                     provenance=dict(provenance or {}))
    ModelInfo.from_dict(info.to_dict())  # validates scalars
    try:
        metadata = {_METADATA_KEY: json.dumps(info.to_dict(), sort_keys=True, allow_nan=False)}
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"model metadata is not JSON-serialisable: {exc}") from None
    write_state(model, path, metadata)
    info.path = path
    return info


def write_state(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """Write a model's state (float32, CPU) and string metadata to a safetensors file, atomically,
    readable by everyone like any shipped data file."""
    tensors = {name: tensor.detach().to(device="cpu", dtype=torch.float32).contiguous().clone()
               for name, tensor in model.state_dict().items()}
    with atomic_output(path, overwrite=True) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
        os.chmod(temporary, 0o644)


def _not_safetensors(path: Path, reason: object) -> WeightsError:
    """The error for a file the safetensors library refuses, naming what the file looks like."""
    with path.open("rb") as stream:
        start = stream.read(2)
    hint = ""
    if start[:1] == b"\x80":
        hint = "; it looks like a Python pickle, which adacsc never loads"
    elif start == b"PK":
        hint = "; it looks like a zip archive (e.g. torch.save output), which adacsc never loads"
    return WeightsError(f"{path} is not a safetensors file, or it is truncated or corrupt ({reason}){hint}")


def _read_header(path: Path) -> tuple[dict[str, str], dict[str, tuple[list[int], str]]]:
    """(string metadata, {tensor name: (shape, dtype)}) of a safetensors file, read by the library."""
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    if not path.is_file():
        raise WeightsError(f"weights path is not a file: {path}")
    try:
        with safe_open(str(path), framework="pt") as stream:
            metadata = stream.metadata() or {}
            slices = {name: stream.get_slice(name) for name in stream.keys()}
            tensors = {name: (part.get_shape(), part.get_dtype()) for name, part in slices.items()}
    except SafetensorError as exc:
        raise _not_safetensors(path, exc) from None
    return metadata, tensors


def _info(path: Path, metadata: dict[str, str]) -> ModelInfo:
    if _METADATA_KEY not in metadata:
        raise WeightsError(f"{path} is a safetensors file but carries no adacsc model metadata (key {_METADATA_KEY!r})")
    try:
        data = json.loads(metadata[_METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path}: adacsc metadata is not valid JSON: {exc}") from None
    return ModelInfo.from_dict(data, path=path)


def read_model_info(path: str | os.PathLike[str]) -> ModelInfo:
    """The metadata of a weights file, without loading the tensors."""
    path = Path(path)
    return _info(path, _read_header(path)[0])


def _check_state(path: Path, stored: dict[str, tuple[list[int], str]], model: nn.Module) -> None:
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing tensors {missing}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected}")
    for name in sorted(set(expected) & set(stored)):
        shape, dtype = stored[name]
        if tuple(shape) != expected[name]:
            problems.append(f"tensor {name!r} has shape {list(shape)}, the network expects {list(expected[name])}")
        if dtype not in _FLOAT_DTYPES:
            problems.append(f"tensor {name!r} has dtype {dtype}, expected a float type")
    if problems:
        raise WeightsError(f"{path} does not match its declared network: " + "; ".join(problems))


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu"
               ) -> tuple[MapNetwork | V1MapNetwork, ModelInfo]:
    """Load a network from a weights file. Returns (network in eval mode on `device`, ModelInfo).

    Raises WeightsError naming the problem for a missing file, a file that is not safetensors
    (a pickle is refused, never unpickled), missing metadata, missing/unexpected tensors, shape or
    dtype mismatches and non-finite values.
    """
    path = Path(path)
    metadata, stored = _read_header(path)
    info = _info(path, metadata)
    model = build_network(info.kind, info.config, info.num_filters)
    _check_state(path, stored, model)
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


def load_named_model(name: str, device: str | torch.device = "cpu"
                     ) -> tuple[MapNetwork | V1MapNetwork, ModelInfo]:
    """The weights called `name` (adacsc.resources), loaded."""
    return load_model(resources.resolve(resources.WEIGHTS, name), device)
