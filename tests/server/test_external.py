"""The `<connect>` route: `adacsc external` runs as its own long-lived process and this test plays
Gadgetron's side of configs/adacsc_lowfield_connect.xml byte for byte (CONFIG with the node's
<configuration>, HEADER, ImageArrays, CLOSE; then read until CLOSE), several scans in a row on the
same process, a failing scan in between, and a clean exit on SIGTERM."""

import contextlib
import os
import threading
import signal
import socket
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import ismrmrd
import numpy as np
import pytest

from adacsc.chain import wire
from adacsc.chain.config import load_chain
from adacsc.chain.runner import Chain
from adacsc.server import external
from adacsc.server.notify import PORT, SESSION
from adacsc.io.dataset import InputScan
from adacsc.simulation.scanner import SimulationConfig, simulate_scan
from support.gadgetron_host import CLOSE, CONFIG, HEADER, ExactReader
from support import REPO
from support.server import Notifications

CONFIGS = REPO / "configs"


class External(NamedTuple):
    """A running `adacsc external` process."""

    process: subprocess.Popen
    port: int
    log_path: Path
    notes: Notifications
ERROR = 8
FAST = {"mode": "scalar", "iterations": "4", "super_resolution": "1"}


@pytest.fixture(scope="module")
def front_end_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list[object]]:
    """(header, the ImageArrays the connect chain's front end hands to the CSC node) of a tiny scan."""
    path = tmp_path_factory.mktemp("connect") / "tiny.h5"
    simulate_scan(path, SimulationConfig(matrix=32, coils=2, slices=2, noise=0.02, seed=5))
    chain = load_chain("adacsc_frontend").with_overrides({"coil_combination.output": "image_array"})
    out: list[object] = []
    with InputScan(path) as scan:
        header = scan.header_bytes()
        running = Chain(chain, header, out.append).start()
        for acquisition in scan.acquisitions():
            running.push(acquisition)
        running.close()
    return header, out


def connect_configuration(**overrides: str) -> ET.Element:
    """The CSC node's <configuration> from the connect chain, with some properties changed."""
    root = ET.parse(CONFIGS / "adacsc_lowfield_connect.xml").getroot()
    node = next(e for e in root.find("stream") if e.find("connect") is not None)
    configuration = node.find("configuration")
    for prop in configuration.iter("property"):
        if prop.get("name") in overrides:
            prop.set("value", overrides.pop(prop.get("name")))
    for name, value in overrides.items():
        ET.SubElement(configuration, "property", {"name": name, "value": value})
    return configuration


def gadgetron_side(port: int, configuration: ET.Element, header: bytes, items: list[object],
                   timeout: float = 120.0) -> tuple[list[tuple[int, object]], list[str]]:
    """What Gadgetron's External node does for <connect>: CONFIG, HEADER, items, CLOSE; returns
    ((message id, item) received, ERROR texts) up to the process's CLOSE."""
    _id, _u32, _u64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")
    config = b'<?xml version="1.0"?>\n' + ET.tostring(configuration)
    sock = socket.create_connection(("localhost", port), timeout=timeout)
    received, errors = [], []
    try:
        sock.sendall(_id.pack(CONFIG) + _u32.pack(len(config)) + config)
        sock.sendall(_id.pack(HEADER) + _u32.pack(len(header)) + header)
        for item in items:
            sock.sendall(wire.encode(item))
        sock.sendall(_id.pack(CLOSE))
        reader = ExactReader(sock)
        while True:
            (mid,) = _id.unpack(reader.read(_id.size))
            if mid == CLOSE:
                break
            if mid == ERROR:
                (length,) = _u64.unpack(reader.read(_u64.size))
                errors.append(reader.read(length).decode())
                continue
            received.append((mid, wire.read_payload(mid, reader)))
    finally:
        sock.close()
    return received, errors


@contextlib.contextmanager
def running_external(folder: Path, *options: str) -> Iterator[External]:
    """`adacsc external --gadget csc` on a free port (which it notifies) as its own process."""
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "external.log"
    notes = Notifications()
    env = notes.environment({**os.environ, "ADACSC_LOG_LEVEL": "INFO", "ADACSC_NOISE_DIR": str(folder / "noise")})
    with log_path.open("w") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "adacsc", "external", "--port", "0",
                                    "--gadget", "csc", *options],
                                   stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        try:
            port = int(notes.wait(PORT, process=process))
        except AssertionError as err:
            raise AssertionError(f"adacsc external did not start ({err}):\n{log_path.read_text()}") from err
        yield External(process, port, log_path, notes)
    finally:
        notes.close()
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def external_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[External]:
    """One long-running process shared by the tests that send it scans."""
    with running_external(tmp_path_factory.mktemp("external"), "--no-preload") as started:
        yield started


def images_by_series(received: list[tuple[int, object]]) -> dict[int, list[ismrmrd.Image]]:
    series: dict[int, list[ismrmrd.Image]] = {}
    for mid, image in received:
        assert mid == 1022 and isinstance(image, ismrmrd.Image)
        series.setdefault(image.image_series_index, []).append(image)
    return {k: sorted(v, key=lambda im: im.slice) for k, v in series.items()}


def test_connect_config_matches_the_command_defaults() -> None:
    root = ET.parse(CONFIGS / "adacsc_lowfield_connect.xml").getroot()
    connect = next(e.find("connect") for e in root.find("stream") if e.find("connect") is not None)
    assert int(connect.get("port")) == external.DEFAULT_PORT
    assert connect.get("address") == "localhost" and external.DEFAULT_GADGET == "csc"


def test_serves_scan_after_scan_like_the_in_process_chain(
        external_process: External, front_end_output: tuple[bytes, list[object]]) -> None:
    process, port, log_path, _ = external_process
    header, arrays = front_end_output
    configuration = connect_configuration(**FAST)
    first, errors = gadgetron_side(port, configuration, header, arrays)
    assert errors == []
    second, errors = gadgetron_side(port, configuration, header, arrays)
    assert errors == [] and process.poll() is None
    one, two = images_by_series(first), images_by_series(second)
    assert sorted(one) == [1, 2, 3] and all(len(v) == 2 for v in one.values())
    for series in one:
        for a, b in zip(one[series], two[series]):
            np.testing.assert_array_equal(a.data, b.data)

    # the same node run in process (the chain adacsc recon runs) gives the same images
    local: list[object] = []
    chain = load_chain("adacsc_lowfield").with_overrides(FAST)
    csc_only = type(chain)(chain.name, chain.nodes[-1:])
    running = Chain(csc_only, header, local.append).start()
    for item in arrays:
        running.push(item)
    running.close()
    reference = images_by_series([(1022, image) for image in local])
    for series in one:
        for a, b in zip(one[series], reference[series]):
            np.testing.assert_allclose(a.data, b.data, rtol=1e-5, atol=1e-6 * np.abs(b.data).max())
    log = log_path.read_text()
    assert log.count(": done in ") >= 2 and "Traceback" not in log


def test_a_failing_scan_is_reported_and_the_next_one_is_served(
        external_process: External, front_end_output: tuple[bytes, list[object]]) -> None:
    process, port, _, _ = external_process
    header, arrays = front_end_output
    received, errors = gadgetron_side(port, connect_configuration(**{**FAST, "iterations": "-1"}), header, arrays)
    assert received == [] and len(errors) == 1 and "iterations='-1': must be >= 0" in errors[0]
    received, errors = gadgetron_side(port, connect_configuration(**FAST, no_such_property="1"), header, arrays)
    assert received == [] and "unknown property no_such_property" in errors[0]
    received, errors = gadgetron_side(port, connect_configuration(**FAST, send_maps="false"), header, arrays)
    assert errors == [] and sorted(images_by_series(received)) == [1, 2]
    assert process.poll() is None


def test_a_peer_that_vanishes_mid_message_does_not_hurt_the_process(
        external_process: External, front_end_output: tuple[bytes, list[object]]) -> None:
    process, port, log_path, notes = external_process
    header, arrays = front_end_output
    seen = notes.mark()  # a failed scan notifies its end before its client hears of it
    config = ET.tostring(connect_configuration(**FAST))
    with socket.create_connection(("localhost", port), timeout=30) as sock:
        sock.sendall(struct.pack("<HI", CONFIG, len(config)) + config + struct.pack("<HI", HEADER, len(header)) + header)
        sock.sendall(wire.encode(arrays[0])[:200])  # then the "scanner" is gone
    notes.wait(SESSION, r"ended \d+ failed", after=seen, process=process)
    assert "closed the connection in the middle of a message" in log_path.read_text()
    received, errors = gadgetron_side(port, connect_configuration(**FAST), header, arrays)
    assert errors == [] and len(received) == 6 and process.poll() is None


def test_sigterm_finishes_the_running_scan_then_exits(
        tmp_path: Path, front_end_output: tuple[bytes, list[object]]) -> None:
    header, arrays = front_end_output
    with running_external(tmp_path / "external", "--no-preload") as (process, port, log_path, notes):
        result: dict[str, object] = {}

        def scan() -> None:
            result["received"], result["errors"] = gadgetron_side(
                port, connect_configuration(**{**FAST, "iterations": "40"}), header, arrays)

        sender = threading.Thread(target=scan)
        sender.start()
        notes.wait(SESSION, "started", process=process)
        process.send_signal(signal.SIGTERM)
        sender.join(60)
        assert process.wait(timeout=60) == 0
        assert result["errors"] == [] and len(result["received"]) == 6  # the running scan completed
        log = log_path.read_text()
        assert "SIGTERM received" in log and "1 scan(s) served, 0 failed" in log
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
