"""Benchmark of the CSC solver: time per FISTA iteration against the FFTs it cannot avoid.

Default problem: 256x256 grid, 128x128 acquired block (2x super-resolution), one slice,
K = 32 and 128 filters (9x9), 64 FISTA iterations.

Reported per K and lambda mode (scalar float / [B, K, H, W] maps), median and minimum over the
repeats (all kinds of run interleaved, so that they see the same machine load):
  fft_ref     one forward + one inverse FFT of the K code maps [B, K, H, W] as one tensor
              (torch.fft.fft2 + ifft2; the better of fresh and preallocated outputs): the
              minimum FFT work of one iteration
  iter        one FISTA iteration (64-iteration solve / 64)
  ratio       iter / fft_ref (target <= 1.3): of the wall-time medians, of the wall-time minima,
              and of the median process CPU times (the most load-robust with --threads 1)
  /blocked    iter / the same FFTs run on the solver's filter blocks (minima)
  slice       a whole reconstruction of one slice (x0, scaling, x_low, L, FISTA, synthesis),
              without the map network (maps mode: constant maps given as a tensor), seconds

On a shared machine use --threads 1: with more torch threads than free cores, every small op
pays for thread synchronisation and the wall times become erratic.

Usage:  python benchmarks/bench_solver.py [--k 32 128] [--repeats 5] [--device cpu] [--threads 1 2]

Several --threads values are measured one after the other in the same process.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable

import torch

from adacsc.core.dictionary import random_dictionary
from adacsc.core.filter_bank import FilterBank
from adacsc.core.fista import default_chunk_size, fista
from adacsc.core.lambdas import FixedLambda, LambdaMaps
from adacsc.core.reconstruct import CSCReconstructor
from adacsc.runtime import configure_process

log = logging.getLogger("bench_solver")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    _sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - w0, time.process_time() - c0


def bench(k: int, mode: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    grid, acq, batch = (args.grid, args.grid), (args.grid // 2, args.grid // 2), args.batch
    gen = torch.Generator().manual_seed(0)
    y = torch.complex(torch.randn((batch,) + acq, generator=gen), torch.randn((batch,) + acq, generator=gen))
    y = (y * 3).to(device)
    rec = CSCReconstructor(FilterBank(random_dictionary(k, args.filter_size, seed=k).filters),
                           chunk_size=args.chunk).to(device)
    codes = torch.complex(torch.randn((batch, k) + grid, generator=gen),
                          torch.randn((batch, k) + grid, generator=gen)).to(device)
    chunk = args.chunk or default_chunk_size(batch, k, grid, device)
    blocks = [codes[:, i:i + chunk].contiguous() for i in range(0, k, chunk)]

    with torch.inference_mode():
        op, lip = rec.operator(None, acq, grid, None, device, torch.complex64)
        y_high = y / 10
        lam = args.lam if mode == "scalar" else torch.full((batch, k) + grid, args.lam, device=device)
        sparsity = FixedLambda(args.lam) if mode == "scalar" else LambdaMaps(lam)

        spec_buf, image_buf = torch.empty_like(codes), torch.empty_like(codes)

        def fft_ref():
            # the better of allocating outputs and writing into preallocated ones (a fresh 64 MB
            # output costs ~16k page faults; out= costs a copy): the reference gets its best case
            alloc = _timed(lambda: torch.fft.ifft2(torch.fft.fft2(codes, norm="ortho"), norm="ortho"), device)
            prealloc = _timed(lambda: torch.fft.ifft2(torch.fft.fft2(codes, norm="ortho", out=spec_buf),
                                                      norm="ortho", out=image_buf), device)
            return min(alloc, prealloc)

        def fft_blocked():
            for b in blocks:
                torch.fft.ifft2(torch.fft.fft2(b, norm="ortho"), norm="ortho")

        def solve():
            fista(op, y_high, lam, lip, args.iterations, args.chunk)

        def whole_slice():
            rec.forward(y, grid, sparsity, args.iterations)

        for fn in (fft_ref, fft_blocked, solve, whole_slice):  # warm-up (plans, allocator)
            fn()
        wall: dict[str, list[float]] = {"fft_ref": [], "fft_blocked": [], "iter": [], "slice": []}
        cpu: dict[str, list[float]] = {name: [] for name in wall}
        for _ in range(args.repeats):
            for name, fn, per in (("fft_ref", fft_ref, 1), ("fft_blocked", fft_blocked, 1),
                                  ("iter", solve, args.iterations), ("slice", whole_slice, batch)):
                w, c = fn() if fn is fft_ref else _timed(fn, device)
                wall[name].append(w / per)
                cpu[name].append(c / per)
    out: dict[str, float] = {"chunk": chunk}
    for name in wall:
        out[name] = statistics.median(wall[name]) * 1e3
        out[name + "_min"] = min(wall[name]) * 1e3
        out[name + "_cpu"] = statistics.median(cpu[name]) * 1e3
    out["ratio"] = out["iter"] / out["fft_ref"]
    out["ratio_min"] = out["iter_min"] / out["fft_ref_min"]
    out["ratio_cpu"] = out["iter_cpu"] / out["fft_ref_cpu"]
    out["ratio_blocked"] = out["iter_min"] / out["fft_blocked_min"]
    return out


def main(argv: list[str] | None = None) -> int:
    configure_process()  # the process settings the command line makes (adacsc.runtime)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[32, 128], help="numbers of filters")
    parser.add_argument("--grid", type=int, default=256, help="grid size (acquired = grid / 2)")
    parser.add_argument("--batch", type=int, default=1, help="slices per batch")
    parser.add_argument("--filter-size", type=int, default=9)
    parser.add_argument("--iterations", type=int, default=64)
    parser.add_argument("--lam", type=float, default=0.05)
    parser.add_argument("--modes", nargs="+", default=["scalar", "maps"], choices=["scalar", "maps"],
                        help="lambda as a float (softshrink) and/or as [B, K, H, W] maps (clamp)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=None, help="filters per block (default: automatic)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch CPU thread counts to measure (default: torch's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device(args.device)
    for threads in args.threads or [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        report(args, device)
    return 0


def report(args: argparse.Namespace, device: torch.device) -> None:
    """The table for the current torch thread count."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    log.info("bench_solver: %s, torch %s, grid %d^2 (acquired %d^2), batch %d, %d iterations, %d repeats",
             name, torch.__version__, args.grid, args.grid // 2, args.batch, args.iterations, args.repeats)
    log.info("%4s %6s %5s | %-22s | %-22s | %-17s | %7s | %-15s", "K", "lambda", "chunk",
             "fft_ref ms wall med/min", "iter ms wall med/min", "ratio med/min/cpu", "/blocked",
             "slice s med/min")
    for k in args.k:
        for mode in args.modes:
            r = bench(k, mode, args, device)
            log.info("%4d %6s %5d | %8.2f / %8.2f    | %8.2f / %8.2f    | %4.2f / %4.2f / %4.2f | %7.2f | %6.2f / %6.2f",
                     k, mode, r["chunk"], r["fft_ref"], r["fft_ref_min"], r["iter"], r["iter_min"],
                     r["ratio"], r["ratio_min"], r["ratio_cpu"], r["ratio_blocked"],
                     r["slice"] / 1e3, r["slice_min"] / 1e3)


if __name__ == "__main__":
    raise SystemExit(main())
