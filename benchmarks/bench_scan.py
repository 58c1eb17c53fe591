"""Scan-level benchmark: whole scans as an operator runs them, each figure from variants alternated
in the same run (medians over --pairs rounds), so they see the same machine.

  recon       the README's main command, `adacsc recon -o out.h5` (the bundled 4-slice 0.055 T
              FSE scan through the default chain), in a fresh process each time:
                parallel   the default (slice pool: slices side by side, torch threads shared out)
                serial     ADACSC_SLICE_WORKERS=1 (one slice at a time with every core: the
                           behaviour before the slice pool)
                baseline   only with --baseline DIR: the same command from another source tree
                           (e.g. `git archive main | tar -x -C DIR`)
              Reports wall time, process CPU time (user + system) per slice, and the median of
              the per-slice reconstruction times the gadget logs.
  contention  the same commands idle and beside one competing CPU job: a 2-thread torch matrix
              product loop in its own process (default OpenMP settings), started before and
              stopped after each run, never running longer than --competitor-max-s.
  streaming   `adacsc serve` in a subprocess; the scan is sent by the client with each --pace
              (default: realtime, as the readouts' time stamps say, and realtime:0.1, ten times
              slower); per slice: latency (last readout sent -> images back), the slice's own
              reconstruction time (ReconTimeMs) and their ratio.

Usage:
    python benchmarks/bench_scan.py                       # all sections, 3 pairs
    python benchmarks/bench_scan.py --sections recon --pairs 5
    python benchmarks/bench_scan.py --baseline /tmp/adacsc-main/gadgets
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from adacsc.client import send_scan
from adacsc.resources import bundled_scan

log = logging.getLogger("bench_scan")

TREE = Path(__file__).resolve().parents[1] / "gadgets"
SLICE_LINE = re.compile(r"slice \d+ reconstructed in (\d+) ms")
COMPETITOR = """
import sys, time, torch
torch.set_num_threads(2)
a = torch.randn(768, 768)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    a @ a
"""


@dataclass
class Run:
    """One end-to-end run of the command."""

    wall_s: float
    cpu_s: float
    slice_ms: list[float]


def _env(tree: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ADACSC_SLICE_WORKERS", "GOMP_SPINCOUNT")}
    env.update(PYTHONPATH=str(tree), ADACSC_LOG_LEVEL="INFO", **extra)
    return env


def run_recon(tree: Path, scan: Path, workdir: Path, **extra: str) -> Run:
    """`adacsc recon -o out.h5 SCAN` in a fresh process: wall and CPU seconds, per-slice times."""
    out = workdir / f"out_{time.monotonic_ns()}.h5"
    errors = workdir / "stderr.txt"
    with open(errors, "w") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "adacsc", "recon", "-o", str(out), str(scan)],
                                   env=_env(tree, **extra), stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    text = errors.read_text()
    if process.returncode != 0:
        raise RuntimeError(f"adacsc recon failed ({process.returncode}):\n{text[-3000:]}")
    out.unlink(missing_ok=True)
    return Run(wall, usage.ru_utime + usage.ru_stime, [float(ms) for ms in SLICE_LINE.findall(text)])


class Competitor:
    """A 2-thread matrix product loop in its own process, bounded in time."""

    def __init__(self, max_s: float) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
        self.process = subprocess.Popen([sys.executable, "-c", COMPETITOR, str(max_s)], env=env)
        time.sleep(2.0)  # torch imported and the loop running

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def _variants(args: argparse.Namespace) -> dict[str, tuple[Path, dict[str, str]]]:
    variants = {"parallel": (TREE, {}), "serial": (TREE, {"ADACSC_SLICE_WORKERS": "1"})}
    if args.baseline:
        variants["baseline"] = (args.baseline, {})
    return variants


def _summary(name: str, runs: list[Run], slices: int) -> str:
    wall = statistics.median(r.wall_s for r in runs)
    cpu = statistics.median(r.cpu_s for r in runs) / slices
    per_slice = statistics.median(ms for r in runs for ms in r.slice_ms) if runs[0].slice_ms else float("nan")
    return (f"{name:>22}: wall {wall:6.2f} s (min {min(r.wall_s for r in runs):6.2f}), CPU per slice "
            f"{cpu:5.2f} s, slice reconstruction median {per_slice / 1000:5.2f} s")


def section_recon(args: argparse.Namespace, workdir: Path, conditions: tuple[bool, ...]
                  ) -> dict[tuple[str, bool], list[Run]]:
    """Every variant under every condition (idle False, beside the competitor True), alternated
    within each round."""
    runs: dict[tuple[str, bool], list[Run]] = {}
    for round_ in range(args.pairs):
        for name, (tree, extra) in _variants(args).items():
            for loaded in conditions:
                competitor = Competitor(args.competitor_max_s) if loaded else None
                try:
                    run = run_recon(tree, args.scan, workdir, **extra)
                finally:
                    if competitor is not None:
                        competitor.stop()
                runs.setdefault((name, loaded), []).append(run)
                log.debug("round %d %s%s: %.2f s", round_, name, " loaded" if loaded else "", run.wall_s)
    return runs


class ServerProcess:
    """`adacsc serve --port 0` in a subprocess; its log goes to a file."""

    def __init__(self, log_path: Path) -> None:
        self._log = open(log_path, "w")
        self.log_path = log_path
        self.process = subprocess.Popen([sys.executable, "-m", "adacsc", "serve", "--port", "0", "--workers", "1"],
                                        env=_env(TREE), stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            match = re.search(r"listening on [^ ]+:(\d+)", log_path.read_text())
            if match:
                self.port = int(match.group(1))
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)
        self._log.close()


def section_streaming(args: argparse.Namespace, workdir: Path) -> None:
    server = ServerProcess(workdir / "serve.log")
    try:
        send_scan(args.scan, None, port=server.port, config_name="adacsc_lowfield")  # warm-up
        for pace in args.paces:
            ratios, latencies, recons = [], [], []
            for _ in range(args.pairs):
                result = send_scan(args.scan, None, port=server.port, config_name="adacsc_lowfield", pace=pace)
                if not result.ok:
                    raise RuntimeError(f"streaming failed: {result.errors}")
                for key, latency in result.latencies().items():
                    recon = result.slice_recon_s.get(key)
                    if recon:
                        latencies.append(latency)
                        recons.append(recon)
                        ratios.append(latency / recon)
                worst = max(result.latencies().values())
                log.debug("pace %s: sent in %.2f s, worst latency %.2f s", pace, result.send_seconds, worst)
            log.info("streaming --pace %-13s latency median %5.2f s (max %5.2f), reconstruction median %5.2f s, "
                     "latency / reconstruction median %4.2f, max %4.2f (%d slices)", pace,
                     statistics.median(latencies), max(latencies), statistics.median(recons),
                     statistics.median(ratios), max(ratios), len(ratios))
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=["recon", "contention", "streaming"],
                        choices=["recon", "contention", "streaming"])
    parser.add_argument("--scan", type=Path, default=bundled_scan(), help="ISMRMRD scan (default: the bundled FSE)")
    parser.add_argument("--slices", type=int, default=4, help="slices in the scan (for per-slice CPU time)")
    parser.add_argument("--pairs", type=int, default=3, help="rounds of alternated variants")
    parser.add_argument("--baseline", type=Path, help="another source tree's gadgets/ folder to compare with")
    parser.add_argument("--paces", nargs="+", default=["realtime", "realtime:0.1"], help="client --pace values")
    parser.add_argument("--competitor-max-s", type=float, default=300.0, help="upper bound of one competitor run")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level="DEBUG" if args.verbose else "INFO", format="%(message)s")
    for noisy in ("adacsc", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log.info("bench_scan: %s, %d CPU(s), load average %s, %d pair(s)", args.scan.name, os.cpu_count() or 0,
             " ".join(f"{v:.2f}" for v in os.getloadavg()), args.pairs)
    with tempfile.TemporaryDirectory(prefix="bench_scan_") as tmp:
        workdir = Path(tmp)
        if "recon" in args.sections or "contention" in args.sections:
            conditions = (False, True) if "contention" in args.sections else (False,)
            runs = section_recon(args, workdir, conditions)
            wall = {key: statistics.median(r.wall_s for r in values) for key, values in runs.items()}
            cpu = {key: statistics.median(r.cpu_s for r in values) for key, values in runs.items()}
            log.info("recon (idle):")
            for name in _variants(args):
                log.info("%s", _summary(name, runs[(name, False)], args.slices))
            log.info("%22s: %.2fx faster than serial", "parallel", wall[("serial", False)] / wall[("parallel", False)])
            if args.baseline:
                log.info("%22s: %.2fx faster than baseline", "parallel",
                         wall[("baseline", False)] / wall[("parallel", False)])
            if True in conditions:
                log.info("recon beside a 2-thread matrix product loop:")
                for name in _variants(args):
                    log.info("%s", _summary(name + " loaded", runs[(name, True)], args.slices))
                    log.info("%22s  slowdown %.2fx, CPU per slice %.2fx of idle", "",
                             wall[(name, True)] / wall[(name, False)], cpu[(name, True)] / cpu[(name, False)])
        if "streaming" in args.sections:
            section_streaming(args, workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
