"""`adacsc serve` over real sockets on 127.0.0.1: round trips, concurrency, hostile input."""

import json
import logging
import socket
import struct
import threading
import time
from pathlib import Path

import ismrmrd
import numpy as np
import pytest

from adacsc.chain.config import load_chain
from adacsc.client import send_scan
from adacsc.replay import replay
from adacsc.server import protocol as proto
from adacsc.simulation.small_scan import write_small_scan
from support.scans import read_images
from support.server import (FRONTEND, assert_same_images, chain_text, error_texts, exchange, frontend_text,
                            non_reading_client, scan_messages, scan_stream, threaded_server)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server():
    with threaded_server(workers=4, io_timeout_s=10.0) as running:
        yield running


@pytest.fixture
def offline(small_scan: Path, tmp_path: Path):
    """Reference images of the offline replay of small_scan through the front end."""
    def run(strict: bool = False, **overrides: str):
        out = tmp_path / f"offline_{strict}.h5"
        chain = load_chain(FRONTEND, allow_paths=False)
        replay(small_scan, out, chain.with_overrides(overrides) if overrides else chain, "g", strict=strict)
        return read_images(out, "g")
    return run


def good_scan(port: int, scan: Path, out: Path, **kwargs):
    result = send_scan(scan, out, port=port, group="g", timeout=60, **kwargs)
    assert result.ok, result.errors
    return result


# ---- round trips ---------------------------------------------------------------------------------

@pytest.mark.parametrize("strict", [True, False])
def test_round_trip_gives_the_offline_images(strict, small_scan, offline, tmp_path):
    with threaded_server(workers=1, strict=strict) as running:
        result = good_scan(running.port, small_scan, tmp_path / "online.h5", config_name=FRONTEND)
    assert_same_images(read_images(tmp_path / "online.h5", "g"), offline(strict=strict))
    assert result.acquisitions == 16 + 2 * 16
    assert set(result.latencies()) == {(0, 0), (1, 0)}
    assert all(0 <= value < 30 for value in result.latencies().values())
    report = running.server.reports[0]
    assert report.ok and report.acquisitions == report.pushed == 48 and report.noise_readouts == 16
    assert report.images_sent == {"image_1": 2}


def test_simulated_scan_round_trip(sim_scan, server, tmp_path):
    good_scan(server.port, sim_scan, tmp_path / "online.h5", config_name=FRONTEND)
    replay(sim_scan, tmp_path / "offline.h5", load_chain(FRONTEND, allow_paths=False), "g", strict=False)
    assert_same_images(read_images(tmp_path / "online.h5", "g"), read_images(tmp_path / "offline.h5", "g"))


def test_config_text_and_property_overrides(small_scan, server, offline, tmp_path):
    good_scan(server.port, small_scan, tmp_path / "online.h5", config_text=frontend_text(),
              overrides={"coil_map_method": "walsh", "image_series_index": "5"})
    online = read_images(tmp_path / "online.h5", "g")
    assert list(online) == ["image_5"]
    assert "walsh" in online["image_5"][0].attribute_string
    assert_same_images(online, offline(coil_map_method="walsh", image_series_index="5"))


def test_python_ismrmrd_server_style_json_and_nul_terminated_texts(small_scan, server):
    header, acquisitions = scan_messages(small_scan)
    parameters = {"version": "1.1.0", "parameters": {"config": FRONTEND, "image_series_index": 9,
                                                     "sendOriginal": "False"}}
    stream = (proto.config_file_message("invertcontrast")  # a FIRE-style name the JSON overrides
              + proto.header_message(header + b"\0")
              + proto.text_message(json.dumps(parameters) + "\0")
              + b"".join(acquisitions) + proto.close_message())
    replies = exchange(server.port, stream)
    images = [m.payload for m in replies if m.mid == proto.IMAGE]
    assert [m.mid for m in replies][-1] == proto.CLOSE
    assert len(images) == 2 and {i.image_series_index for i in images} == {9}
    warnings = [m.payload for m in replies if m.mid == proto.TEXT]
    assert any("sendOriginal" in text and text.startswith("WARNING") for text in warnings)
    assert not error_texts(replies)


def test_gadgetron_client_style_config_text_with_trailing_nul(small_scan, server):
    header, acquisitions = scan_messages(small_scan)
    stream = (proto.config_text_message(frontend_text() + "\0") + proto.header_message(header)
              + b"".join(acquisitions) + proto.close_message())
    replies = exchange(server.port, stream, half_close=False)
    assert sum(m.mid == proto.IMAGE for m in replies) == 2 and replies[-1].mid == proto.CLOSE


def test_waveforms_and_images_flow_into_the_chain(small_scan, server):
    header, acquisitions = scan_messages(small_scan)
    waveform = ismrmrd.Waveform.from_array(np.arange(12, dtype=np.uint32).reshape(2, 6))
    image = ismrmrd.Image.from_array(np.ones((1, 1, 4, 4), np.float32), transpose=False)
    image.image_series_index = 42
    stream = (proto.config_file_message(FRONTEND) + proto.header_message(header)
              + proto.item_message(waveform) + proto.item_message(image)
              + b"".join(acquisitions) + proto.close_message())
    before = len(server.server.reports)
    replies = exchange(server.port, stream)
    series = sorted(m.payload.image_series_index for m in replies if m.mid == proto.IMAGE)
    assert series == [1, 1, 42]  # the client's image passes through the chain and comes back
    report = server.wait_for(lambda r: r.waveforms == 1, start=before)
    assert report.images_in == 1 and report.pushed == 50
    assert report.outputs_not_sent == {"Waveform": 1}


def test_half_close_without_close_still_returns_every_slice(small_scan, server):
    header, acquisitions = scan_messages(small_scan)
    stream = proto.config_file_message(FRONTEND) + proto.header_message(header) + b"".join(acquisitions)
    replies = exchange(server.port, stream, half_close=True)
    assert sorted(m.payload.slice for m in replies if m.mid == proto.IMAGE) == [0, 1]
    assert replies[-1].mid == proto.CLOSE


def test_early_half_close_mid_slice_returns_completed_slices(small_scan, server):
    header, acquisitions = scan_messages(small_scan)
    partial = acquisitions[: 16 + 16 + 5]  # noise, slice 0, five lines of slice 1
    replies = exchange(server.port, proto.config_file_message(FRONTEND) + proto.header_message(header)
                       + b"".join(partial), half_close=True)
    slices = sorted(m.payload.slice for m in replies if m.mid == proto.IMAGE)
    assert slices[0] == 0 and replies[-1].mid == proto.CLOSE


# ---- concurrency ---------------------------------------------------------------------------------

@pytest.mark.parametrize("scans", [2, 8])
def test_concurrent_scans(scans, small_scan, server, offline, tmp_path):
    reference = offline()
    results: dict[int, object] = {}

    def one(index: int) -> None:
        results[index] = send_scan(small_scan, tmp_path / f"out{index}.h5", port=server.port,
                                   config_name=FRONTEND, group="g", timeout=60)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(scans)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert len(results) == scans and all(r.ok for r in results.values())
    for index in range(scans):
        assert_same_images(read_images(tmp_path / f"out{index}.h5", "g"), reference)


def test_failing_scan_does_not_disturb_a_concurrent_one(small_scan, offline, tmp_path):
    header, acquisitions = scan_messages(small_scan)
    failing = chain_text(("support.chain_gadgets", "fail_on_third"))
    with threaded_server(workers=2, allow_modules=("support.chain_gadgets",)) as running:
        outcome = {}
        good = threading.Thread(target=lambda: outcome.update(good=send_scan(
            small_scan, tmp_path / "good.h5", port=running.port, config_name=FRONTEND, group="g", pace="400")))
        good.start()
        replies = exchange(running.port, proto.config_text_message(failing) + proto.header_message(header)
                           + b"".join(acquisitions) + proto.close_message())
        good.join(60)
    assert any("fail_on_third" in text and "third item rejected" in text for text in error_texts(replies))
    assert replies[-1].mid == proto.CLOSE
    assert outcome["good"].ok
    assert_same_images(read_images(tmp_path / "good.h5", "g"), offline())


def test_excess_connections_are_refused_clearly(small_scan):
    with threaded_server(workers=1, max_waiting=0, wait_s=0.2) as running:
        blocker = socket.create_connection(("127.0.0.1", running.port))
        try:
            blocker.sendall(_config_and_header(small_scan))  # takes the only worker, then sends nothing
            running.wait_until(lambda: running.server.scans_running() == 1, what="the blocker holding the worker")
            replies = exchange(running.port, _config_and_header(small_scan))
        finally:
            blocker.close()
    assert any("busy" in text for text in error_texts(replies)) and replies[-1].mid == proto.CLOSE


def test_connections_wait_for_a_free_worker(small_scan, tmp_path):
    with threaded_server(workers=1, max_waiting=4, wait_s=30) as running:
        results = []
        threads = [threading.Thread(target=lambda i=i: results.append(send_scan(
            small_scan, tmp_path / f"w{i}.h5", port=running.port, config_name=FRONTEND, timeout=60)))
            for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert len(results) == 3 and all(r.ok for r in results)


# ---- hostile and broken input --------------------------------------------------------------------

def _config_and_header(small_scan: Path) -> bytes:
    header, _ = scan_messages(small_scan)
    return proto.config_file_message(FRONTEND) + proto.header_message(header)


def _expect_error(replies: list[proto.Message], *fragments: str) -> str:
    errors = error_texts(replies)
    assert errors, f"no error reported; replies: {[m.name for m in replies]}"
    assert all(fragment in errors[0] for fragment in fragments), errors
    assert replies[-1].mid == proto.CLOSE
    return errors[0]


@pytest.mark.parametrize("payload, fragments", [
    (struct.pack("<H", 777) + b"junk", ("unknown message id 777",)),
    (struct.pack("<HI", proto.CONFIG_TEXT, 0xFFFFFFFF), ("CONFIG_TEXT", "exceeds the limit")),
    (struct.pack("<HI", proto.HEADER, 0xFFFFFFF0), ("HEADER", "exceeds the limit")),
    (struct.pack("<HI", proto.TEXT, 0x7FFFFFFF), ("TEXT", "exceeds the limit")),
    (struct.pack("<HQ", proto.ERROR, 1 << 62), ("ERROR", "exceeds the limit")),
])
def test_unknown_ids_and_absurd_lengths_are_refused_without_allocating(payload, fragments, server):
    started = time.monotonic()
    replies = exchange(server.port, payload, half_close=False)
    _expect_error(replies, *fragments)
    assert time.monotonic() - started < 5


def test_absurd_acquisition_image_and_waveform_sizes(small_scan, server):
    acquisition = ismrmrd.AcquisitionHeader()
    acquisition.number_of_samples, acquisition.active_channels = 65535, 65535
    image = ismrmrd.ImageHeader()
    image.data_type, image.channels, image.matrix_size = ismrmrd.DATATYPE_CXDOUBLE, 65535, (65535, 65535, 65535)
    waveform = ismrmrd.WaveformHeader()
    waveform.channels, waveform.number_of_samples = 65535, 0xFFFFFFFF
    bad_type = ismrmrd.ImageHeader()
    bad_type.data_type, bad_type.channels, bad_type.matrix_size = 99, 1, (4, 4, 1)
    cases = [(proto.ACQUISITION, bytes(acquisition), "acquisition of 65535 samples"),
             (proto.IMAGE, bytes(image), "image of"),
             (proto.WAVEFORM, bytes(waveform), "waveform of"),
             (proto.IMAGE, bytes(bad_type), "unknown data type 99")]
    for mid, header, fragment in cases:
        replies = exchange(server.port, _config_and_header(small_scan) + struct.pack("<H", mid) + header,
                           half_close=False)
        _expect_error(replies, fragment)


def test_image_attribute_length_is_capped(small_scan, server):
    image = ismrmrd.ImageHeader()
    image.data_type, image.channels, image.matrix_size = ismrmrd.DATATYPE_FLOAT, 1, (4, 4, 1)
    replies = exchange(server.port, _config_and_header(small_scan) + struct.pack("<H", proto.IMAGE)
                       + bytes(image) + struct.pack("<Q", 1 << 40), half_close=False)
    _expect_error(replies, "attribute string", "exceeds the limit")


def test_header_that_does_not_parse(server):
    replies = exchange(server.port, proto.config_file_message(FRONTEND)
                       + proto.header_message(b"<ismrmrdHeader><nonsense/>"), half_close=False)
    _expect_error(replies, "header does not parse")


def test_data_before_header_and_before_config(small_scan, server):
    header, acquisitions = scan_messages(small_scan)
    replies = exchange(server.port, proto.config_file_message(FRONTEND) + acquisitions[0], half_close=False)
    _expect_error(replies, "before the ISMRMRD header")
    replies = exchange(server.port, proto.header_message(header) + b"".join(acquisitions[:40]), half_close=False)
    _expect_error(replies, "before the config")


def test_second_config_and_second_header(small_scan, server):
    header, _ = scan_messages(small_scan)
    replies = exchange(server.port, proto.config_file_message(FRONTEND) + proto.config_file_message(FRONTEND))
    _expect_error(replies, "second config")
    replies = exchange(server.port, _config_and_header(small_scan) + proto.header_message(header))
    _expect_error(replies, "second ISMRMRD header")


@pytest.mark.parametrize("name", ["../configs/adacsc_frontend", "/etc/passwd", "..", "a/b.xml", "nonexistent"])
def test_config_names_resolve_only_inside_the_config_folders(name, small_scan, server):
    header, acquisitions = scan_messages(small_scan)
    for stream in (proto.config_file_message(name) + proto.header_message(header),
                   proto.config_file_message(FRONTEND) + proto.header_message(header)
                   + proto.text_message(json.dumps({"parameters": {"config": name}}))):
        replies = exchange(server.port, stream + acquisitions[0] + proto.close_message())
        _expect_error(replies, "cannot run the config")


def test_client_config_text_may_not_run_arbitrary_modules(small_scan, server):
    header, acquisitions = scan_messages(small_scan)
    hostile = chain_text(("os", "system"))
    replies = exchange(server.port, proto.config_text_message(hostile) + proto.header_message(header)
                       + acquisitions[0] + proto.close_message())
    _expect_error(replies, "os", "does not allow")


def test_truncated_message_then_the_server_still_serves(small_scan, server, tmp_path):
    header, acquisitions = scan_messages(small_scan)
    replies = exchange(server.port, _config_and_header(small_scan) + acquisitions[0][:100], half_close=True)
    assert replies and replies[-1].mid == proto.CLOSE
    good_scan(server.port, small_scan, tmp_path / "after.h5", config_name=FRONTEND)


def test_mid_scan_disconnect_then_a_good_scan(small_scan, server, offline, tmp_path, caplog):
    header, acquisitions = scan_messages(small_scan)
    before = len(server.server.reports)
    with caplog.at_level(logging.INFO, logger="adacsc.server"):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(_config_and_header(small_scan) + b"".join(acquisitions[:30]) + acquisitions[30][:50])
        sock.close()  # gone mid-message, without reading anything
        report = server.wait_for(lambda r: r.acquisitions == 30, start=before)
    assert report.pushed == 30  # every received readout went into the chain
    assert any("30 acquisitions" in r.getMessage() and "went into" in r.getMessage() for r in caplog.records)
    good_scan(server.port, small_scan, tmp_path / "after.h5", config_name=FRONTEND)
    assert_same_images(read_images(tmp_path / "after.h5", "g"), offline())


def test_connection_reset_mid_scan_then_a_good_scan(small_scan, server, tmp_path):
    header, acquisitions = scan_messages(small_scan)
    exchange(server.port, _config_and_header(small_scan) + b"".join(acquisitions[:20]), close_abruptly=True)
    good_scan(server.port, small_scan, tmp_path / "after.h5", config_name=FRONTEND)


def test_silent_client_is_dropped_after_the_timeout(small_scan):
    with threaded_server(workers=1, io_timeout_s=0.5) as running:
        started = time.monotonic()
        sock = socket.create_connection(("127.0.0.1", running.port), timeout=10)
        try:
            sock.sendall(_config_and_header(small_scan))
            from support.server import read_replies
            replies = read_replies(sock)
        finally:
            sock.close()
        assert time.monotonic() - started < 8
    _expect_error(replies, "no data from the client")


def test_client_that_never_reads_is_dropped_and_others_are_served(tmp_path, offline, small_scan, caplog):
    big = write_small_scan(tmp_path / "big.h5", lines=32, slices=24, noise=8)
    stream = scan_stream(big)
    with threaded_server(workers=2, io_timeout_s=300.0, write_stall_s=1.0, outbox_bytes=64 * 1024,
                         socket_send_buffer=4096) as running, caplog.at_level(logging.WARNING, "adacsc.server"):
        sock = non_reading_client(running.port)
        try:
            sock.sendall(stream)  # and never read
            report = running.report(1, timeout=30)[0]
        finally:
            sock.close()
        assert report.dropped == "the client did not read its results for 1 s"  # not the 300 s read timeout
        assert sum(report.images_sent.values()) < 24
        assert any("dropping the session" in r.getMessage() for r in caplog.records)
        good_scan(running.port, small_scan, tmp_path / "after.h5", config_name=FRONTEND)
    assert_same_images(read_images(tmp_path / "after.h5", "g"), offline())


def test_connection_without_anything_gets_close(server):
    replies = exchange(server.port, b"")
    assert [m.mid for m in replies] == [proto.CLOSE]


def test_config_and_header_without_data_validates_and_closes(small_scan, server):
    replies = exchange(server.port, _config_and_header(small_scan) + proto.close_message())
    assert [m.mid for m in replies] == [proto.CLOSE]
    header, _ = scan_messages(small_scan)
    replies = exchange(server.port, proto.config_file_message("missing_config") + proto.header_message(header)
                       + proto.close_message())
    _expect_error(replies, "missing_config")


def test_error_format_error_uses_message_id_8():
    with threaded_server(workers=1, error_format="error") as running:
        replies = exchange(running.port, struct.pack("<H", 999), half_close=False)
    assert replies[0].mid == proto.ERROR and "unknown message id 999" in replies[0].payload
    assert replies[-1].mid == proto.CLOSE
