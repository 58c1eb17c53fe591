"""Soak: the server's resident memory over many sequential scans, and its growth per scan.

Starts `adacsc serve` in a subprocess on a free loopback port, sends the same small scan
(`--samples`-sample readouts, the front-end chain by default) `--scans` times one after another,
and reads the server's RSS (/proc/PID/status, VmRSS) every `--every` scans. The first `--warmup`
scans are left out (allocator pools, caches and lazily imported code fill up there); the growth
per scan is the least-squares slope of RSS over the rest, in bytes per scan. A leak shows as a
slope that does not fall as the run grows longer; the issue-19 target is under 0.5 KB per scan.
The slope of the second half of the readings is printed too: a leak keeps its slope there, a
one-time step does not. CPython's table of interned strings makes such a step: each string interned
during a scan that then dies uses one of its slots until the table is rebuilt, and when the free
slots run out it is rebuilt at twice the size, 1.8 MB at once (2^17 to 2^18 slots, some 67,000 live
strings). pathlib interns every part of every path it makes, and `adacsc serve` used to make 9 such
parts a scan (the chain's file, the noise file and its uniquely named temporary): a step after
about 2,200 scans, 0.8 KB/scan over 4,000. Those paths are now text (os.path);
tests/server/test_interned_strings.py counts the table's insertions per scan (none).

    python benchmarks/bench_soak.py                              # 4000 scans, front end
    python benchmarks/bench_soak.py --scans 1000 --every 50
    python benchmarks/bench_soak.py --config adacsc_lowfield --scans 300 --samples 64
    python benchmarks/bench_soak.py --nodes noise_adjust,readout_buffer    # part of a chain (bisecting)

Linux only (reads /proc). Not part of the test suite: 4000 scans take minutes.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

from bench_server import ServerProcess, read_messages

from adacsc.client import StreamClient, stream
from adacsc.simulation.small_scan import write_small_scan

log = logging.getLogger("bench_soak")


def rss_bytes(pid: int) -> int:
    """The resident set size of process `pid`."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


THREAD_ARENA_ALIGN = 64 * 2**20
"""glibc maps each per-thread arena's heap at an address aligned to its maximum size, 64 MiB"""


def resident_by_region(pid: int) -> dict[str, int]:
    """Resident bytes of process `pid` per kind of mapping (see the module docstring)."""
    regions = dict.fromkeys(("main heap", "thread arenas", "other anonymous", "files"), 0)
    kind = None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and ":" not in fields[0]:  # a mapping's first line: range, perms, offset, ...
            start = int(fields[0].split("-")[0], 16)
            name = fields[5] if len(fields) > 5 else ""
            kind = ("main heap" if name == "[heap]" else "files" if name.startswith("/") else
                    "thread arenas" if not name and start % THREAD_ARENA_ALIGN == 0 else
                    "other anonymous" if not name else None)
        elif fields[0] == "Rss:" and kind is not None:
            regions[kind] += int(fields[1]) * 1024
    return regions


def slope(points: list[tuple[int, int]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var if var else 0.0


def nodes_chain(targets: str) -> str:
    """Chain XML of adacsc gadgets named by target, comma-separated (each module = its target)."""
    body = "".join(f'<external><execute name="adacsc.gadgets.{t}" target="{t}" type="python"/><configuration/>'
                   "</external>" for t in targets.split(","))
    return f"<configuration><version>2</version><stream>{body}</stream></configuration>"


def one_scan(port: int, header: bytes, messages: list[bytes], config: str, config_text: str | None = None) -> None:
    """Send the scan and wait for the server's CLOSE; raise when it reports an error."""
    client = StreamClient("127.0.0.1", port, timeout=120)
    stream(client, header, messages, config_name=None if config_text else config, config_text=config_text)
    result = client.wait(120)
    if not result.ok:
        raise RuntimeError(f"scan failed: {result.errors}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scans", type=int, default=4000)
    parser.add_argument("--warmup", type=int, default=200, help="scans left out of the slope")
    parser.add_argument("--every", type=int, default=100, help="read the RSS every this many scans")
    parser.add_argument("--config", default="adacsc_frontend")
    parser.add_argument("--samples", type=int, default=32, help="readout length (2x oversampled)")
    parser.add_argument("--slices", type=int, default=1)
    parser.add_argument("--nodes", help="instead of --config: these adacsc gadgets (targets, comma-separated)")
    parser.add_argument("--breakdown", action="store_true", help="where the memory grew (reads /proc/PID/smaps)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with tempfile.TemporaryDirectory() as folder:
        scan = write_small_scan(Path(folder) / "scan.h5", coils=2, lines=args.samples // 2, slices=args.slices, noise=8)
        header, messages = read_messages(scan)
        server = ServerProcess(["--workers", "1"], Path(folder) / "server.log")
        points: list[tuple[int, int]] = []
        regions: list[dict[str, int]] = []
        started = time.perf_counter()
        try:
            for index in range(1, args.scans + 1):
                one_scan(server.port, header, messages, args.config, nodes_chain(args.nodes) if args.nodes else None)
                if index % args.every == 0:
                    rss = rss_bytes(server.process.pid)
                    if index > args.warmup:
                        points.append((index, rss))
                        if args.breakdown and (len(regions) < 1 or index + args.every > args.scans):
                            regions.append(resident_by_region(server.process.pid))
                    log.info("%d scans: RSS %.1f MiB%s", index, rss / 2**20,
                             f", growth so far {slope(points):.0f} B/scan" if len(points) > 1 else "")
        finally:
            server.stop()
        if len(points) < 2:
            sys.exit("too few RSS readings after the warm-up: raise --scans or lower --every")
        growth = slope(points)
        print(f"{args.scans} scans of {args.nodes or args.config} ({args.samples}-sample readouts, {args.slices} slice(s)) in "
              f"{time.perf_counter() - started:.0f} s; RSS {points[0][1] / 2**20:.1f} MiB after {points[0][0]} "
              f"scans, {points[-1][1] / 2**20:.1f} MiB after {points[-1][0]}; growth {growth:.0f} B/scan "
              f"({growth / 1024:.2f} KB/scan; target < 0.5 KB/scan); second half {slope(points[len(points) // 2:]):.0f} "
              "B/scan")
        if len(regions) == 2:
            scans = points[-1][0] - points[0][0]
            print("growth by region: " + ", ".join(f"{name} {(regions[1][name] - regions[0][name]) / scans:.0f} B/scan"
                                                   for name in regions[0]))


if __name__ == "__main__":
    main()
