"""Bounded resources per scan over real sockets: header-declared sizes checked before anything is
allocated, a budget for received and allocated bytes, client-chosen compute capped, a deadline per
scan, cancellation when the client is gone or the server stops, and a stalled reader dropped."""

import json
import re
import signal
import socket
import threading
from pathlib import Path

import ismrmrd
import ismrmrd.xsd as xsd
import numpy as np
import pytest

from adacsc.client import send_scan
from adacsc.io.dataset import InputScan
from adacsc.server import protocol as proto
from adacsc.server.notify import SESSION
from support.server import (FRONTEND, chain_text, error_texts, exchange, frontend_text, read_replies, scan_messages,
                            start_server_process, threaded_server)

pytestmark = pytest.mark.timeout(180)

CSC_CHAIN = chain_text(("adacsc.gadgets.noise_adjust", "noise_adjust"),
                       ("adacsc.gadgets.readout_buffer", "readout_buffer"),
                       ("adacsc.gadgets.coil_combination", "coil_combination"),
                       ("adacsc.gadgets.csc", "csc"))
ENDLESS = {"iterations": "100000000", "mode": "scalar", "super_resolution": "1"}


def declared(header: bytes, x: int, y: int, channels: int | None = None) -> bytes:
    """The header with another encoded matrix (and receiverChannels; None removes them)."""
    parsed = xsd.CreateFromDocument(header.decode())
    parsed.encoding[0].encodedSpace.matrixSize.x = x
    parsed.encoding[0].encodedSpace.matrixSize.y = y
    parsed.encoding[0].encodingLimits.kspace_encoding_step_1.maximum = y - 1
    parsed.acquisitionSystemInformation.receiverChannels = channels
    return xsd.ToXML(parsed).encode()


def readouts(samples: int, channels: int, count: int) -> bytes:
    """ACQUISITION messages of random data, one phase-encode line each."""
    rng = np.random.default_rng(0)
    messages = []
    for line in range(count):
        acquisition = ismrmrd.Acquisition.from_array(
            rng.standard_normal((channels, samples)).astype(np.complex64))
        acquisition.idx.kspace_encode_step_1 = line
        messages.append(proto.item_message(acquisition))
    return b"".join(messages)


def errors_of(replies: list[proto.Message]) -> str:
    errors = error_texts(replies)
    assert errors and replies[-1].mid == proto.CLOSE, [m.name for m in replies]
    return errors[0]


# ---- sizes declared by the header ---------------------------------------------------------------

@pytest.mark.parametrize("x, y, field", [(4096, 20000, "encodedSpace.matrixSize.y = 20000"),
                                         (4096, 100000, "encodedSpace.matrixSize.y = 100000"),
                                         (8192, 64, "encodedSpace.matrixSize.x = 8192")])
def test_a_huge_declared_matrix_is_refused_at_the_header(x, y, field, small_scan):
    header, acquisitions = scan_messages(small_scan)
    with threaded_server(workers=1) as running:
        replies = exchange(running.port, proto.config_file_message(FRONTEND) + proto.header_message(declared(header, x, y))
                           + b"".join(acquisitions[:4]) + proto.close_message())
        report = running.report(1)[0]
    text = errors_of(replies)
    assert field in text and "operator limit of 4096" in text
    assert report.pushed == 0  # nothing reached a gadget


def test_declared_channels_and_one_slice_buffer_count_against_the_limits(small_scan):
    header, _ = scan_messages(small_scan)
    with threaded_server(workers=1, max_scan_bytes=64 << 20) as running:
        channels = exchange(running.port, proto.config_file_message(FRONTEND)
                            + proto.header_message(declared(header, 64, 64, channels=1000)))
        buffer = exchange(running.port, proto.config_file_message(FRONTEND)
                          + proto.header_message(declared(header, 2048, 2048, channels=8)))
    assert "receiverChannels = 1000 exceeds the operator limit of 128" in errors_of(channels)
    assert "needs 268435456 bytes per slice, over the scan limit of 67108864" in errors_of(buffer)


def test_buffers_are_charged_to_the_scan_budget_before_they_are_allocated(small_scan):
    """Channels not declared: the first readout decides the buffer, which the budget refuses."""
    header, _ = scan_messages(small_scan)
    with threaded_server(workers=1, max_scan_bytes=64 << 20) as running:
        replies = exchange(running.port, proto.config_file_message(FRONTEND)
                           + proto.header_message(declared(header, 2048, 2048)) + readouts(2048, 16, 2)
                           + proto.close_message())
    assert re.search(r"k-space buffer of slice 0 .* needs \d+ bytes; .* exceeds the scan limit of 67108864",
                     errors_of(replies))


def test_server_rss_stays_under_the_configured_limit_for_huge_declared_sizes(small_scan, tmp_path):
    """The F1 case against `adacsc serve` as a process: its peak RSS stays below --max-scan-gb."""
    header, _ = scan_messages(small_scan)
    process, port, _, _ = start_server_process(tmp_path, "--no-preload", "--max-scan-gb", "0.25",
                                                   "--workers", "2")
    try:
        cases = [declared(header, 4096, 20000), declared(header, 4096, 100000), declared(header, 2048, 2048)]
        for case in cases:
            replies = exchange(port, proto.config_file_message(FRONTEND) + proto.header_message(case)
                               + readouts(2048, 16, 4) + proto.close_message())
            assert errors_of(replies)
        peak_kib = int(re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{process.pid}/status").read_text()).group(1))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    assert peak_kib * 1024 < 0.25 * (1 << 30), f"peak RSS {peak_kib / 1024:.0f} MiB"


# ---- compute chosen by the client ---------------------------------------------------------------

def test_iterations_above_the_operator_limit_are_refused(small_scan, tmp_path):
    with threaded_server(workers=1) as running:
        result = send_scan(small_scan, tmp_path / "out.h5", port=running.port, config_text=CSC_CHAIN,
                           overrides={"iterations": "100000000"}, timeout=60)
    assert not result.ok and "iterations='100000000': exceeds the operator limit of 1000" in result.errors[0]


def _endless(monkeypatch: pytest.MonkeyPatch, small_scan: Path) -> bytes:
    """A scan whose CSC would run for days (the operator allows 1e8 iterations here)."""
    monkeypatch.setenv("ADACSC_MAX_ITERATIONS", "100000000")
    header, acquisitions = scan_messages(small_scan)
    return (proto.config_text_message(CSC_CHAIN) + proto.header_message(header)
            + proto.text_message(json.dumps({"parameters": ENDLESS})) + b"".join(acquisitions)
            + proto.close_message())


def _then_a_good_scan(port: int, small_scan: Path, out: Path) -> None:
    result = send_scan(small_scan, out, port=port, config_text=frontend_text(), timeout=60)
    assert result.ok and result.images == {"image_1": 2}, result.errors


def test_a_scan_past_its_deadline_is_cancelled_and_frees_its_worker(small_scan, tmp_path, monkeypatch):
    stream = _endless(monkeypatch, small_scan)
    with threaded_server(workers=1, scan_timeout_s=3.0) as running:
        replies = exchange(running.port, stream, timeout=60)
        report = running.report(1)[0]
        assert report.seconds < 30 and running.server.scans_running() == 0
        _then_a_good_scan(running.port, small_scan, tmp_path / "after.h5")
    assert "cancelled" in errors_of(replies) and "deadline of 3 s" in errors_of(replies)


def test_a_scan_whose_client_is_gone_is_cancelled(small_scan, tmp_path, monkeypatch):
    stream = _endless(monkeypatch, small_scan)
    with threaded_server(workers=1, probe_s=0.5) as running:
        exchange(running.port, stream, close_abruptly=False, half_close=True, timeout=0.5)
        report = running.wait_for(lambda r: True, timeout=60)
        assert "the client is gone" in report.dropped and running.server.scans_running() == 0
        _then_a_good_scan(running.port, small_scan, tmp_path / "after.h5")


def test_sigterm_cancels_scans_still_running_after_the_grace_period(small_scan, tmp_path):
    header, acquisitions = scan_messages(small_scan)
    stream = (proto.config_text_message(CSC_CHAIN) + proto.header_message(header)
              + proto.text_message(json.dumps({"parameters": ENDLESS})) + b"".join(acquisitions)
              + proto.close_message())
    process, port, log_path, notes = start_server_process(tmp_path, "--grace", "1", "--max-iterations", "100000000",
                                                   "--workers", "1")
    replies: list[proto.Message] = []
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        client = threading.Thread(target=lambda: replies.extend(read_replies(sock)))
        client.start()
        sock.sendall(stream)
        notes.wait(SESSION, "started", process=process)  # it reconstructs without end from here
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        client.join(10)
        sock.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = log_path.read_text()
    assert "grace period of 1 s over: cancelling 1 running scan(s)" in log and "server stopped" in log
    assert "the server is shutting down" in errors_of(replies)


# ---- nothing silent -----------------------------------------------------------------------------

def test_dropped_readouts_are_reported_to_the_client(small_scan):
    header, _ = scan_messages(small_scan)
    messages = []
    with InputScan(small_scan) as scan:
        for acquisition in scan.acquisitions():
            imaging = not acquisition.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
            if imaging and acquisition.idx.kspace_encode_step_1 == 3:
                acquisition.data[0, 0] = np.nan
            if imaging and acquisition.idx.kspace_encode_step_1 == 5 and acquisition.idx.slice == 0:
                short = ismrmrd.Acquisition.from_array(acquisition.data[:, :20].copy())
                head = acquisition.getHead()
                head.number_of_samples = 20
                short.setHead(head)
                acquisition = short
            messages.append(proto.item_message(acquisition))
    with threaded_server(workers=1) as running:
        replies = exchange(running.port, proto.config_text_message(frontend_text()) + proto.header_message(header)
                           + b"".join(messages) + proto.close_message())
    texts = [m.payload for m in replies if m.mid == proto.TEXT]
    assert any(t.startswith("WARNING") and "NaN or infinite samples" in t for t in texts), texts
    assert any(t.startswith("WARNING") and "readout length 20 differs from the slice's" in t for t in texts), texts
    assert any("3 left out" in t for t in texts), texts
    assert sum(m.mid == proto.IMAGE for m in replies) == 2 and not error_texts(replies)


def test_many_unknown_json_parameters_give_one_summary(small_scan):
    header, acquisitions = scan_messages(small_scan)
    parameters = {f"unknown_{n}": n for n in range(10_000)}
    with threaded_server(workers=1) as running:
        replies = exchange(running.port, proto.config_file_message(FRONTEND) + proto.header_message(header)
                           + proto.text_message(json.dumps({"parameters": parameters}))
                           + b"".join(acquisitions) + proto.close_message())
    warnings = [m.payload for m in replies if m.mid == proto.TEXT and m.payload.startswith("WARNING")]
    assert len(warnings) == 1 and "10000 parameters ('unknown_0'" in warnings[0] and "and 9990 more" in warnings[0]


def test_an_unknown_config_name_is_reported_right_after_config(small_scan):
    with threaded_server(workers=1) as running:
        sock = socket.create_connection(("127.0.0.1", running.port), timeout=20)
        try:
            sock.sendall(proto.config_file_message("adacsc_lowfeild"))
            first = proto.read_message(proto.SocketReader(sock))
        finally:
            sock.close()
    assert first.mid == proto.TEXT and "no config named 'adacsc_lowfeild'" in first.payload
    assert "available: " in first.payload and "adacsc_lowfield" in first.payload
