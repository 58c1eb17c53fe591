"""Streaming server figures: throughput (protocol overhead) and per-slice latency under pacing.

Starts `adacsc serve` in a subprocess on a free loopback port, writes a synthetic scan (4 coils,
256-sample readouts by default: 2x oversampled 128 x 128 slices, noise readouts first), then

  throughput   N concurrent clients (N = 1 and 4 by default) each send the scan as fast as the
               server takes it (acquisitions pre-encoded, so the client costs little), through the
               front-end chain only (adacsc_frontend: no CSC). Reports readouts/s from the first
               byte sent to the last CLOSE received, summed over the scans, and the send-phase rate.
  latency      one client paces the readouts (--pace readouts/s, as a scanner would) and measures,
               per slice, the time from its last readout sent to its images received; compared with
               the offline reconstruction time per slice (adacsc.replay, same chain, same machine).

    python benchmarks/bench_server.py                               # both, front-end chain
    python benchmarks/bench_server.py --mode latency --config adacsc_lowfield --pace 200
    python benchmarks/bench_server.py --mode throughput --scans 1 4 8 --strict
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import ismrmrd
import ismrmrd.xsd as xsd
import numpy as np

from adacsc.chain.config import load_chain
from adacsc.client import StreamClient, read_acquisitions, send_scan, stream
from adacsc.io.dataset import InputScan
from adacsc.mr.fft import fftc
from adacsc.replay import replay
from adacsc.server import protocol as proto

SERVER_LAUNCHER = """
import argparse, logging, sys
from adacsc.commands import serve
logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
parser = argparse.ArgumentParser(); sub = parser.add_subparsers(dest="command")
serve.add_parser(sub)
args = parser.parse_args(["serve"] + sys.argv[1:])
sys.exit(args.func(args))
"""


def make_scan(path: Path, coils: int = 4, samples: int = 256, slices: int = 8, noise: int = 64,
              tr_ms: float = 10.0, seed: int = 0) -> Path:
    """A 2-D multi-slice Cartesian scan: `samples`-sample readouts (2x oversampled), samples/2 lines
    per slice, an ellipse object seen by smooth coils, white noise; noise readouts first."""
    lines, recon = samples // 2, samples // 2
    rng = np.random.default_rng(seed)
    header = xsd.ismrmrdHeader(
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=2341761))
    header.acquisitionSystemInformation = xsd.acquisitionSystemInformationType(
        systemFieldStrength_T=0.055, receiverChannels=coils, relativeReceiverNoiseBandwidth=0.793,
        coilLabel=[xsd.coilLabelType(coilNumber=c, coilName=f"coil{c}") for c in range(coils)])
    header.measurementInformation = xsd.measurementInformationType(
        measurementID=f"bench_{coils}_{samples}_{slices}_{seed}", patientPosition=xsd.patientPositionType.HFS)
    encoding = xsd.encodingType(
        encodedSpace=xsd.encodingSpaceType(matrixSize=xsd.matrixSizeType(x=samples, y=lines, z=1),
                                           fieldOfView_mm=xsd.fieldOfViewMm(x=440, y=220, z=5)),
        reconSpace=xsd.encodingSpaceType(matrixSize=xsd.matrixSizeType(x=recon, y=lines, z=1),
                                         fieldOfView_mm=xsd.fieldOfViewMm(x=220, y=220, z=5)),
        encodingLimits=xsd.encodingLimitsType(
            kspace_encoding_step_1=xsd.limitType(minimum=0, maximum=lines - 1, center=lines // 2),
            slice=xsd.limitType(minimum=0, maximum=slices - 1, center=0)),
        trajectory=xsd.trajectoryType.CARTESIAN)
    header.encoding = [encoding]
    path.unlink(missing_ok=True)
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=True)
    dataset.write_xml_header(xsd.ToXML(header))
    stamp = 1_000_000
    for n in range(noise):
        samples_ = (rng.standard_normal((coils, samples)) + 1j * rng.standard_normal((coils, samples))) / np.sqrt(2)
        acquisition = ismrmrd.Acquisition.from_array(samples_.astype(np.complex64))
        acquisition.setFlag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
        acquisition.sample_time_us = 5.0
        acquisition.acquisition_time_stamp = stamp + n
        dataset.append_acquisition(acquisition)
    yy, xx = np.mgrid[:lines, :samples]
    obj = ((((xx - samples / 2) / (samples / 4)) ** 2 + ((yy - lines / 2) / (lines / 2.5)) ** 2) < 1).astype(complex)
    maps = np.stack([np.exp(-(((xx - samples / 2 - 40 * np.cos(2 * np.pi * c / coils)) / samples) ** 2
                               + ((yy - lines / 2 - 40 * np.sin(2 * np.pi * c / coils)) / lines) ** 2))
                     for c in range(coils)])
    ticks = tr_ms / 2.5
    for s in range(slices):
        kspace = fftc(maps * obj * (1 + 0.1 * s)) * 20
        kspace += (rng.standard_normal(kspace.shape) + 1j * rng.standard_normal(kspace.shape)) / np.sqrt(2)
        for line in range(lines):
            acquisition = ismrmrd.Acquisition.from_array(kspace[:, line, :].astype(np.complex64))
            acquisition.idx.kspace_encode_step_1 = line
            acquisition.idx.slice = s
            acquisition.sample_time_us = 10.0
            acquisition.center_sample = samples // 2
            acquisition.acquisition_time_stamp = int(stamp + noise + 10 + (s * lines + line) * ticks)
            if line == 0:
                acquisition.setFlag(ismrmrd.ACQ_FIRST_IN_SLICE)
            if line == lines - 1:
                acquisition.setFlag(ismrmrd.ACQ_LAST_IN_SLICE)
            dataset.append_acquisition(acquisition)
    dataset.close()
    return path


class ServerProcess:
    """`adacsc serve` in a subprocess on a free port; stderr goes to a log file."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.process = subprocess.Popen([sys.executable, "-c", SERVER_LAUNCHER, "--port", "0", *args],
                                        stdout=self._log, stderr=subprocess.STDOUT)
        self.port = self._wait_port()

    def _wait_port(self, timeout: float = 120.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"listening on [^ ]+:(\d+)", self.log_path.read_text())
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        raise RuntimeError("server did not start")

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


def throughput(port: int, scan: Path, scans: int, config: str) -> dict[str, float]:
    """N concurrent scans sent unpaced from pre-encoded messages."""
    with InputScan(scan) as opened:
        header, group = opened.header_bytes(), opened.group
    messages = [proto.item_message(a) for a in read_acquisitions(scan, group)]
    clients = [StreamClient("127.0.0.1", port, timeout=600) for _ in range(scans)]
    done = []

    text = chain_text(config)

    def run(client: StreamClient) -> None:
        stream(client, header, messages, config_name=None if text else config, config_text=text)
        done.append(time.perf_counter())

    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sent = max(done) - started
    results = [c.wait(600) for c in clients]
    total = time.perf_counter() - started
    failures = [r.errors for r in results if not r.ok]
    if failures:
        raise RuntimeError(f"scans failed: {failures}")
    readouts = sum(r.acquisitions for r in results)
    images = sum(sum(r.images.values()) for r in results)
    return {"scans": scans, "readouts": readouts, "images": images, "seconds": total,
            "readouts_per_s": readouts / total, "send_readouts_per_s": readouts / sent}


def offline_seconds_per_slice(scan: Path, config: str, strict: bool, out: Path) -> float:
    chain = load_chain(config)
    result = replay(scan, out, chain, "offline", strict=strict)
    return result.seconds / result.slices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("both", "throughput", "latency"), default="both")
    parser.add_argument("--scans", type=int, nargs="+", default=[1, 4], help="concurrent scans (throughput)")
    parser.add_argument("--chains", nargs="+", choices=sorted(CHAINS), default=list(CHAINS),
                        help="chains for the throughput runs")
    parser.add_argument("--coils", type=int, default=4)
    parser.add_argument("--samples", type=int, default=256, help="samples per readout (2x oversampled)")
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--config", default="adacsc_frontend", help="chain for the latency run")
    parser.add_argument("--pace", default="1000", help="latency run: readouts/s or realtime[:F]")
    parser.add_argument("--strict", action="store_true", help="server round-trips every hop (slower)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--keep", type=Path, help="folder for the scan, outputs and the server log")
    args = parser.parse_args()

    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_server_"))
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ADACSC_NOISE_DIR", str(folder / "noise"))
    scan = make_scan(folder / "scan.h5", args.coils, args.samples, args.slices)
    with InputScan(scan) as opened:
        count = opened.number_of_acquisitions()
    print(f"scan: {count} readouts ({args.coils} coils x {args.samples} samples), {args.slices} slices; "
          f"server: {'strict' if args.strict else 'non-strict'}, {args.workers} workers, cpus={os.cpu_count()}")
    server_args = ["--workers", str(args.workers)] + (["--strict"] if args.strict else [])
    server = ServerProcess(server_args, folder / "server.log")
    try:
        if args.mode in ("both", "throughput"):
            throughput(server.port, scan, 1, "adacsc_frontend")  # warm-up
            for name, scans in ((name, scans) for name in args.chains for scans in args.scans):
                figures = throughput(server.port, scan, scans, name)
                print(f"throughput, {name}, {scans} concurrent scan(s): {figures['readouts_per_s']:,.0f} "
                      f"readouts/s end to end ({figures['readouts']} readouts, {figures['images']} images, "
                      f"{figures['seconds']:.2f} s); send phase {figures['send_readouts_per_s']:,.0f} readouts/s")
        if args.mode in ("both", "latency"):
            per_slice = offline_seconds_per_slice(scan, args.config, args.strict, folder / "offline.h5")
            result = send_scan(scan, folder / "online.h5", port=server.port, config_name=args.config,
                               pace=args.pace, group="online")
            if not result.ok:
                raise RuntimeError(f"paced scan failed: {result.errors}")
            latencies = list(result.latencies().values())
            median = statistics.median(latencies)
            print(f"latency, {args.config}, paced at {args.pace} readouts/s: median {median * 1000:.1f} ms, "
                  f"max {max(latencies) * 1000:.1f} ms over {len(latencies)} slices; offline reconstruction "
                  f"{per_slice * 1000:.1f} ms per slice (latency / offline = {median / per_slice:.2f})")
    finally:
        server.stop()
    print(f"files in {folder}")


if __name__ == "__main__":
    main()
