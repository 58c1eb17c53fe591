"""Streaming through the CSC chain over a real socket: a slice is reconstructed and sent back as
soon as its readouts are complete, while later slices are still being sent, and the client
reports each slice's latency beside its reconstruction time. Causal checks, no timing."""

import threading
from pathlib import Path

import ismrmrd
import pytest

from adacsc.client import StreamClient, stream, summarise
from adacsc.io.dataset import InputScan
from support.server import threaded_server

pytestmark = pytest.mark.timeout(120)

CSC_FAST = {"iterations": "8", "mode": "scalar", "lambda": "0.1", "beta": "4", "super_resolution": "1"}


def test_first_slice_returns_before_the_next_slice_is_sent(sim_scan: Path) -> None:
    returned_early = threading.Event()
    with threaded_server(workers=1) as running, InputScan(sim_scan) as scan:
        header = scan.header_bytes()
        acquisitions = list(scan.acquisitions())
        first_slice_back = threading.Event()
        client = StreamClient("127.0.0.1", running.port, timeout=60,
                              on_image=lambda image: image.slice == 0 and first_slice_back.set())

        def paced():
            """Hold the second slice back until the first one's images are in."""
            for acquisition in acquisitions:
                yield acquisition
                if acquisition.idx.slice == 0 and acquisition.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE):
                    if first_slice_back.wait(60):
                        returned_early.set()

        stream(client, header, paced(), config_name="adacsc_lowfield", overrides=CSC_FAST)
        result = client.wait(60)
    assert result.ok, result.errors
    assert returned_early.is_set(), "slice 0 came back only after the end of the stream"
    assert set(result.latencies()) == set(result.slice_recon_s) == {(0, 0), (1, 0)}
    assert all(0 < seconds < 60 for seconds in result.slice_recon_s.values())
    assert result.images == {"image_1": 2, "image_2": 2, "image_3": 2}
    assert any("reconstruction" in line and "latency" in line for line in summarise(result))
