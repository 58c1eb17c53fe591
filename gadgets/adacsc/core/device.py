"""Choosing the torch device: the core is device-agnostic and runs on CUDA when one is present."""

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else MPS when available, else CPU; else the named device,
    checked (a CUDA device without CUDA is an error naming the problem)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device {name!r} is not a torch device") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device
