"""Convolutional dictionaries as data: a dataclass and its validation (files: adacsc.io.dictionary_file).

Validation rules (violations raise DictionaryError, a ValueError):
  - filters are a real 3-D array [K, h, w] with K >= 1;
  - a filter has a centre pixel, which the convolution places at the grid origin. Odd sizes have
    one; for an even size the centre is pixel h // 2 (w // 2), the convention of numpy's fftshift
    (the lower right of the four central pixels). Even-sized filters (e.g. SPORCO's 8x8 and 12x12)
    are zero-padded by one row (column) at the bottom (right), which keeps that centre and gives
    the odd size the solver and the network work with (logged);
  - all values finite, no all-zero filter;
  - every filter is normalised to unit l2 norm (renormalising is logged, not an error).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Dictionary",
    "DictionaryError",
    "validate_filters",
    "random_dictionary",
]

log = logging.getLogger(__name__)

_NORM_TOLERANCE = 1e-4


class DictionaryError(ValueError):
    """A dictionary file, name or filter bank is invalid."""


def validate_filters(filters: Any, name: str = "dictionary") -> np.ndarray:
    """Check a filter bank and return it as float32 [K, h, w] with unit-norm filters."""
    arr = np.asarray(filters)
    if np.iscomplexobj(arr) or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise DictionaryError(f"{name}: filters must be real numbers, got dtype {arr.dtype}")
    if arr.ndim != 3:
        raise DictionaryError(f"{name}: filters must be a 3-D array [K, h, w], got shape {arr.shape}")
    k, h, w = arr.shape
    if k < 1:
        raise DictionaryError(f"{name}: the dictionary has no filters (K = 0)")
    if h % 2 == 0 or w % 2 == 0:
        arr = np.pad(arr, ((0, 0), (0, 1 - h % 2), (0, 1 - w % 2)))
        log.info("%s: even filter size %dx%d zero-padded to %dx%d (centre pixel %d, %d kept)", name, h, w,
                 *arr.shape[1:], h // 2, w // 2)
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise DictionaryError(f"{name}: filters contain NaN or infinite values")
    norms = np.sqrt((arr ** 2).sum(axis=(1, 2)))
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise DictionaryError(f"{name}: filter(s) {zero.tolist()} are all zero")
    off = np.abs(norms - 1.0) > _NORM_TOLERANCE
    if off.any():
        log.info("%s: renormalising %d of %d filters to unit l2 norm (norms %.4g..%.4g)",
                 name, int(off.sum()), k, norms.min(), norms.max())
    return (arr / norms[:, None, None]).astype(np.float32)


@dataclass
class Dictionary:
    """A bank of K real, odd-sized (even sizes are padded), unit-norm 2-D filters with its provenance.

    filters: float32 [K, h, w] (validated and normalised on construction)
    name: short registry-style name, e.g. "dct7x7_k48"
    source: where it came from (analytic construction, learning run, file ...)
    metadata: free JSON-serialisable details (patch size, creation command, ...)
    """

    filters: np.ndarray
    name: str
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise DictionaryError("a dictionary needs a non-empty name")
        self.filters = validate_filters(self.filters, self.name)
        try:
            json.dumps(self.metadata)
        except (TypeError, ValueError) as exc:
            raise DictionaryError(f"{self.name}: metadata must be JSON-serialisable: {exc}") from exc

    @property
    def num_filters(self) -> int:
        return int(self.filters.shape[0])

    @property
    def filter_shape(self) -> tuple[int, int]:
        return int(self.filters.shape[1]), int(self.filters.shape[2])

    def full_metadata(self) -> dict[str, Any]:
        """Metadata as written to file: the free fields plus name, source, K and patch size."""
        meta = dict(self.metadata)
        meta.update(name=self.name, source=self.source, num_filters=self.num_filters,
                    patch_size=list(self.filter_shape))
        return meta

    def permuted(self, order: Any) -> "Dictionary":
        """The same dictionary with its filters reordered (for permutation experiments)."""
        order = np.asarray(order)
        if sorted(order.tolist()) != list(range(self.num_filters)):
            raise DictionaryError(f"{self.name}: {order.tolist()} is not a permutation of the filter indices")
        return Dictionary(self.filters[order], self.name, self.source,
                          {**self.metadata, "permutation": order.tolist()})

    def __repr__(self) -> str:
        h, w = self.filter_shape
        return f"Dictionary({self.name!r}, K={self.num_filters}, {h}x{w}, source={self.source!r})"


def random_dictionary(num_filters: int, size: int | tuple[int, int] = 7, seed: int = 0,
                      zero_mean: bool = True) -> Dictionary:
    """K i.i.d. Gaussian filters (optionally zero-mean), unit norm: for tests and training."""
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if num_filters < 1:
        raise DictionaryError(f"random_dictionary: num_filters must be >= 1, got {num_filters}")
    rng = np.random.default_rng(seed)
    filters = rng.standard_normal((num_filters, h, w))
    if zero_mean and h * w > 1:
        filters -= filters.mean(axis=(1, 2), keepdims=True)
    filters /= np.sqrt((filters ** 2).sum(axis=(1, 2), keepdims=True))
    return Dictionary(
        filters, f"random{h}x{w}_k{num_filters}_s{seed}",
        source="i.i.d. Gaussian filters" + (", zero mean" if zero_mean else "") + ", unit l2 norm",
        metadata={"created_by": f"adacsc.core.dictionary.random_dictionary({num_filters}, ({h}, {w}), "
                                f"seed={seed}, zero_mean={zero_mean})"})
