"""Analytic (not learned) dictionaries.

They let the product run before learned dictionaries exist:
  dct{n}x{n}_k{n*n-1}: the separable orthonormal 2-D DCT-II basis of n x n patches without the DC
      atom (the low-pass part x_low carries the mean), ordered by increasing frequency u+v.
  gabor{n}x{n}_k{K}: real Gabor atoms (cosine and sine phase) on a grid of orientations and
      wavelengths with a Gaussian envelope; the DC is removed by subtracting a multiple of the
      envelope, then every atom is normalised.

Regenerate the shipped files with
    adacsc dictionaries --write-analytic gadgets/adacsc/data/dictionaries
"""

from __future__ import annotations

import math

import numpy as np

from adacsc.core.dictionary import Dictionary, DictionaryError

__all__ = ["dct_dictionary", "gabor_dictionary", "shipped_dictionaries"]


_COMMAND = "adacsc dictionaries --write-analytic gadgets/adacsc/data/dictionaries"


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II basis vectors as rows: C[u, x]."""
    x = np.arange(n)
    c = np.cos(np.pi * (2 * x[None, :] + 1) * np.arange(n)[:, None] / (2 * n))
    c[0] *= 1 / math.sqrt(2)
    return c * math.sqrt(2 / n)


def dct_dictionary(size: int = 7) -> Dictionary:
    """2-D DCT-II atoms of size x size without DC: size**2 - 1 filters."""
    if size < 3 or size % 2 == 0:
        raise DictionaryError(f"dct_dictionary: size must be odd and >= 3, got {size}")
    c = _dct_matrix(size)
    pairs = sorted(((u, v) for u in range(size) for v in range(size) if (u, v) != (0, 0)),
                   key=lambda p: (p[0] + p[1], p[0]))
    filters = np.stack([np.outer(c[u], c[v]) for u, v in pairs])
    k = len(pairs)
    return Dictionary(
        filters, f"dct{size}x{size}_k{k}",
        source="analytic: separable orthonormal 2-D DCT-II basis without the DC atom",
        metadata={"created_by": _COMMAND, "kind": "dct",
                  "description": f"{size}x{size} DCT-II atoms (u, v) != (0, 0), sorted by u+v then u",
                  "frequencies": [list(p) for p in pairs]})


def gabor_dictionary(size: int = 9, orientations: int = 8,
                     wavelengths: tuple[float, ...] = (3.0, 6.0), sigma: float | None = None) -> Dictionary:
    """Real Gabor atoms (cos and sin phase), zero DC, unit norm: 2 * orientations * len(wavelengths)."""
    if size < 3 or size % 2 == 0:
        raise DictionaryError(f"gabor_dictionary: size must be odd and >= 3, got {size}")
    sigma = size / 4.0 if sigma is None else float(sigma)
    r = np.arange(size) - size // 2
    yy, xx = np.meshgrid(r, r, indexing="ij")
    envelope = np.exp(-(xx ** 2 + yy ** 2) / (2 * sigma ** 2))
    filters, params = [], []
    for lam in wavelengths:
        for o in range(orientations):
            theta = math.pi * o / orientations
            along = xx * math.cos(theta) + yy * math.sin(theta)
            for phase_name, wave in (("cos", np.cos), ("sin", np.sin)):
                atom = envelope * wave(2 * math.pi * along / lam)
                atom = atom - envelope * (atom.sum() / envelope.sum())  # remove DC smoothly
                filters.append(atom / np.linalg.norm(atom))
                params.append({"wavelength": lam, "theta_deg": round(math.degrees(theta), 3), "phase": phase_name})
    k = len(filters)
    return Dictionary(
        np.stack(filters), f"gabor{size}x{size}_k{k}",
        source="analytic: real Gabor atoms, Gaussian envelope, DC removed, unit l2 norm",
        metadata={"created_by": _COMMAND, "kind": "gabor", "sigma": sigma,
                  "orientations": orientations, "wavelengths": list(wavelengths), "atoms": params,
                  "description": f"{orientations} orientations x {len(wavelengths)} wavelengths x cos/sin"})


def shipped_dictionaries() -> list[Dictionary]:
    """The analytic dictionaries shipped in adacsc/data/dictionaries."""
    return [dct_dictionary(7), dct_dictionary(9), gabor_dictionary(9, 8, (3.0, 6.0)),
            gabor_dictionary(11, 8, (3.0, 5.0, 8.0, 12.0))]
