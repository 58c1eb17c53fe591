"""Dictionary files: the .npz format, read without pickles, and loading by name.

File format (`.npz`, read with allow_pickle=False):
  filters        float32 [K, h, w]
  metadata_json  0-d unicode array holding a JSON object: at least "name" and "source"
                 (provenance), usually also "patch_size", "num_filters", "created_by" (the
                 command that made the file) and a free-text "description".
Names are resolved by adacsc.resources (shipped dictionaries and the operator's folder).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from adacsc import resources
from adacsc.core.dictionary import Dictionary, DictionaryError

__all__ = ["save_dictionary", "load_dictionary", "load_named_dictionary"]

log = logging.getLogger(__name__)


def save_dictionary(d: Dictionary, path: str | os.PathLike) -> Path:
    """Write a dictionary as .npz (filters + metadata_json); returns the path written."""
    path = Path(path)
    if path.suffix != ".npz":
        raise DictionaryError(f"dictionary files must end in .npz, got {path.name!r}")
    meta = json.dumps(d.full_metadata(), sort_keys=True)
    with open(path, "wb") as fh:  # an open file keeps np.savez from altering the name
        np.savez(fh, filters=d.filters.astype(np.float32), metadata_json=np.array(meta))
    log.debug("wrote dictionary %s to %s", d.name, path)
    return path


def load_dictionary(path: str | os.PathLike) -> Dictionary:
    """Read and validate a dictionary .npz file (no pickles)."""
    path = Path(path)
    if not path.is_file():
        raise DictionaryError(f"dictionary file {str(path)!r} does not exist or is not a file")
    _check_archive(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            missing = {"filters", "metadata_json"} - keys
            if missing:
                raise DictionaryError(
                    f"dictionary file {path.name!r} lacks array(s) {sorted(missing)} (has {sorted(keys)})")
            filters = data["filters"]
            meta_raw = data["metadata_json"]
    except DictionaryError:
        raise
    except (OSError, ValueError) as exc:
        raise DictionaryError(f"cannot read dictionary file {path.name!r}: {exc}") from exc
    if meta_raw.ndim != 0 or meta_raw.dtype.kind != "U":
        raise DictionaryError(f"{path.name!r}: metadata_json must be a single string")
    try:
        meta = json.loads(str(meta_raw))
    except json.JSONDecodeError as exc:
        raise DictionaryError(f"{path.name!r}: metadata_json is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise DictionaryError(f"{path.name!r}: metadata_json must hold a JSON object")
    name = meta.pop("name", None) or path.stem
    source = meta.pop("source", "")
    for key in ("num_filters", "patch_size"):
        meta.pop(key, None)  # derived from the filters; recomputed on save
    return Dictionary(filters, str(name), str(source), meta)


def _check_archive(path: Path) -> None:
    """DictionaryError naming the file when it is not an .npz archive (empty, a bare .npy, text)."""
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if not magic:
        raise DictionaryError(f"dictionary file {path.name!r} is empty")
    if magic == b"\x93NUMPY":
        raise DictionaryError(f"dictionary file {path.name!r} is a single .npy array, not an .npz archive "
                              "(save it with numpy.savez(path, filters=..., metadata_json=...))")
    if not magic.startswith(b"PK\x03\x04"):
        raise DictionaryError(f"dictionary file {path.name!r} is not an .npz archive (it starts with {magic!r})")


def load_named_dictionary(name: str) -> Dictionary:
    """The dictionary called `name` (adacsc.resources), loaded and validated."""
    path = resources.resolve(resources.DICTIONARY, name)
    d = load_dictionary(path)
    log.info("dictionary %s: K=%d, %dx%d, from %s", d.name, d.num_filters, *d.filter_shape, path)
    return d
