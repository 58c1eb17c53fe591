"""The warm-up solve before a server reports ready: the default chain, in process, over the first
slices of the bundled real scan, as many as the slice pool runs at once (its imaging readouts
only, so that nothing is written to the noise store).

Why: loading weights and dictionaries is not all a first scan pays for. The first pass through
the chain also creates torch's kernels for each thread count, the FFT plans, the slice pool's
threads and the solver's operator and step size for the grid. One lone slice warms the path a
lone slice takes (every core on it), not the path of slices that arrive together (one core
each, on the pool's other threads), so the warm-up sends as many slices as the pool runs at once
(benchmarks/bench_warmup.py measures the first real scan against the third).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import ismrmrd

from adacsc import resources
from adacsc.chain.runner import Chain
from adacsc.gadgets.slice_pool import shared_pool
from adacsc.io.dataset import InputScan
from adacsc.limits import ScanLimits
from adacsc.scan_context import ScanContext
from adacsc.server import fire

__all__ = ["WarmUpError", "warm_up"]

log = logging.getLogger(__name__)


class WarmUpError(RuntimeError):
    """The default chain cannot reconstruct the bundled scan: the server must not report ready."""


def warm_up(config_dirs: tuple[Path, ...], chain_name: str = fire.DEFAULT_CHAIN,
            scan: Path | None = None, limits: ScanLimits | None = None) -> float:
    """Run `chain_name` (looked up in `config_dirs`) over the first slices of `scan` (default: the
    bundled FSE scan), one per slice worker, under the server's `limits` (default: the defaults);
    the seconds it took. WarmUpError when it fails or produces no image."""
    scan = scan or resources.bundled_scan()
    started = time.perf_counter()
    images: list[object] = []
    slices = 0
    wanted = shared_pool().workers
    try:
        chain = fire.load_named_chain(chain_name, list(config_dirs))
        with InputScan(scan) as data:
            context = ScanContext(limits if limits is not None else ScanLimits())
            running = Chain(chain, data.header_bytes(), images.append, strict=False, scan=context).start()
            try:
                for acquisition in data.acquisitions():
                    if acquisition.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
                        continue
                    running.push(acquisition)
                    slices += acquisition.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE)
                    if slices == wanted:
                        break
            finally:
                running.close()
    except Exception as err:
        raise WarmUpError(f"the warm-up solve (chain {chain_name} on {scan.name}) failed: {err}") from err
    if not images:
        raise WarmUpError(f"the warm-up solve (chain {chain_name} on {scan.name}) produced no image")
    seconds = time.perf_counter() - started
    log.info("warm-up solve: chain %s, %d slice(s) of %s, %d outputs in %.2f s", chain_name, slices, scan.name,
             len(images), seconds)
    return seconds
