"""An output file is there complete or not at all: it is written under a temporary name beside
it and renamed when complete. An existing output is refused unless it is to be overwritten, and
the output may not be one of the inputs."""

import glob
import logging
import os
import re
import socket
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from adacsc.core import cancel

log = logging.getLogger(__name__)

PARTIAL_MARK = ".partial-"
"""Temporary outputs are named `.<name>.partial-<host>-<pid>-<id><suffix>`: never taken for a
finished output, and recognisably stale once the process that wrote it on this host is gone."""
_WRITER = re.compile(r"(?P<host>[A-Za-z0-9_.\-]*)-(?P<pid>\d+)-[0-9a-f]{12}$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", socket.gethostname())[:64]


def partial_path(output: Path) -> Path:
    """A fresh temporary name beside `output`, naming this host and process."""
    return output.with_name(f".{output.stem}{PARTIAL_MARK}{_host()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
                            f"{output.suffix}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_stale_partials(output: Path) -> int:
    """Remove the temporary files of `output` left by processes of this host that no longer run
    (killed before they could clean up); how many were removed. Others' are left alone."""
    removed = 0
    prefix = f".{output.stem}{PARTIAL_MARK}"
    if not output.parent.is_dir():
        return 0
    for candidate in output.parent.glob(f"{glob.escape(prefix)}*{glob.escape(output.suffix)}"):
        middle = candidate.name[len(prefix):len(candidate.name) - len(output.suffix)]
        match = _WRITER.fullmatch(middle)
        if match is None or match["host"] != _host() or _alive(int(match["pid"])):
            continue
        try:
            candidate.unlink()
        except OSError as err:
            log.warning("cannot remove the stale temporary file %s: %s", candidate, err)
            continue
        log.info("removed %s, left by process %s that stopped before finishing it", candidate.name, match["pid"])
        removed += 1
    return removed


def check_output(output: Path, overwrite: bool, inputs: Sequence[Path] = ()) -> None:
    """ValueError naming the problem when `output` is an input, a folder, or exists (not `overwrite`)."""
    for source in inputs:
        if output.resolve() == Path(source).resolve():
            raise ValueError(f"-o {output}: that is the input file; write the images to another file")
    if output.is_dir():
        raise ValueError(f"-o {output}: a folder; give an output file name")
    if output.exists() and not overwrite:
        raise ValueError(f"-o {output} exists: pass --overwrite to replace it")


@contextmanager
def atomic_output(output: Path, overwrite: bool = False, inputs: Sequence[Path] = ()) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `output` (unless the caller
    removed it: then nothing is written), on failure it is removed. Once the process was told to
    stop (SIGTERM, Ctrl-C: adacsc.core.cancel), a finished temporary is removed, not published,
    even when the stop's exception never reached the code that wrote it."""
    check_output(output, overwrite, inputs)
    output.parent.mkdir(parents=True, exist_ok=True)
    clear_stale_partials(output)
    temporary = partial_path(output)
    try:
        yield temporary
        cancel.raise_if_stopped()
        if temporary.exists():
            os.replace(temporary, output)
    finally:
        temporary.unlink(missing_ok=True)
