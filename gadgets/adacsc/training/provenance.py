"""Provenance of a training run: which commit and which software produced the weights.

Recorded with the weights and in summary.json so a result can be traced back to its code.
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["git_commit", "software_versions"]


def git_commit(path: Path | None = None) -> dict[str, Any]:
    """{"commit": HEAD or None, "dirty": bool or None} of the repository holding this file."""
    here = path or Path(__file__).resolve().parent
    info: dict[str, Any] = {"commit": None, "dirty": None}
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            info["commit"] = out.stdout.strip() or None
            st = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                capture_output=True, text=True, timeout=30)
            if st.returncode == 0:
                info["dirty"] = bool(st.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def software_versions() -> dict[str, str]:
    """Versions of torch, Python and numpy, which decide the floating-point results."""
    return {"torch": torch.__version__, "python": platform.python_version(), "numpy": np.__version__}
