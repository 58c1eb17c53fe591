"""What the operator configures for the process (an environment variable, set by the deployment):
how many slices a process reconstructs at once. The operator's folders are read by
adacsc.resources."""

import os

SLICE_WORKERS = "ADACSC_SLICE_WORKERS"


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
