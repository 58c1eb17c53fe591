"""BART `pics` as a comparison baseline on the simulated low-field task (numpy in, numpy out).

`pics` solves, per image, min_x 1/2 ||P F x - y||^2 + lam R(x) on the H x W grid, with F the
centred unitary 2-D FFT, P the acquired centred block, one coil of sensitivity 1 and R an l1 norm
of Daubechies (dau2) wavelet coefficients or isotropic total variation over the two image axes.
Conventions, measured with BART 0.8.00 (tests/test_bart.py checks the first two):

* BART's centred unitary FFT equals `adacsc.mr.fft.fftc` (also for odd sizes), and `pics` uses it
  unscaled: with full sampling, no noise and a tiny lambda the output is x (relative error < 1e-6).
* `-w 1`: by default `pics` divides the data by a scale estimated from the zero-filled image (its
  90th percentile magnitude) and returns the image in those units; `-w 1` keeps our units, so
  lambda weighs our data term and the output needs no rescaling.
* `-m` (ADMM) for both regularisers. BART 0.8 picks ADMM for TV itself but FISTA for a single
  wavelet term, and its FISTA returns the iterate after the final gradient step, not the proximal
  point: in the acquired block that is 0.05 x solution + 0.95 x data, noise included.
* `-p`: the sampling pattern is passed explicitly, so a measured sample that happens to be zero is
  not taken for an unacquired one.
* Wavelet cycle spinning (BART's default, kept): the wavelet grid is shifted randomly at every
  iteration, by a generator BART resets at each call, so results are reproducible bit for bit; one
  call per image makes them independent of the batching too. `random_shifts=False` (`-n`) gives a
  fixed convex objective instead, which ADMM converges to; on validation brain slices it was worse
  at noise 0.05 and better at 0.15 (each at its best lambda), so it is worth tuning as well.
* `OMP_NUM_THREADS` is set for BART (1 by default): single images are small, and OpenMP threads on
  a busy CPU slowed BART down by 10-50x.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["BartError", "REGULARISERS", "find_bart", "bart_version", "pics"]

log = logging.getLogger(__name__)

#: Regulariser name -> BART `-R` term without its weight: l1 in a Daubechies wavelet domain, or
#: total variation, over BART dims 0 and 1 (our image axes), no joint thresholding flags.
REGULARISERS: dict[str, str] = {"wavelet": "W:3:0", "tv": "T:3:0"}

_STDERR_TAIL = 2000  # characters of BART's output quoted in a BartError


class BartError(RuntimeError):
    """BART is missing, or a BART command failed."""


def find_bart() -> str:
    """Path of the `bart` executable: on PATH, else $BART_TOOLBOX_PATH/bart."""
    found = shutil.which("bart")
    if found:
        return found
    toolbox = os.environ.get("BART_TOOLBOX_PATH")
    if toolbox:
        candidate = Path(toolbox) / "bart"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise BartError("BART (`bart`) not found on PATH or in $BART_TOOLBOX_PATH: install the Debian package `bart`")


def _run(args: list[str], *, cwd: Path | None = None, threads: int | None = None) -> str:
    """Run a BART command; its stdout, or BartError naming the command and its output's tail."""
    env = None if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = " ".join(args)
    try:
        done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise BartError(f"cannot run `{command}`: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip())[-_STDERR_TAIL:]
        raise BartError(f"`{command}` failed with exit status {done.returncode}: {tail or '(no output)'}")
    return done.stdout


def bart_version(bart: str | None = None) -> str:
    """BART's version string, e.g. 'v0.8.00'."""
    return _run([bart or find_bart(), "version"]).strip()


def _write_cfl(base: Path, array: np.ndarray) -> None:
    """BART's file pair: dims in base.hdr, complex64 samples in column-major order in base.cfl."""
    base.with_suffix(".hdr").write_text("# Dimensions\n" + " ".join(str(n) for n in array.shape) + "\n")
    np.asarray(array, dtype=np.complex64).ravel(order="F").tofile(base.with_suffix(".cfl"))


def _read_cfl(base: Path) -> np.ndarray:
    """Inverse of `_write_cfl` (BART writes all 16 dims)."""
    lines = base.with_suffix(".hdr").read_text().splitlines()
    dims = [int(n) for n in lines[1].split()]
    data = np.fromfile(base.with_suffix(".cfl"), dtype=np.complex64)
    if data.size != math.prod(dims):
        raise BartError(f"{base}.cfl holds {data.size} samples, its header says {dims}")
    return data.reshape(dims, order="F")


def pics(kspace: np.ndarray, grid_shape: tuple[int, int], regulariser: str, lam: float, *,
         iterations: int = 100, random_shifts: bool = True, threads: int = 1,
         bart: str | None = None) -> np.ndarray:
    """Reconstruct images [N, H, W] (or [H, W]) complex64 from centred k-space blocks [N, h, w]
    (or [h, w]) with BART `pics`, in the units and FFT convention of `adacsc.training.lowfield`.

    regulariser: a key of REGULARISERS; lam: its weight (objective in the module docstring);
    iterations: ADMM iterations (`-i`); random_shifts: wavelet cycle spinning (else `-n`);
    threads: OMP_NUM_THREADS for BART; bart: the executable (default `find_bart()`).
    """
    if regulariser not in REGULARISERS:
        raise ValueError(f"unknown regulariser {regulariser!r}; choose one of {sorted(REGULARISERS)}")
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be finite and >= 0, got {lam}")
    if int(iterations) != iterations or iterations < 1:
        raise ValueError(f"iterations must be a positive int, got {iterations}")
    if int(threads) != threads or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads}")
    data = np.asarray(kspace)
    single = data.ndim == 2
    if single:
        data = data[None]
    if data.ndim != 3:
        raise ValueError(f"kspace must be [N, h, w] or [h, w], got shape {np.shape(kspace)}")
    try:
        H, W = (int(n) for n in grid_shape)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"grid_shape must be a pair of ints, got {grid_shape!r}") from exc
    h, w = data.shape[-2:]
    if not (1 <= h <= H and 1 <= w <= W):
        raise ValueError(f"k-space block {h}x{w} does not fit the grid {H}x{W}")
    exe = bart or find_bart()

    # the block's DC sample (index h//2) sits on the grid's DC sample (index H//2)
    block = (slice(H // 2 - h // 2, H // 2 - h // 2 + h), slice(W // 2 - w // 2, W // 2 - w // 2 + w))
    pattern = np.zeros((H, W, 1, 1), dtype=np.complex64)
    pattern[block] = 1
    args = [exe, "pics", "-m", "-w", "1", "-i", str(int(iterations)),
            "-R", f"{REGULARISERS[regulariser]}:{lam:.9g}", "-p", "pattern"]
    if not random_shifts:
        args.append("-n")
    args += ["kspace", "sens", "image"]

    out = np.empty((data.shape[0], H, W), dtype=np.complex64)
    with tempfile.TemporaryDirectory(prefix="adacsc-bart-") as tmp:
        folder = Path(tmp)
        _write_cfl(folder / "sens", np.ones((H, W, 1, 1), dtype=np.complex64))
        _write_cfl(folder / "pattern", pattern)
        for i, block_data in enumerate(data):
            grid = np.zeros((H, W, 1, 1), dtype=np.complex64)
            grid[block] = block_data[:, :, None, None]
            _write_cfl(folder / "kspace", grid)
            start = time.perf_counter()
            _run(args, cwd=folder, threads=int(threads))
            out[i] = _read_cfl(folder / "image").reshape(H, W)
            log.debug("bart pics %s lam %g, image %d/%d (%dx%d -> %dx%d): %.2f s", regulariser, lam,
                      i + 1, data.shape[0], h, w, H, W, time.perf_counter() - start)
    return out[0] if single else out
