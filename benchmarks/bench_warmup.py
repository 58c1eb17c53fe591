"""What the warm-up solve buys: the first real scan against the third, with and without it.

For each mode (warm-up on, `--no-warm-up`) a fresh `adacsc serve` starts on free loopback ports,
the script waits for /ready, then sends the same scan three times, one after the other, and
reports each scan's time (connect to CLOSE), the server's CPU time for it (from /proc: on a
shared machine it varies less with the other load than the wall time) and the median per-slice
latency (last readout sent to first image received), and the ratios of the first scan to the third. Both modes run in the same
invocation, on the same machine. The scan defaults to the bundled FLAIR scan: real data the
warm-up (which uses the bundled FSE scan) has not seen.

    python benchmarks/bench_warmup.py [--scan FILE] [--config adacsc_lowfield] [--repeat 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench_server import Supervisor

from adacsc.client import send_scan
from adacsc.server import notify
from adacsc.resources import bundled_scan

log = logging.getLogger("bench_warmup")


def start(log_path: Path, *options: str) -> tuple[subprocess.Popen, int, int, float]:
    """`adacsc serve` with metrics and probes on free ports: (process, scan port, http port,
    seconds until /ready answered 200)."""
    started = time.perf_counter()
    supervisor = Supervisor()
    with open(log_path, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "adacsc", "serve", "--port", "0", "--metrics-port", "0",
                                    *options], stdout=out, stderr=subprocess.STDOUT, env=supervisor.environment())
    try:
        http = int(supervisor.wait(notify.HTTP_PORT, process))
        port = int(supervisor.wait(notify.PORT, process))  # READY=1 comes with it, once warmed up
        ready_s = time.perf_counter() - started
    except RuntimeError as err:
        process.kill()
        raise RuntimeError(f"the server did not become ready: {log_path.read_text()[-2000:]}") from err
    finally:
        supervisor.sock.close()
    assert _ready(http), "READY=1 was notified but /ready does not answer 200"
    return process, port, http, ready_s


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_mode(name: str, options: list[str], scan: Path, config: str, workdir: Path) -> dict[str, float]:
    process, port, _, ready_s = start(workdir / f"{name}.log", *options)
    try:
        times, latencies, cpu = [], [], []
        for attempt in range(3):
            before = cpu_seconds(process.pid)
            result = send_scan(scan, None, port=port, config_name=config, timeout=600)
            cpu.append(cpu_seconds(process.pid) - before)
            if not result.ok:
                raise RuntimeError(f"{name}: scan {attempt + 1} failed: {result.errors}")
            times.append(result.seconds)
            latencies.append(statistics.median(result.first_image_latencies().values()))
    finally:
        process.terminate()
        process.wait(120)
    row = {"ready_s": ready_s, **{f"scan{i + 1}_s": t for i, t in enumerate(times)},
           **{f"slice{i + 1}_s": t for i, t in enumerate(latencies)}}
    row.update({f"cpu{i + 1}_s": t for i, t in enumerate(cpu)})
    row["first_over_third"] = times[0] / times[2]
    row["cpu_first_over_third"] = cpu[0] / cpu[2]
    row["slice_first_over_third"] = latencies[0] / latencies[2]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", type=Path, default=bundled_scan("lowfield_0055T_FLAIR.h5"))
    parser.add_argument("--config", default="adacsc_lowfield")
    parser.add_argument("--repeat", type=int, default=1, help="runs of both modes (alternating)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    modes = {"warm-up": [], "no warm-up": ["--no-warm-up"]}
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in modes}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeat):
            for name, options in modes.items():
                rows[name].append(run_mode(name.replace(" ", "-"), options, args.scan, args.config, Path(folder)))
    print(f"scan {args.scan.name}, chain {args.config}; times in s (median over {args.repeat} run(s))")
    print("| mode | until /ready | scan 1 | scan 2 | scan 3 | scan 1 / scan 3 | CPU 1 | CPU 3 | CPU 1 / 3 "
          "| slice latency 1 | slice latency 3 | 1 / 3 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, runs in rows.items():
        med = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        print(f"| {name} | {med['ready_s']:.2f} | {med['scan1_s']:.2f} | {med['scan2_s']:.2f} | {med['scan3_s']:.2f} "
              f"| {med['first_over_third']:.3f} | {med['cpu1_s']:.2f} | {med['cpu3_s']:.2f} "
              f"| {med['cpu_first_over_third']:.3f} | {med['slice1_s']:.2f} | {med['slice3_s']:.2f} "
              f"| {med['slice_first_over_third']:.3f} |")


if __name__ == "__main__":
    main()
