"""`adacsc send` (the client), its pacing, and the command modules of serve and send."""

import argparse
import json
import socket
import threading
import time
from pathlib import Path

import ismrmrd
import numpy as np
import pytest

from adacsc.client import Pacer, StreamClient, send_scan, stream, summarise
from adacsc.commands import send as send_command
from adacsc.commands import serve as serve_command
from adacsc.io.dataset import InputScan
from adacsc.server import protocol as proto
from adacsc.simulation.small_scan import write_small_scan
from support.scans import read_images
from support.server import FRONTEND, frontend_text, threaded_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_small_scan(tmp_path_factory.mktemp("send") / "scan.h5", lines=16, slices=2, noise=8)


@pytest.fixture(scope="module")
def server():
    with threaded_server(workers=2, io_timeout_s=10.0) as running:
        yield running


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers(dest="command", required=True)
    send_command.add_parser(subparsers)
    serve_command.add_parser(subparsers)
    return parser.parse_args(list(argv))


def test_send_command_by_name(scan, server, tmp_path):
    args = parse("send", str(scan), "-o", str(tmp_path / "out.h5"), "--port", str(server.port),
                 "-c", FRONTEND, "-G", "g")
    assert args.func(args) == 0
    images = read_images(tmp_path / "out.h5", "g")
    assert [len(v) for v in images.values()] == [2]
    with InputScan(tmp_path / "out.h5", "g") as written:  # the header is stored beside the images
        assert b"ismrmrdHeader" in written.header_bytes()


def test_send_command_config_file_overrides_and_pacing(scan, server, tmp_path):
    config = tmp_path / "local_chain.xml"
    config.write_text(frontend_text())
    args = parse("send", str(scan), "-o", str(tmp_path / "out.h5"), "--port", str(server.port),
                 "-C", str(config), "--set", "image_series_index=3", "--pace", "400", "-G", "g")
    started = time.perf_counter()
    assert args.func(args) == 0
    assert time.perf_counter() - started >= 40 / 400 * 0.9
    assert list(read_images(tmp_path / "out.h5", "g")) == ["image_3"]


def test_send_command_fails_clearly_on_server_errors(scan, server, tmp_path, caplog):
    args = parse("send", str(scan), "-o", str(tmp_path / "out.h5"), "--port", str(server.port),
                 "-c", "no_such_chain")
    assert args.func(args) == 1
    assert any("no_such_chain" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


def test_send_to_a_closed_port_raises_oserror(scan, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OSError):
        send_scan(scan, tmp_path / "out.h5", port=port, config_name=FRONTEND)
    assert not (tmp_path / "out.h5").exists()


def test_latency_is_measured_per_slice(scan, server, tmp_path):
    result = send_scan(scan, tmp_path / "out.h5", port=server.port, config_name=FRONTEND, pace="300")
    latencies = result.latencies()
    assert set(latencies) == {(0, 0), (1, 0)} and all(0 <= v < 10 for v in latencies.values())
    assert all(result.first_image_latencies()[k] <= v for k, v in latencies.items())
    lines = summarise(result)
    assert any("slice 1 repetition 0" in line for line in lines) and "median" in lines[-1]


def test_stream_client_with_encoded_messages_and_text_replies(scan, server):
    with InputScan(scan) as opened:
        header = opened.header_bytes()
        messages = [proto.item_message(a) for a in opened.acquisitions()]
    client = StreamClient("127.0.0.1", server.port, timeout=30)
    stream(client, header, messages, config_name=FRONTEND, overrides={"not_a_property": "1"})
    result = client.wait(30)
    assert result.ok and result.acquisitions == len(messages) and sum(result.images.values()) == 2
    assert any("not_a_property" in text for text in result.texts)


def test_stream_needs_exactly_one_config(scan, server):
    client = StreamClient("127.0.0.1", server.port, timeout=5)
    try:
        with pytest.raises(ValueError):
            stream(client, b"<x/>", [], config_name="a", config_text="b")
    finally:
        client.close()


def _acquisition(stamp: int) -> ismrmrd.Acquisition:
    acquisition = ismrmrd.Acquisition.from_array(np.zeros((1, 4), np.complex64))
    acquisition.acquisition_time_stamp = stamp
    return acquisition


def test_pacer_fixed_rate():
    pacer = Pacer("200")
    started = time.perf_counter()
    for stamp in range(11):
        pacer.wait(_acquisition(stamp))
    assert 0.045 <= time.perf_counter() - started < 1.0


def test_pacer_realtime_follows_time_stamps_and_caps_gaps(monkeypatch):
    clock = [100.0]  # a clock that only its sleeps advance: each readout leaves exactly when due

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    monkeypatch.setattr("adacsc.client.time.sleep", sleep)
    monkeypatch.setattr("adacsc.client.time.perf_counter", lambda: clock[0])

    def released(pacer: Pacer, stamps: tuple[int, ...]) -> list[float]:
        start, times = clock[0], []
        for stamp in stamps:
            pacer.wait(_acquisition(stamp))
            times.append(clock[0] - start)
        return times

    # 10 ms steps across the wrap of the 32-bit stamp, then a 100 s gap, sent after 5 s
    assert released(Pacer("realtime"), ((1 << 32) - 8, (1 << 32) - 4, 0, 40_000)) == pytest.approx(
        [0.0, 0.01, 0.02, 5.02], abs=1e-9)
    assert released(Pacer("realtime:10"), (0, 400)) == pytest.approx([0.0, 0.1], abs=1e-9)


@pytest.mark.parametrize("mode", ["fast", "-3", "realtime:0"])
def test_pacer_rejects_nonsense(mode):
    with pytest.raises(ValueError):
        Pacer(mode)


def test_serve_arguments_become_settings(tmp_path):
    args = parse("serve", "--workers", "3", "--timeout", "7", "--strict", "--config-dir", str(tmp_path),
                 "--error-format", "error", "--allow-module", "my.gadgets", "--max-readout-mb", "1",
                 "--header-timeout", "4", "--message-timeout", "2.5")
    settings = serve_command.settings_from_args(args)
    assert settings.host == "127.0.0.1" and settings.port == 9002 and settings.workers == 3
    assert settings.header_timeout_s == 4 and settings.session.message_timeout_s == 2.5
    assert settings.session.strict and settings.session.io_timeout_s == 7
    assert settings.session.error_format == "error" and settings.allow_modules == ("my.gadgets",)
    assert settings.extra_config_dirs == (tmp_path,) and settings.session.limits.max_readout_bytes == 1 << 20


def test_server_config_dir_is_searched_for_names(scan, tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "site_chain.xml").write_text(frontend_text(image_series_index="8"))
    with threaded_server(workers=1, extra_config_dirs=(folder,)) as running:
        result = send_scan(scan, tmp_path / "out.h5", port=running.port, config_name="site_chain", group="g")
    assert result.ok and result.images == {"image_8": 2}


def test_protocol_messages_round_trip_through_a_socket():
    image = ismrmrd.Image.from_array(np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4), transpose=False)
    meta = ismrmrd.Meta()
    meta["DataRole"] = "Test"
    image.attribute_string = meta.serialize()
    waveform = ismrmrd.Waveform.from_array(np.arange(6, dtype=np.uint32).reshape(2, 3))
    acquisition = ismrmrd.Acquisition.from_array(np.ones((2, 5), np.complex64), np.ones((5, 2), np.float32))
    data = (proto.config_file_message("adacsc_frontend") + proto.config_text_message("<c/>\0")
            + proto.header_message(b"<h/>") + proto.text_message(json.dumps({"a": 1})) + proto.error_message("bad")
            + proto.item_message(acquisition) + proto.item_message(image) + proto.item_message(waveform)
            + proto.close_message())
    a, b = socket.socketpair()
    sender = threading.Thread(target=lambda: (a.sendall(data), a.close()))
    sender.start()
    reader = proto.SocketReader(b, chunk=7)  # tiny chunks: every message spans several reads
    messages = [proto.read_message(reader) for _ in range(9)]
    with pytest.raises(proto.EndOfStream):
        proto.read_message(reader)
    sender.join()
    b.close()
    assert [m.payload for m in messages[:5]] == ["adacsc_frontend", "<c/>", b"<h/>", '{"a": 1}', "bad"]
    assert [m.mid for m in messages] == [1, 2, 3, 5, 8, 1008, 1022, 1026, 4]
    assert messages[5].payload.to_bytes() == acquisition.to_bytes()
    assert np.array_equal(messages[6].payload.data, image.data) and "DataRole" in messages[6].payload.attribute_string
    assert np.array_equal(messages[7].payload.data, waveform.data)
    assert sum(m.size for m in messages) == len(data)


def test_protocol_limits_are_configurable():
    a, b = socket.socketpair()
    a.sendall(proto.text_message("x" * 100))
    with pytest.raises(proto.ProtocolError, match="exceeds the limit of 10 bytes"):
        proto.read_message(proto.SocketReader(b), proto.Limits(max_text_bytes=10))
    a.close()
    b.close()


def test_truncated_message_is_distinguished_from_a_clean_end():
    a, b = socket.socketpair()
    a.sendall(proto.close_message()[:1])
    a.close()
    with pytest.raises(proto.TruncatedMessage):
        proto.read_message(proto.SocketReader(b))
    b.close()
