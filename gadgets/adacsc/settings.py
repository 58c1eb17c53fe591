"""What the operator configures (environment variables, set by `adacsc serve` options or the
deployment): folders, and how many slices a process reconstructs at once. Chain properties and
client messages never choose a folder: they name files inside these folders at most."""

import os
from pathlib import Path

NOISE_DIR = "ADACSC_NOISE_DIR"
DICTIONARY_DIR = "ADACSC_DICTIONARY_DIR"
WEIGHTS_DIR = "ADACSC_WEIGHTS_DIR"
SLICE_WORKERS = "ADACSC_SLICE_WORKERS"


def noise_dir() -> Path:
    """Where noise covariances are stored: $ADACSC_NOISE_DIR, else ~/.cache/adacsc/noise."""
    configured = os.environ.get(NOISE_DIR)
    return Path(configured) if configured else Path.home() / ".cache" / "adacsc" / "noise"


def dictionary_dir() -> Path | None:
    """The operator's folder of extra dictionary files ($ADACSC_DICTIONARY_DIR), or None."""
    configured = os.environ.get(DICTIONARY_DIR)
    return Path(configured) if configured else None


def weights_dir() -> Path | None:
    """The operator's folder of extra weight files ($ADACSC_WEIGHTS_DIR), or None."""
    configured = os.environ.get(WEIGHTS_DIR)
    return Path(configured) if configured else None


def slice_workers() -> int | None:
    """Slices reconstructed at once per process ($ADACSC_SLICE_WORKERS), or None: one per core."""
    configured = os.environ.get(SLICE_WORKERS, "").strip()
    if not configured:
        return None
    try:
        workers = int(configured)
    except ValueError:
        raise ValueError(f"${SLICE_WORKERS} must be a whole number >= 1, got {configured!r}") from None
    if workers < 1:
        raise ValueError(f"${SLICE_WORKERS} must be a whole number >= 1, got {configured!r}")
    return workers
