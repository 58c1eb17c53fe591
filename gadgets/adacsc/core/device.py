"""Choosing the torch device: the core is device-agnostic and runs on CUDA when one is present."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:[0-9]{1,2})?")


def parse_device_name(text: str) -> str:
    """A device property value checked without touching torch: auto, cpu, mps, cuda or cuda:N."""
    name = text.strip()
    if not _DEVICE_NAME.fullmatch(name):
        raise ValueError(f"{text!r} is not a device adacsc runs on (auto, cpu, mps, cuda, cuda:N)")
    return name


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else MPS when available, else CPU; else the named device,
    checked (a CUDA device without CUDA is an error naming the problem)."""
    import torch  # here, so that checking a device name does not import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(parse_device_name(name))
    except RuntimeError as err:
        raise ValueError(f"device {name!r} is not a torch device") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device
