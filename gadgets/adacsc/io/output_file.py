"""An output file is there complete or not at all: it is written under a temporary name beside
it and renamed when complete. An existing output is refused unless it is to be overwritten, and
the output may not be one of the inputs."""

import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

PARTIAL_MARK = ".partial-"
"""Temporary outputs are named `.<name>.partial-<id><suffix>`: never taken for a finished output."""


def partial_path(output: Path) -> Path:
    """A fresh temporary name beside `output`."""
    return output.with_name(f".{output.stem}{PARTIAL_MARK}{uuid.uuid4().hex[:12]}{output.suffix}")


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
    removed it: then nothing is written), on failure it is removed."""
    check_output(output, overwrite, inputs)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = partial_path(output)
    try:
        yield temporary
        if temporary.exists():
            os.replace(temporary, output)
    finally:
        temporary.unlink(missing_ok=True)
