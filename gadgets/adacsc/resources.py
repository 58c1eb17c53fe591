"""Named resources: one rule to find dictionaries, weights, chain configs and noise files.

Whatever a client or a chain names is a *name*, never a path: letters, digits, '_', '-' and '.',
starting with a letter or digit, no '..', at most 128 characters; the kind's file suffix is
optional. A name is looked up in the kind's folders in this order, and the first regular file
that resolves (through symlinks) inside its folder wins:

  1. folders the operator gave on the command line (`extra`, e.g. `adacsc serve --config-dir`);
  2. the operator's folder from the environment (e.g. $ADACSC_DICTIONARY_DIR);
  3. the folder shipped in the package (adacsc/data/..., adacsc/configs).

So an operator may replace a shipped resource by placing a file of the same name in their folder.
Noise covariances are not shipped: they are read and written in the operator's noise folder.

Package data is found here and only here (`package_data`).

`locate` gives the file as text, for what a long-running server looks up per scan: a pathlib path
interns every part of its name, and parts that then die still use slots of CPython's table of
interned strings, which grows the process when it is rebuilt larger (issue 19, item 13). For the
same reason each folder's path is made once and kept.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["ResourceError", "ResourceKind", "DICTIONARY", "WEIGHTS", "CONFIG", "BASELINE", "NOISE", "package_data",
           "check_name", "split_name", "folders", "resolve", "locate", "names", "bundled_scan", "without_folders",
           "DEFAULT_DICTIONARY", "DEFAULT_WEIGHTS", "DEFAULT_SCAN"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


class ResourceError(ValueError):
    """A resource name is not a plain name, or no resource of that name exists."""


@dataclass(frozen=True)
class ResourceKind:
    """A kind of named resource: its noun (for messages), file suffix, operator folder variable
    and shipped folder (relative to the package; None: nothing shipped)."""

    noun: str
    suffix: str
    environment: str | None
    shipped: str | None
    default_folder: str | None = None  # under the user's cache folder, when the variable is unset


DICTIONARY = ResourceKind("dictionary", ".npz", "ADACSC_DICTIONARY_DIR", "data/dictionaries")
WEIGHTS = ResourceKind("weights", ".safetensors", "ADACSC_WEIGHTS_DIR", "data/weights")
CONFIG = ResourceKind("config", ".xml", "ADACSC_CONFIG_DIR", "configs")
BASELINE = ResourceKind("black-box weights", ".safetensors", None, "data/baselines")
NOISE = ResourceKind("noise", ".npz", "ADACSC_NOISE_DIR", None, default_folder="noise")

DEFAULT_DICTIONARY = "cdl_k32_9x9_l0.01"
DEFAULT_WEIGHTS = "netv3_lowfield_tv"
DEFAULT_SCAN = "lowfield_0055T_FSE.h5"


@functools.cache
def _package_folder() -> Path:
    """The adacsc package's folder (found once: importlib.resources makes new paths on every call)."""
    return Path(str(resources.files("adacsc")))


def package_data(*parts: str) -> Path:
    """A file or folder shipped inside the adacsc package, e.g. package_data("data", "scans")."""
    return _package_folder().joinpath(*parts)


@functools.cache
def _shipped_folder(shipped: str) -> Path:
    """The package folder of a kind's shipped resources ("data/weights"), made once."""
    return package_data(*shipped.split("/"))


@functools.lru_cache(maxsize=64)
def _folder(text: str) -> Path:
    """The path of an operator's folder, made once per text."""
    return Path(text)


def _folder_labels(extra_config: Sequence[str | os.PathLike[str]]) -> list[tuple[str, str]]:
    """(absolute folder text, its label) for every folder a resource may come from, longest first."""
    labels: list[tuple[Path, str]] = []
    for kind in (DICTIONARY, WEIGHTS, CONFIG, BASELINE, NOISE):
        operator = _operator_folder(kind)
        if operator is not None:
            labels.append((operator, f"${kind.environment}"))
        if kind.shipped is not None:
            labels.append((_shipped_folder(kind.shipped), f"<shipped {kind.shipped}>"))
    labels += [(Path(folder), "--config-dir") for folder in extra_config]
    labels.append((package_data(), "<adacsc>"))
    texts: dict[str, str] = {}
    for folder, label in labels:
        for form in {str(folder), os.path.realpath(folder)}:
            if os.path.isabs(form) and form != os.sep:
                texts.setdefault(form, label)
    return sorted(texts.items(), key=lambda pair: -len(pair[0]))


def without_folders(text: str, extra_config: Sequence[str | os.PathLike[str]] = ()) -> str:
    """`text` (an error for a client) with every resource folder's absolute path replaced by its
    label: $ADACSC_DICTIONARY_DIR, <shipped data/weights>, --config-dir, ...; files in them are
    then named relative to the operator's folders, and the server's layout stays private."""
    for folder, label in _folder_labels(extra_config):
        text = text.replace(folder, label)
    return text


def bundled_scan(name: str = DEFAULT_SCAN) -> Path:
    """A real scan shipped with the package (adacsc/data/scans)."""
    return package_data("data", "scans", name)


def check_name(kind: ResourceKind, name: object) -> str:
    """The file name (with the kind's suffix) for a plain resource name; ResourceError otherwise."""
    if not isinstance(name, str) or not name:
        raise ResourceError(f"a {kind.noun} name must be a non-empty string, got {name!r}")
    if "/" in name or "\\" in name or os.path.isabs(name):
        raise ResourceError(f"{kind.noun} {name!r}: give a name, not a path")
    if ".." in name or not _NAME.fullmatch(name):
        raise ResourceError(f"{kind.noun} name {name!r} is invalid: use letters, digits, '_', '-', '.' "
                            "(starting with a letter or digit, no '..', at most 128 characters)")
    return name if name.endswith(kind.suffix) else name + kind.suffix


def split_name(file_name: str) -> tuple[str, str]:
    """A file name's stem and suffix, split as pathlib does ('.x' and 'x.' have no suffix), without
    making a pathlib path (see the module docstring)."""
    dot = file_name.rfind(".")
    return (file_name[:dot], file_name[dot:]) if 0 < dot < len(file_name) - 1 else (file_name, "")


def _operator_folder(kind: ResourceKind) -> Path | None:
    configured = os.environ.get(kind.environment) if kind.environment else None
    if configured:
        return _folder(configured)
    if kind.default_folder is not None:
        home = os.path.expanduser("~")
        if home.startswith("~"):
            raise RuntimeError("Could not determine home directory.")  # as Path.home()
        return _folder(os.path.join(home, ".cache", "adacsc", kind.default_folder))
    return None


def folders(kind: ResourceKind, extra: Sequence[str | os.PathLike[str]] = ()) -> list[Path]:
    """The folders a name of this kind is looked up in, in order, each once (see the module
    docstring)."""
    found = [Path(folder) for folder in extra]
    operator = _operator_folder(kind)
    if operator is not None:
        found.append(operator)
    if kind.shipped is not None:
        found.append(_shipped_folder(kind.shipped))
    return list(dict.fromkeys(found))


def _inside(folder: Path, file_name: str) -> str | None:
    """folder/file_name, resolved, when it is a regular file that resolves inside folder, else None."""
    if not folder.is_dir():
        return None
    root = os.path.realpath(folder)
    candidate = os.path.realpath(os.path.join(root, file_name))
    if os.path.dirname(candidate) != root or not os.path.isfile(candidate):
        return None
    return candidate


def resolve(kind: ResourceKind, name: object, extra: Sequence[str | os.PathLike[str]] = ()) -> Path:
    """The file of the resource called `name` (see the module docstring for the rule)."""
    return Path(locate(kind, name, extra))


def locate(kind: ResourceKind, name: object, extra: Sequence[str | os.PathLike[str]] = ()) -> str:
    """`resolve` as text: no pathlib path is made of the name (see the module docstring)."""
    file_name = check_name(kind, name)
    searched = folders(kind, extra)
    for folder in searched:
        found = _inside(folder, file_name)
        if found is not None:
            return found
    where = ", ".join(str(folder) for folder in searched) or "no folder (none configured)"
    raise ResourceError(f"no {kind.noun} named {name!r} in {where}; available: "
                        f"{', '.join(names(kind, extra)) or 'none'}")


def names(kind: ResourceKind, extra: Sequence[str | os.PathLike[str]] = ()) -> list[str]:
    """The names (without suffix) of every resource of this kind in its folders, sorted."""
    found = {path.name[: -len(kind.suffix)] for folder in folders(kind, extra) if folder.is_dir()
             for path in folder.glob(f"*{kind.suffix}") if path.is_file()}
    return sorted(found)
