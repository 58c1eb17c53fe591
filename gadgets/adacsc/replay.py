"""Offline replay: stream an ISMRMRD file through a chain in process and store the images."""

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import ismrmrd
from gadgetron.types import ImageArray

from adacsc.chain.config import ChainConfig
from adacsc.chain.runner import Chain
from adacsc.io.dataset import InputScan
from adacsc.io.header import encoding, parse_header
from adacsc.io.images import OutputWriter, split_image_array

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayResult:
    """What one replay did."""

    acquisitions: int
    images: dict[str, int]
    seconds: float
    slices: int


def _count(limits: object, name: str) -> int:
    limit = getattr(limits, name, None) if limits is not None else None
    return limit.maximum + 1 if limit is not None else 1


def replay(input_path: str | Path, output_path: str | Path, chain: ChainConfig,
           group: str | None = None, strict: bool = True, progress: bool = False) -> ReplayResult:
    """Run `chain` over every acquisition of `input_path`; write its images to `output_path`.
    With `progress`, a bar on a terminal counts the slices (and repetitions) with images, with an ETA."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    with InputScan(input_path) as scan:
        header_bytes = scan.header_bytes()
        header = parse_header(header_bytes)
        limits = header.encoding[0].encodingLimits if header.encoding else None
        slices = _count(limits, "slice")
        encoding(header)  # validates the encoding before any data flows
        writer = OutputWriter(output_path, group)
        writer.write_header(header_bytes)
        bar = tqdm(total=slices * _count(limits, "repetition"), unit="slice", desc=f"recon {chain.name}",
                   disable=None if progress else True, dynamic_ncols=True)
        done: set[tuple[int, int]] = set()

        def store(item: object) -> None:
            writer.write(item)
            images = split_image_array(item) if isinstance(item, ImageArray) else [item]
            new = {(i.slice, i.repetition) for i in images if isinstance(i, ismrmrd.Image)} - done
            done.update(new)
            bar.update(len(new))

        started = time.perf_counter()
        with logging_redirect_tqdm() if progress else contextlib.nullcontext():
            running = Chain(chain, header_bytes, store, strict=strict).start()
            try:
                for acquisition in scan.acquisitions():
                    running.push(acquisition)
            finally:
                try:
                    running.close()
                finally:
                    writer.close()
                    bar.close()
        seconds = time.perf_counter() - started
    log.info("replayed %d acquisitions through %s in %.2f s (%.3f s per slice)",
             running.items_in, chain.name, seconds, seconds / max(slices, 1))
    return ReplayResult(running.items_in, dict(writer.counts), seconds, slices)
