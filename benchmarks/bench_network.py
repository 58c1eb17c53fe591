"""Cost of NET_Theta V3 maps relative to the CSC solver, on the CPU.

For an N x N grid and K filters, times one forward pass of the map network (light default, and the
published configuration) for one slice, and the reference solver cost: `iterations` x (forward +
inverse orthonormal FFT of a [K, N, N] complex64 tensor), which is the FFT work of FISTA. Prints the
times and the ratios map-network / reference, both wall-clock and CPU time of the process (the
latter is less sensitive to other load on a shared machine); minimum over interleaved rounds.

    python benchmarks/bench_network.py                      # 256x256, K = 32 and 128
    python benchmarks/bench_network.py --ks 32 --threads 2 --configs light light-ds4
    python benchmarks/bench_network.py --solver   # also time the real solver (scalar Lambda, 2x SR)
"""

from __future__ import annotations

import argparse
import time

import torch

from adacsc.core.convolution import Synthesis
from adacsc.core.filter_bank import FilterBank
from adacsc.core.lambdas import FixedLambda
from adacsc.core.network import MapNetwork, NetworkConfig
from adacsc.runtime import configure_process

CONFIGS = {
    "light": NetworkConfig.preset("light"),
    "light-ds4": NetworkConfig.preset("light", downsample=4),
    "published": NetworkConfig.preset("published"),
}


def timed(fn) -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds of this process summed over its threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def conv_macs_per_map(config: NetworkConfig, size: int) -> float:
    """Multiply-accumulates of the U-Net convolutions for one filter map on a size x size grid."""
    widths = [config.base_channels * 2**i for i in range(config.depth + 1)]
    side = [-(-size // config.downsample)]
    for _ in range(config.depth):
        side.append(side[-1] // 2)
    repeat = config.convs_per_stage - 1
    total = 0
    previous = 2
    for level, width in enumerate(widths):  # encoder stages and bottleneck
        total += side[level] ** 2 * 9 * width * (previous + repeat * width)
        previous = width
    for level in range(config.depth):  # decoder stages
        width = widths[level]
        total += side[level] ** 2 * 9 * width * (widths[level + 1] + width + repeat * width)
    total += side[0] ** 2 * widths[0]  # 1x1 head
    return float(total)


def main() -> None:
    configure_process()  # the process settings the command line makes (adacsc.runtime)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--ks", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--filter-size", type=int, default=11)
    parser.add_argument("--iterations", type=int, default=64, help="FISTA iterations of the reference")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds (minimum reported)")
    parser.add_argument("--published-repeats", type=int, default=1, help="rounds that time the (slow) published net")
    parser.add_argument("--solver", action="store_true",
                        help="also time adacsc.core.reconstruct.CSCReconstructor (scalar Lambda, acquired "
                             "block half the grid) and report map-network / solver")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--configs", nargs="+", default=["light", "light-ds4", "published"], choices=sorted(CONFIGS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = args.size
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, grid {n}x{n}, "
          f"filters {args.filter_size}x{args.filter_size}, "
          f"reference = {args.iterations} x (fft2 + ifft2) of [K,{n},{n}] complex64")
    for name in args.configs:
        macs = conv_macs_per_map(CONFIGS[name], n)
        print(f"  {name:10s} {CONFIGS[name].to_json()}  conv MACs/map {macs / 1e6:.0f} M")
    header = (f"{'K':>4} {'network':>10} {'wall [s]':>9} {'ref wall':>9} {'net/ref':>8}   "
              f"{'cpu [s]':>8} {'ref cpu':>8} {'net/ref':>8}")
    print(header)
    print("-" * len(header))
    x0 = torch.randn(1, n, n, dtype=torch.complex64)
    for k in args.ks:
        filters = torch.randn(k, args.filter_size, args.filter_size)
        filters = filters / filters.flatten(1).norm(dim=1).view(k, 1, 1)
        bank = FilterBank(filters)
        synthesis = Synthesis(bank)
        volume = torch.randn(k, n, n, dtype=torch.complex64)

        def reference():
            z = volume
            for _ in range(args.iterations):
                z = torch.fft.ifft2(torch.fft.fft2(z, norm="ortho"), norm="ortho")
            return z

        nets = {name: MapNetwork(CONFIGS[name]).eval() for name in args.configs}
        times: dict[str, list[tuple[float, float]]] = {"reference": [], **{name: [] for name in nets}}
        if args.solver:
            from adacsc.core.reconstruct import CSCReconstructor

            solver = CSCReconstructor(bank)
            kspace = torch.randn(1, n // 2, n // 2, dtype=torch.complex64)
            times["solver"] = []
        with torch.inference_mode():
            reference()  # warm-up
            if args.solver:
                solver.infer(kspace, (n, n), FixedLambda(0.05), args.iterations)
            for net in nets.values():
                net(x0, synthesis)
            # interleaved rounds, minimum per item: robust against other load on a shared machine
            for round_ in range(args.repeats):
                times["reference"].append(timed(reference))
                if args.solver:
                    times["solver"].append(
                        timed(lambda: solver.infer(kspace, (n, n), FixedLambda(0.05), args.iterations)))
                for name, net in nets.items():
                    if name == "published" and round_ >= args.published_repeats:
                        continue
                    times[name].append(timed(lambda: net(x0, synthesis)))

        def best(name: str) -> tuple[float, float]:
            return min(t[0] for t in times[name]), min(t[1] for t in times[name])

        ref_wall, ref_cpu = best("reference")
        for name in nets:
            wall, cpu = best(name)
            print(f"{k:>4} {name:>10} {wall:9.3f} {ref_wall:9.3f} {wall / ref_wall:8.1%}   "
                  f"{cpu:8.3f} {ref_cpu:8.3f} {cpu / ref_cpu:8.1%}")
        if args.solver:
            solver_wall, solver_cpu = best("solver")
            print(f"{k:>4} {'solver':>10} {solver_wall:9.3f} {ref_wall:9.3f} {solver_wall / ref_wall:8.1%}   "
                  f"{solver_cpu:8.3f} {ref_cpu:8.3f} {solver_cpu / ref_cpu:8.1%}")
            for name in nets:
                print(f"{k:>4} {name} / solver = {best(name)[0] / solver_wall:.1%} (wall)")
        if "published" in nets and "light" in nets:
            print(f"{k:>4} published / light = {best('published')[0] / best('light')[0]:.1f}x (wall), "
                  f"{best('published')[1] / best('light')[1]:.1f}x (cpu)")


if __name__ == "__main__":
    main()
