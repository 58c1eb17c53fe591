"""Offline replay: stream an ISMRMRD file through a chain in process and store the images."""

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from adacsc.chain.config import ChainConfig
from adacsc.chain.runner import Chain
from adacsc.io.dataset import InputScan
from adacsc.io.header import encoding, parse_header
from adacsc.io.images import OutputWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayResult:
    """What one replay did."""

    acquisitions: int
    images: dict[str, int]
    seconds: float
    slices: int


def replay(input_path: str | Path, output_path: str | Path, chain: ChainConfig,
           group: str | None = None, strict: bool = True) -> ReplayResult:
    """Run `chain` over every acquisition of `input_path`; write its images to `output_path`."""
    with InputScan(input_path) as scan:
        header_bytes = scan.header_bytes()
        header = parse_header(header_bytes)
        slices = (header.encoding[0].encodingLimits.slice.maximum + 1
                  if header.encoding[0].encodingLimits and header.encoding[0].encodingLimits.slice else 1)
        encoding(header)  # validates the encoding before any data flows
        writer = OutputWriter(output_path, group)
        writer.write_header(header_bytes)
        started = time.perf_counter()
        running = Chain(chain, header_bytes, writer.write, strict=strict).start()
        try:
            for acquisition in scan.acquisitions():
                running.push(acquisition)
        finally:
            try:
                running.close()
            finally:
                writer.close()
        seconds = time.perf_counter() - started
    log.info("replayed %d acquisitions through %s in %.2f s (%.3f s per slice)",
             running.items_in, chain.name, seconds, seconds / max(slices, 1))
    return ReplayResult(running.items_in, dict(writer.counts), seconds, slices)
