"""pytest plugin (`-p support.without_mricron`): the run behaves as on a machine without mricron-data."""

from pathlib import Path

from adacsc.simulation import brain

brain.DEFAULT_BRAIN_VOLUME = Path("/nonexistent/mricron/ch2better.nii.gz")
