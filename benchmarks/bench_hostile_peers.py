"""How long idle, trickling and non-reading peers delay a normal scan on a default `adacsc serve`.

Starts `adacsc serve` (default settings, or the options after --) on a free loopback port and
times a normal scan of the front-end chain twice: alone, then right after these peers connect:

  --idle N        connections that send nothing                                (default 10)
  --slowloris N   connections that send a config and header one byte every 4 s (default 2)
  --non-reading N clients that send a scan with a large output and never read  (default 2)

and prints both times and the delay. Issue 19's target: a delay of at most 30 s at the defaults.

    python benchmarks/bench_hostile_peers.py
    python benchmarks/bench_hostile_peers.py --idle 20 -- --workers 1 --write-stall 10
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_server import ServerProcess, read_messages

from adacsc.client import send_scan
from adacsc.server import protocol as proto
from adacsc.simulation.small_scan import write_small_scan

log = logging.getLogger("bench_hostile_peers")
CONFIG = "adacsc_frontend"


def normal_scan(port: int, scan: Path, out: Path) -> float:
    """Seconds for one scan, from connecting to CLOSE; raises when it fails."""
    started = time.perf_counter()
    result = send_scan(scan, out, port=port, config_name=CONFIG, timeout=600)
    if not result.ok:
        raise RuntimeError(f"the normal scan failed: {result.errors}")
    return time.perf_counter() - started


def slowloris(port: int, data: bytes, stop: threading.Event) -> None:
    """One byte every 4 s until the server closes or `stop`."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for index in range(len(data)):
            if stop.wait(4.0):
                return
            try:
                sock.send(data[index:index + 1])
            except OSError:
                return


def non_reading(port: int, stream: bytes, stop: threading.Event) -> None:
    """Send a whole scan, never read, stay connected until `stop`."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    try:
        sock.settimeout(600)
        sock.sendall(stream)
    except OSError:
        pass
    stop.wait()
    sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=10)
    parser.add_argument("--slowloris", type=int, default=2)
    parser.add_argument("--non-reading", type=int, default=2)
    parser.add_argument("server_args", nargs="*", help="options for adacsc serve (after --)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        scan = write_small_scan(folder / "normal.h5", coils=4, lines=64, slices=2, noise=16)
        big = write_small_scan(folder / "big.h5", coils=2, lines=256, slices=16, noise=8, seed=1)
        header, messages = read_messages(big)
        big_stream = (proto.config_file_message(CONFIG) + proto.header_message(header) + b"".join(messages)
                      + proto.close_message())
        server = ServerProcess(list(args.server_args), folder / "server.log")
        stop = threading.Event()
        peers: list[threading.Thread | socket.socket] = []
        try:
            alone = normal_scan(server.port, scan, folder / "alone.h5")
            log.info("alone: %.2f s", alone)
            peers += [socket.create_connection(("127.0.0.1", server.port)) for _ in range(args.idle)]
            opening = proto.config_file_message(CONFIG) + proto.header_message(header)
            threads = [threading.Thread(target=slowloris, args=(server.port, opening, stop), daemon=True)
                       for _ in range(args.slowloris)]
            threads += [threading.Thread(target=non_reading, args=(server.port, big_stream, stop), daemon=True)
                        for _ in range(args.non_reading)]
            for thread in threads:
                thread.start()
            time.sleep(0.5)  # the peers are connected and sending
            crowded = normal_scan(server.port, scan, folder / "crowded.h5")
        finally:
            stop.set()
            for peer in peers:
                if isinstance(peer, socket.socket):
                    peer.close()
            server.stop()
        print(f"normal scan alone {alone:.2f} s; with {args.idle} idle, {args.slowloris} slowloris and "
              f"{args.non_reading} non-reading peers {crowded:.2f} s: delay {crowded - alone:.2f} s "
              f"(target <= 30 s); server: adacsc serve {' '.join(args.server_args) or '(defaults)'}")


if __name__ == "__main__":
    sys.exit(main())
