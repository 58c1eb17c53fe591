"""Named dictionaries: the ones shipped in the package and files in an operator-chosen folder.

A dictionary is chosen by *name*, never by path:
  - a registry name ("dct7x7_k48"): the file NAME.npz shipped in adacsc/data/dictionaries;
  - a file name ("site_brain_k64.npz", or "site_brain_k64" when no shipped dictionary has that
    name) that must exist directly inside the operator-configured `dictionary_dir`.
Names may contain letters, digits, '_', '-' and '.', must start with a letter or digit, and may
not contain path separators or '..'. A file that resolves (through symlinks) outside
`dictionary_dir` is rejected. Shipped names take precedence over same-named files.
"""

from __future__ import annotations

import logging
import os
import re
from importlib import resources
from pathlib import Path

from adacsc.core.dictionary import Dictionary, DictionaryError, load_dictionary

__all__ = ["SHIPPED_DIR", "list_dictionaries", "resolve_dictionary", "get_dictionary",
           "DEFAULT_DICTIONARY"]

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(str(resources.files("adacsc") / "data" / "dictionaries"))
DEFAULT_DICTIONARY = "cdl_k32_9x9_l0.01"

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


def list_dictionaries(dictionary_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the shipped dictionaries (sorted); with `dictionary_dir` also its .npz file names."""
    names = sorted(p.stem for p in SHIPPED_DIR.glob("*.npz") if p.is_file())
    if dictionary_dir is not None:
        folder = Path(dictionary_dir)
        if folder.is_dir():
            names += sorted(p.name for p in folder.glob("*.npz") if p.is_file())
    return names


def _check_name(name: str) -> str:
    if not isinstance(name, (str, os.PathLike)):
        raise DictionaryError(f"a dictionary name must be a string, got {type(name).__name__}")
    name = os.fspath(name)
    if not name:
        raise DictionaryError("empty dictionary name")
    if os.path.isabs(name) or "/" in name or "\\" in name or os.sep in name:
        raise DictionaryError(
            f"dictionary {name!r}: give a registry name or a file name inside the dictionary folder, "
            "not a path")
    if ".." in name or not _NAME_RE.fullmatch(name):
        raise DictionaryError(
            f"dictionary name {name!r} is invalid: use letters, digits, '_', '-', '.' "
            "(starting with a letter or digit, no '..')")
    return name


def _inside(folder: Path, file_name: str) -> Path:
    """folder/file_name, verified to be a regular file that resolves inside folder."""
    root = folder.resolve(strict=True)
    candidate = root / file_name
    if not candidate.exists():
        raise DictionaryError(f"dictionary file {file_name!r} not found in {str(folder)!r}")
    real = candidate.resolve(strict=True)
    if not real.is_relative_to(root):
        raise DictionaryError(
            f"dictionary file {file_name!r} resolves outside the dictionary folder {str(folder)!r}; refused")
    if not real.is_file():
        raise DictionaryError(f"dictionary {file_name!r} in {str(folder)!r} is not a regular file")
    return real


def resolve_dictionary(name_or_file: str, dictionary_dir: str | os.PathLike | None = None) -> Path:
    """Map a registry name or a file name in `dictionary_dir` to the file to load."""
    name = _check_name(name_or_file)
    folder = Path(dictionary_dir) if dictionary_dir is not None else None
    if folder is not None and not folder.is_dir():
        raise DictionaryError(f"dictionary folder {str(folder)!r} does not exist or is not a folder")
    if not name.endswith(".npz"):
        shipped = SHIPPED_DIR / f"{name}.npz"
        if shipped.is_file():
            return shipped
        if folder is not None and (folder / f"{name}.npz").exists():
            return _inside(folder, f"{name}.npz")
        where = f" or in {str(folder)!r}" if folder is not None else " (no dictionary folder configured)"
        raise DictionaryError(
            f"unknown dictionary {name!r}: not a shipped dictionary{where}; "
            f"available: {', '.join(list_dictionaries(folder)) or 'none'}")
    if folder is None:
        raise DictionaryError(
            f"dictionary file {name!r} requested but no dictionary folder is configured; "
            f"shipped dictionaries: {', '.join(list_dictionaries()) or 'none'}")
    return _inside(folder, name)


def get_dictionary(name_or_file: str = DEFAULT_DICTIONARY,
                   dictionary_dir: str | os.PathLike | None = None) -> Dictionary:
    """Resolve and load a dictionary by name (see `resolve_dictionary`)."""
    path = resolve_dictionary(name_or_file, dictionary_dir)
    d = load_dictionary(path)
    log.info("dictionary %s: K=%d, %dx%d, from %s", d.name, d.num_filters, *d.filter_shape, path)
    return d
