"""An output file is there complete or not at all: it is written under a temporary name beside
it and renamed when complete. An existing output is refused unless it is to be overwritten, and
the output may not be one of the inputs.

Paths are handled as text with os.path, not pathlib: pathlib interns every part of every path it
makes, and a long-running server (the noise store writes a file per scan) would fill CPython's
table of interned strings with the unique temporary names, which grows the process for good when
the table is rebuilt larger (issue 19, item 13)."""

import logging
import os
import re
import socket
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from adacsc.core import cancel
from adacsc.resources import split_name

log = logging.getLogger(__name__)

PARTIAL_MARK = ".partial-"
"""Temporary outputs are named `.<name>.partial-<host>-<pid>-<id><suffix>`: never taken for a
finished output, and recognisably stale once the process that wrote it on this host is gone."""
_WRITER = re.compile(r"(?P<host>[A-Za-z0-9_.\-]*)-(?P<pid>\d+)-[0-9a-f]{12}$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", socket.gethostname())[:64]


def partial_path(output: str | os.PathLike[str]) -> str:
    """A fresh temporary name beside `output`, naming this host and process."""
    folder, name = os.path.split(os.fspath(output))
    stem, suffix = split_name(name)
    return os.path.join(folder, f".{stem}{PARTIAL_MARK}{_host()}-{os.getpid()}-{uuid.uuid4().hex[:12]}{suffix}")


def discard(path: str | os.PathLike[str]) -> None:
    """Remove the file `path` if it is there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_stale_partials(output: str | os.PathLike[str]) -> int:
    """Remove the temporary files of `output` left by processes of this host that no longer run
    (killed before they could clean up); how many were removed. Others' are left alone."""
    removed = 0
    folder, name = os.path.split(os.fspath(output))
    stem, suffix = split_name(name)
    prefix = f".{stem}{PARTIAL_MARK}"
    if not os.path.isdir(folder or os.curdir):
        return 0
    with os.scandir(folder or os.curdir) as entries:
        names = [entry.name for entry in entries if entry.name.startswith(prefix) and entry.name.endswith(suffix)
                 and len(entry.name) >= len(prefix) + len(suffix)]
    for candidate_name in names:
        match = _WRITER.fullmatch(candidate_name[len(prefix):len(candidate_name) - len(suffix)])
        if match is None or match["host"] != _host() or _alive(int(match["pid"])):
            continue
        candidate = os.path.join(folder, candidate_name)
        try:
            os.unlink(candidate)
        except OSError as err:
            log.warning("cannot remove the stale temporary file %s: %s", candidate, err)
            continue
        log.info("removed %s, left by process %s that stopped before finishing it", candidate_name, match["pid"])
        removed += 1
    return removed


def check_output(output: str | os.PathLike[str], overwrite: bool,
                 inputs: Sequence[str | os.PathLike[str]] = ()) -> None:
    """ValueError naming the problem when `output` is an input, a folder, or exists (not `overwrite`)."""
    for source in inputs:
        if os.path.realpath(output) == os.path.realpath(source):
            raise ValueError(f"-o {output}: that is the input file; write the images to another file")
    if os.path.isdir(output):
        raise ValueError(f"-o {output}: a folder; give an output file name")
    if os.path.exists(output) and not overwrite:
        raise ValueError(f"-o {output} exists: pass --overwrite to replace it")


@contextmanager
def atomic_output(output: str | os.PathLike[str], overwrite: bool = False,
                  inputs: Sequence[str | os.PathLike[str]] = ()) -> Iterator[str]:
    """Yield a temporary path to write; on success it replaces `output` (unless the caller
    removed it: then nothing is written), on failure it is removed. Once the process was told to
    stop (SIGTERM, Ctrl-C: adacsc.core.cancel), a finished temporary is removed, not published,
    even when the stop's exception never reached the code that wrote it."""
    check_output(output, overwrite, inputs)
    os.makedirs(os.path.dirname(os.fspath(output)) or os.curdir, exist_ok=True)
    clear_stale_partials(output)
    temporary = partial_path(output)
    try:
        yield temporary
        cancel.raise_if_stopped()
        if os.path.exists(temporary):
            os.replace(temporary, output)
    finally:
        discard(temporary)
