"""Streaming server figures: throughput (protocol overhead) and per-slice latency under pacing.

Starts `adacsc serve` in a subprocess on a free loopback port, writes synthetic scans (4 coils,
256-sample readouts by default: 2x oversampled 128 x 128 slices, noise readouts first), then

  throughput   N concurrent clients (N = 1 and 4 by default) send the scan as fast as the server
               takes it (acquisitions pre-encoded, so the clients cost little), through
                 passthrough      one gadget passing readouts on: the protocol alone (decode,
                                  queue into the chain, accounting)
                 readouts         prewhitening + oversampling removal + buffering
                 adacsc_frontend  the whole front end with coil maps and images back (no CSC)
               Reports readouts/s from the first byte sent to the last CLOSE received (all scans
               together), the send-phase rate and the server's CPU time per readout.
  latency      a client paces the readouts (--pace, as a scanner would) and measures, per slice,
               the time from its last readout sent to its images received; the same paced stream
               is fed to the same chain in process (no sockets) for the reconstruction's own share.

Runs are repeated (--repeat) because shared machines are noisy; medians and best values are shown.

    python benchmarks/bench_server.py                               # both, front-end chain
    python benchmarks/bench_server.py --mode throughput --chains passthrough --scans 1 4 8
    python benchmarks/bench_server.py --mode latency --config adacsc_lowfield --slices 4 --pace 20
    python benchmarks/bench_server.py --strict                      # strict hops, for comparison
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import ismrmrd

from adacsc.chain.config import load_chain
from adacsc.chain.runner import Chain
from adacsc.commands.recon import parse_overrides
from adacsc.io.images import split_image_array
from gadgetron.types import ImageArray
from adacsc.client import Pacer, StreamClient, send_scan, stream
from adacsc.io.dataset import InputScan
from adacsc.server import notify
from adacsc.server import protocol as proto
from adacsc.simulation.small_scan import write_small_scan


class Supervisor:
    """What `adacsc serve` notifies (adacsc.server.notify, sd_notify) on a datagram socket of the
    abstract namespace; `environment()` names it for the server process."""

    def __init__(self) -> None:
        self.name = f"adacsc-bench-{os.getpid()}-{id(self)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)

    def environment(self) -> dict[str, str]:
        return {**os.environ, notify.ENVIRONMENT: "@" + self.name}

    def wait(self, key: str, process: subprocess.Popen, timeout: float = 300.0) -> str:
        """The value of the next notification that sets `key`; RuntimeError when `process`
        exits or `timeout` s pass first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            self.sock.settimeout(min(1.0, max(0.01, deadline - time.monotonic())))
            try:
                data = self.sock.recv(65536).decode()
            except TimeoutError:
                continue
            for line in data.splitlines():
                if line.startswith(f"{key}="):
                    return line.split("=", 1)[1]
        raise RuntimeError(f"the server did not notify {key}")


class ServerProcess:
    """`adacsc serve` in a subprocess on a free port (which it notifies); stderr goes to a log file."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")
        supervisor = Supervisor()
        self.process = subprocess.Popen([sys.executable, "-m", "adacsc", "serve", "--port", "0", *args],
                                        stdout=self._log, stderr=subprocess.STDOUT, env=supervisor.environment())
        try:
            self.port = int(supervisor.wait(notify.PORT, self.process))
        except RuntimeError as err:
            raise RuntimeError(f"{err}: {log_path.read_text()[-2000:]}") from err
        finally:
            supervisor.sock.close()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


def _node(module: str, target: str, **properties: str) -> str:
    props = "".join(f'<property name="{k}" value="{v}"/>' for k, v in properties.items())
    return (f'<external><execute name="adacsc.gadgets.{module}" target="{target}" type="python"/>'
            f"<configuration>{props}</configuration></external>")


CHAINS = {
    # the protocol alone: one gadget that passes readouts straight through (the server counts and
    # discards non-image outputs), so the figure is reading, decoding, queueing and accounting
    "passthrough": [_node("noise_adjust", "noise_adjust", perform_noise_adjust="false")],
    # the readout path: prewhitening, oversampling removal, buffering (ReconData out, not sent)
    "readouts": [_node("noise_adjust", "noise_adjust"), _node("readout_buffer", "readout_buffer")],
    # the whole front end, images back: coil maps and combination per slice included
    "adacsc_frontend": None,
}


def chain_text(name: str) -> str | None:
    nodes = CHAINS[name]
    return None if nodes is None else f"<configuration><version>2</version><stream>{''.join(nodes)}</stream></configuration>"


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), 0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def throughput(port: int, scan: Path, scans: int, config: str, server_pid: int = 0) -> dict[str, float]:
    """N concurrent scans sent unpaced from pre-encoded messages."""
    header, messages = read_messages(scan)
    clients = [StreamClient("127.0.0.1", port, timeout=600) for _ in range(scans)]
    done = []

    text = chain_text(config)

    def run(client: StreamClient) -> None:
        stream(client, header, messages, config_name=None if text else config, config_text=text)
        done.append(time.perf_counter())

    cpu_before = process_cpu_seconds(server_pid)
    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sent = max(done) - started
    results = [c.wait(600) for c in clients]
    total = time.perf_counter() - started
    cpu = process_cpu_seconds(server_pid) - cpu_before
    failures = [r.errors for r in results if not r.ok]
    if failures:
        raise RuntimeError(f"scans failed: {failures}")
    readouts = sum(r.acquisitions for r in results)
    images = sum(sum(r.images.values()) for r in results)
    return {"scans": scans, "readouts": readouts, "images": images, "seconds": total,
            "readouts_per_s": readouts / total, "send_readouts_per_s": readouts / sent,
            "server_cpu_us_per_readout": cpu / readouts * 1e6}


def inprocess_latencies(scan: Path, config: str, pace: str, strict: bool,
                        overrides: dict[str, str] | None = None) -> dict[tuple[int, int], float]:
    """The same paced stream fed straight into the chain in this process (no sockets): per slice,
    last readout pushed -> its images out. This is the reconstruction's own share of the latency."""
    opened = InputScan(scan)
    header = opened.header_bytes()
    chain = load_chain(config).with_overrides(overrides or {})
    outputs: dict[tuple[int, int], float] = {}

    def on_output(item: object) -> None:
        images = split_image_array(item) if isinstance(item, ImageArray) else [item]
        for image in images:
            if isinstance(image, ismrmrd.Image):
                outputs[(image.slice, image.repetition)] = time.perf_counter()

    running = Chain(chain, header, on_output, strict=strict).start()
    pacer = Pacer(pace)
    pushed: dict[tuple[int, int], float] = {}
    for acquisition in opened.acquisitions():
        pacer.wait(acquisition)
        running.push(acquisition)
        if not acquisition.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            pushed[(acquisition.idx.slice, acquisition.idx.repetition)] = time.perf_counter()
    running.close()
    opened.close()
    return {key: outputs[key] - t for key, t in pushed.items() if key in outputs}


def _ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms"


def count_readouts(scan: Path) -> int:
    with InputScan(scan) as opened:
        return opened.number_of_acquisitions()


def read_messages(scan: Path) -> tuple[bytes, list[bytes]]:
    """(header, encoded ACQUISITION messages) of a file."""
    with InputScan(scan) as opened:
        return opened.header_bytes(), [proto.item_message(a) for a in opened.acquisitions()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("both", "throughput", "latency"), default="both")
    parser.add_argument("--scans", type=int, nargs="+", default=[1, 4], help="concurrent scans (throughput)")
    parser.add_argument("--chains", nargs="+", choices=sorted(CHAINS), default=list(CHAINS),
                        help="chains for the throughput runs")
    parser.add_argument("--coils", type=int, default=4)
    parser.add_argument("--samples", type=int, default=256, help="samples per readout (2x oversampled)")
    parser.add_argument("--slices", type=int, default=16, help="slices of the latency scan")
    parser.add_argument("--throughput-slices", type=int, default=64, help="slices of the throughput scan")
    parser.add_argument("--config", default="adacsc_frontend", help="chain for the latency run")
    parser.add_argument("--pace", default="500", help="latency run: readouts/s or realtime[:F]")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="PROPERTY=VALUE",
                        help="latency run: chain property override (in process and sent as JSON parameters)")
    parser.add_argument("--strict", action="store_true", help="server round-trips every hop (slower)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1,
                        help="latency: discarded runs first (first-use loading of models, caches)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each measurement (shared machines are noisy): median and best are shown")
    parser.add_argument("--keep", type=Path, help="folder for the scan, outputs and the server log")
    args = parser.parse_args()
    overrides = parse_overrides(args.overrides)

    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_server_"))
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ADACSC_NOISE_DIR", str(folder / "noise"))
    print(f"server: {'strict' if args.strict else 'non-strict'}, {args.workers} workers; cpus={os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    server_args = ["--workers", str(args.workers)] + (["--strict"] if args.strict else [])
    server = ServerProcess(server_args, folder / "server.log")
    try:
        if args.mode in ("both", "throughput"):
            scan = write_small_scan(folder / "throughput.h5", args.coils, args.samples // 2, args.throughput_slices,
                                    noise=64, tr_ms=10.0)
            print(f"throughput scan: {count_readouts(scan)} readouts of {args.coils} coils x {args.samples} samples, "
                  f"{args.throughput_slices} slices, sent unpaced from pre-encoded messages")
            throughput(server.port, scan, 1, "passthrough")  # warm-up
            for name, scans in ((name, scans) for name in args.chains for scans in args.scans):
                runs = [throughput(server.port, scan, scans, name, server.process.pid) for _ in range(args.repeat)]
                rates = sorted(r["readouts_per_s"] for r in runs)
                sends = sorted(r["send_readouts_per_s"] for r in runs)
                print(f"  {name:16s} {scans} concurrent scan(s): {statistics.median(rates):9,.0f} readouts/s end to end "
                      f"(median of {len(runs)}, best {rates[-1]:,.0f}; {runs[0]['readouts']} readouts, "
                      f"{runs[0]['images']} images per run); send phase median {statistics.median(sends):,.0f}/s; "
                      f"server CPU {statistics.median(r['server_cpu_us_per_readout'] for r in runs):.0f} us/readout")
        if args.mode in ("both", "latency"):
            scan = write_small_scan(folder / "latency.h5", args.coils, args.samples // 2, args.slices, noise=64,
                                    tr_ms=10.0)
            print(f"latency scan: {count_readouts(scan)} readouts, {args.slices} slices, paced at {args.pace} "
                  f"readouts/s, chain {args.config}; runs alternate in process / over the server")
            local: list[float] = []
            online: list[float] = []
            for run in range(-args.warmup, args.repeat):  # negative runs warm caches up (discarded)
                if run < 0:
                    inprocess_latencies(scan, args.config, args.pace, args.strict, overrides)
                    send_scan(scan, None, port=server.port, config_name=args.config, pace=args.pace,
                              overrides=overrides or None)
                    continue
                local += inprocess_latencies(scan, args.config, args.pace, args.strict, overrides).values()
                result = send_scan(scan, folder / "online.h5", port=server.port, config_name=args.config,
                                   pace=args.pace, group=f"online{run}", overrides=overrides or None)
                if not result.ok:
                    raise RuntimeError(f"paced scan failed: {result.errors}")
                online += result.latencies().values()
            print(f"  in process (reconstruction alone): {_ms(local)} over {len(local)} slices")
            print(f"  over the server:                   {_ms(online)} over {len(online)} slices")
            print(f"  server overhead: median {(statistics.median(online) - statistics.median(local)) * 1000:+.1f} ms, "
                  f"ratio {statistics.median(online) / statistics.median(local):.2f} (target <= 1.20)")
    finally:
        server.stop()
    print(f"files in {folder}")


if __name__ == "__main__":
    main()
