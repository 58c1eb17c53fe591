"""Idle, trickling and non-reading peers hold no worker for longer than their deadlines allow
(issue 19, items 3-5 and 15), over real sockets, with short deadlines set through the settings."""

import socket
import threading
import time
from pathlib import Path

import pytest

from adacsc.client import send_scan
from adacsc.server import protocol as proto
from adacsc.simulation.small_scan import write_small_scan
from support.server import (FRONTEND, error_texts, non_reading_client, read_replies, scan_messages, scan_stream,
                            threaded_server)

pytestmark = pytest.mark.timeout(120)


def _config_and_header(scan: Path) -> bytes:
    header, _ = scan_messages(scan)
    return proto.config_file_message(FRONTEND) + proto.header_message(header)


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=30)


class _Trickler(threading.Thread):
    """Sends `data` one byte per `interval` seconds until it is sent, the peer closes, or stop."""

    def __init__(self, sock: socket.socket, data: bytes, interval: float) -> None:
        super().__init__(daemon=True)
        self.sock, self.data, self.interval = sock, data, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        for index in range(len(self.data)):
            if self.stopped.wait(self.interval):
                return
            try:
                self.sock.send(self.data[index:index + 1])
            except OSError:
                return


def test_idle_and_trickling_connections_hold_no_worker(small_scan, tmp_path):
    """With one worker, idle sockets and a slowloris before the header do not delay a scan;
    each is refused once the header deadline passes, with the reason."""
    with threaded_server(workers=1, header_timeout_s=3.0) as running:
        idle = [_connect(running.port) for _ in range(4)]
        slow = _connect(running.port)
        trickler = _Trickler(slow, _config_and_header(small_scan), 0.2)
        trickler.start()
        try:
            started = time.monotonic()
            result = send_scan(small_scan, tmp_path / "out.h5", port=running.port, config_name=FRONTEND,
                               timeout=10)
            assert result.ok, result.errors
            assert time.monotonic() - started < 3.0  # served while every idle socket is still open
            for sock in idle + [slow]:
                replies = read_replies(sock)
                errors = error_texts(replies)
                assert errors and "no ISMRMRD header within 3 s" in errors[0], errors
                assert replies[-1].mid == proto.CLOSE
        finally:
            trickler.stopped.set()
            for sock in idle + [slow]:
                sock.close()


def test_a_message_trickling_after_the_header_is_dropped_at_its_deadline(small_scan):
    """A peer that took a worker and then sends a readout one byte at a time is dropped once
    the message deadline passes, not after the (long) silence timeout."""
    _, acquisitions = scan_messages(small_scan)
    with threaded_server(workers=1, io_timeout_s=300.0, message_timeout_s=1.0) as running:
        sock = _connect(running.port)
        trickler = _Trickler(sock, acquisitions[0], 0.1)
        try:
            sock.sendall(_config_and_header(small_scan))
            started = time.monotonic()
            trickler.start()
            replies = read_replies(sock)
            elapsed = time.monotonic() - started
        finally:
            trickler.stopped.set()
            sock.close()
        report = running.report(1)[0]
    errors = error_texts(replies)
    assert errors and "did not arrive within 1 s" in errors[0], errors
    assert elapsed < 5.0 and not report.ok


def test_a_client_that_never_reads_holds_its_worker_for_the_write_stall_only(tmp_path):
    """The write stall is one deadline for the whole session: no byte accepted by the client
    for `write_stall_s` and the session ends, however its sends and queue are split."""
    big = write_small_scan(tmp_path / "big.h5", lines=64, slices=24, noise=8)
    stream = scan_stream(big)
    stall = 1.0
    with threaded_server(workers=1, write_stall_s=stall, outbox_bytes=256 * 1024,
                         socket_send_buffer=4096) as running:
        sock = non_reading_client(running.port)
        try:
            sock.sendall(stream)  # and never read
            report = running.report(1, timeout=30)[0]
        finally:
            sock.close()
    assert report.dropped == f"the client did not read its results for {stall:g} s"
    # the session lasts the reconstruction until the socket fills, plus one stall and a margin
    assert report.seconds < stall + 3.0, report.seconds


def test_stop_does_not_wait_for_connections_still_opening(small_scan):
    """Connections that have not sent their header are refused at once on stop()."""
    running = None
    with threaded_server(workers=1, header_timeout_s=60.0) as running:
        idle = [_connect(running.port) for _ in range(3)]
        running.wait_until(lambda: running.server.active_sessions() == 3, what="three connections opening")
        started = time.monotonic()
        running.stop(timeout=10)
        assert time.monotonic() - started < 2.0
        for sock in idle:
            errors = error_texts(read_replies(sock))
            assert errors and "shutting down" in errors[0]
            sock.close()


def test_stop_returns_within_grace_and_a_second_with_a_client_that_never_reads(tmp_path):
    """A session blocked on a client that never reads (write stall far longer than the grace
    period) does not hold up the server's stop: it is cancelled at the end of the grace period
    and its socket shut down shortly after."""
    big = write_small_scan(tmp_path / "big.h5", lines=64, slices=24, noise=8)
    stream = scan_stream(big)
    grace = 0.5
    running = None
    with threaded_server(workers=1, grace_s=grace, write_stall_s=60.0, outbox_bytes=256 * 1024,
                         socket_send_buffer=4096) as running:
        sock = non_reading_client(running.port)
        try:
            sock.sendall(stream)  # and never read
            running.wait_until(lambda: running.server.scans_running() == 1, what="the scan running")
            started = time.monotonic()
            running.stop(timeout=30)
            stopped_after = time.monotonic() - started
        finally:
            sock.close()
    assert stopped_after < grace + 1.0, stopped_after
