"""The sockets of one session: reading messages, sending results, and the watchdog.

Besides the connection's own thread (which reads), a writer thread sends what the chain
produces, fed through a bounded outbox, so a client that never reads its results holds at most
`outbox_bytes` of server memory for at most `write_stall_s` seconds before the session is
dropped; small messages go out from the producing thread itself when the socket is idle. A
watchdog enforces the scan's deadline and, once the input has ended and the chain computes,
notices a reset connection and probes an idle one with a progress TEXT (a client that is gone
answers it with a reset).
"""

import logging
import socket
import threading
import time
from collections.abc import Callable

import ismrmrd
from gadgetron.types import ImageArray

from adacsc import resources
from adacsc.io.images import split_image_array
from adacsc.io.scan_qa import is_scan_qa
from adacsc.server import protocol as proto
from adacsc.server.opening import Opening
from adacsc.server.outbox import Outbox
from adacsc.server.refusal import error_report
from adacsc.server.session_report import SessionReport
from adacsc.server.session_settings import SessionSettings

DIRECT_SEND_BYTES = 4 * proto.MiB
"""messages up to this size are written by the producing thread itself when the socket is idle"""
SEND_CHUNK_BYTES = proto.MiB
"""sends go out in pieces of this size, each within `write_stall_s`"""
MESSAGE_OVERHEAD_BYTES = 1024
"""an image message's bytes besides its pixels and attributes (id, header, lengths), charged with it"""
GADGET_WARNINGS_SENT = 20
"""gadget warnings passed on to the client per scan; later ones are only logged"""
WATCH_S = 0.1
"""how often the watchdog looks at the deadline and the connection"""


class Dropped(Exception):
    """The client stopped reading or went away."""


class InputEnded(Exception):
    """The input ended without CLOSE (a half-close, a disconnect, a lost connection)."""


class InputFailed(Exception):
    """Reading failed in a way the client is told about (framing, a deadline, silence)."""


class SessionIO:
    """The socket pair (reading, and sending with its own shorter timeout), the writer thread,
    the outbox and the watchdog of one session; writes the bytes and images sent, the errors and
    the drop reason into `report`."""

    def __init__(self, sock: socket.socket, opening: Opening | None, settings: SessionSettings,
                 report: SessionReport, logger: logging.LoggerAdapter, release: Callable[[int], None]) -> None:
        """`release`: gives back the scan budget bytes a message held once it is sent or discarded."""
        self.sock = sock
        self.settings = settings
        self.report = report
        self.log = logger
        self._opening = opening if opening is not None else Opening(proto.SocketReader(sock))
        self._reader = self._opening.reader
        self._reader.message_s = settings.message_timeout_s
        self._wsock = sock.dup()
        self._release = release
        self._outbox = Outbox(settings.outbox_bytes, release)
        name = f"{report.session_id}"
        self._writer = threading.Thread(target=self._write_loop, name=f"adacsc-send-{name}", daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name=f"adacsc-watch-{name}", daemon=True)
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last_sent = self._started
        self._watching = False
        self._probing = True
        self._gadget_warnings = 0
        self._on_deadline: Callable[[str], None] = lambda reason: None
        self._on_drop: Callable[[str], None] = lambda reason: None

    @property
    def answered(self) -> list[proto.Message]:
        """Messages the server already answered while reading the opening."""
        return self._opening.answered

    @property
    def closed(self) -> bool:
        """Whether `close()` has run."""
        return self._done.is_set()

    @property
    def seconds(self) -> float:
        """Time since the session started."""
        return time.monotonic() - self._started

    def start(self, on_deadline: Callable[[str], None], on_drop: Callable[[str], None]) -> None:
        """Set the socket options, start the writer and the watchdog; `on_deadline(reason)` is
        called once the scan's deadline passes, `on_drop(reason)` once the client is dropped."""
        self._on_deadline, self._on_drop = on_deadline, on_drop
        self.sock.settimeout(self.settings.io_timeout_s)
        self._wsock.settimeout(self.settings.write_stall_s)
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.settings.socket_send_buffer:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.settings.socket_send_buffer)
        except OSError:
            pass
        self._writer.start()
        self._watchdog.start()

    # ---- reading ---------------------------------------------------------------------------

    def read(self) -> proto.Message:
        """The next message: those the server read before the session had a worker, then the
        socket's. InputEnded when the input ends without CLOSE, InputFailed when the client is
        to be told why reading stopped."""
        try:
            if self._opening.messages:
                return self._opening.messages.pop(0)
            if self._opening.failure is not None:
                failure, self._opening.failure = self._opening.failure, None
                raise failure
            return proto.read_message(self._reader, self.settings.limits)
        except proto.EndOfStream as err:
            raise InputEnded("the client ended the stream without CLOSE") from err
        except proto.TruncatedMessage as err:
            raise InputEnded(f"client disconnected mid-message ({err})") from err
        except proto.ProtocolError as err:
            raise InputFailed(f"protocol error: {err}") from err
        except proto.ReadDeadline as err:
            raise InputFailed(f"{err}: the scan is dropped") from err
        except TimeoutError as err:
            raise InputFailed(f"no data from the client for {self.settings.io_timeout_s:g} s") from err
        except OSError as err:
            raise InputEnded(f"connection lost: {err}") from err

    def stop_reading(self) -> None:
        """Wake the reading thread (the scan is cancelled)."""
        self._probing = False
        try:
            self.sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    # ---- sending ---------------------------------------------------------------------------

    def send(self, kind: str, data: bytes, charged: int = 0) -> None:
        """Send now when the socket is free and the message small, else queue it for the writer;
        Dropped when the client is gone. `charged`: budget bytes the message holds."""
        if self.report.dropped is not None:
            self._release(charged)
            raise Dropped()
        if len(data) <= DIRECT_SEND_BYTES and self._outbox.claim():
            try:
                self._send_bytes(data)
            except OSError as err:
                self._outbox.release()
                self.drop(self._send_failure(err))
                raise Dropped() from err
            finally:
                self._release(charged)
            self._outbox.release()
            self._sent(kind, data)
            return
        if not self._outbox.put(kind, data, self.settings.write_stall_s, charged):
            self._release(charged)
            self.drop(f"the client did not read its results for {self.settings.write_stall_s:g} s")
            raise Dropped()

    def send_error(self, text: str) -> None:
        """Report an error to the client (and the log) in the server's error format."""
        self.report.errors.append(text)
        self.log.error("%s", text)
        text = resources.without_folders(text, self.settings.config_dirs)
        try:
            self.send("error", error_report(text, self.settings.error_format))
        except Dropped:
            pass

    def send_warning(self, text: str, logged: bool = False) -> None:
        """A WARNING text for the client (logged here unless `logged`)."""
        if not logged:
            self.log.warning("%s", text)
        text = resources.without_folders(text, self.settings.config_dirs)
        try:
            self.send("text", proto.text_message(f"WARNING: {text}"))
        except Dropped:
            pass

    def gadget_warning(self, text: str) -> None:
        """A warning a gadget logged (already in the server log): the client hears of the first
        GADGET_WARNINGS_SENT."""
        self._gadget_warnings += 1
        if self._gadget_warnings <= GADGET_WARNINGS_SENT:
            self.send_warning(text, logged=True)
        elif self._gadget_warnings == GADGET_WARNINGS_SENT + 1:
            self.send_warning(f"more than {GADGET_WARNINGS_SENT} gadget warnings: the rest are only in the "
                              "server log", logged=True)

    def send_result(self, item: object, charge: Callable[[int, str], None]) -> None:
        """An item the chain produced: its images go to the client, each charged to the scan's
        budget (`charge(nbytes, what)`, which may wait for room) until it is sent or discarded;
        other items are counted as not sent (only images go back)."""
        if isinstance(item, ImageArray):
            images = split_image_array(item)
        elif isinstance(item, ismrmrd.Image):
            images = [item]
        elif is_scan_qa(item):
            return  # chain-internal (adacsc.io.scan_qa): its figures are in the images' QA meta
        else:
            name = type(item).__name__
            if not self.report.outputs_not_sent[name]:
                self.log.warning("the chain produced %s items: only images are sent back", name)
            self.report.outputs_not_sent[name] += 1
            return
        for image in images:
            if self.report.dropped is not None:
                self.report.outputs_not_sent["Image (session dropped)"] += 1
                continue
            nbytes = image.data.nbytes + len(image.attribute_string) + MESSAGE_OVERHEAD_BYTES
            charge(nbytes, f"sending image {image.image_index} of series {image.image_series_index}")
            try:
                self.send(f"image_{image.image_series_index}", proto.item_message(image), nbytes)
            except Dropped:
                self.report.outputs_not_sent["Image (session dropped)"] += 1

    def drop(self, reason: str) -> None:
        """Give up on the client: discard pending output and unblock the reading side."""
        with self._lock:
            if self.report.dropped is not None:
                return
            self.report.dropped = reason
        self.log.warning("dropping the session: %s; results not yet sent are discarded", reason)
        self._outbox.abort()
        self._on_drop(reason)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self, drain: bool) -> None:
        """Send CLOSE after what is queued, stop the threads, close the sockets. `drain`: the
        client may still be sending (the session ended on its error): read and discard a little,
        so that closing does not reset the connection before it has read the error report."""
        try:
            self.send("close", proto.close_message())
        except Dropped:
            pass
        self._outbox.finish()
        self._writer.join()
        self._done.set()
        self._watchdog.join(WATCH_S)  # it ends at once now; then nothing of the session runs on
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if drain and self.report.dropped is None:
            self._reader.drain(max_bytes=64 * proto.MiB, deadline_s=2.0)
        for sock in (self._wsock, self.sock):
            try:
                sock.close()
            except OSError:
                pass

    def _write_loop(self) -> None:
        while True:
            batch = self._outbox.take()
            if batch is None:
                return
            charged = sum(nbytes for _, _, nbytes in batch)
            try:
                if sum(len(data) for _, data, _ in batch) <= SEND_CHUNK_BYTES:
                    self._send_bytes(b"".join(data for _, data, _ in batch))
                else:  # large messages go out one by one, without a joined copy
                    for _, data, _ in batch:
                        self._send_bytes(data)
            except OSError as err:
                self._outbox.release()
                self._release(charged)
                self.drop(self._send_failure(err))
                return
            self._outbox.release()
            self._release(charged)
            for kind, data, _ in batch:
                self._sent(kind, data)

    def _send_bytes(self, data: bytes) -> None:
        """Send in pieces, each of which must leave within `write_stall_s`."""
        view = memoryview(data)
        for start in range(0, len(view), SEND_CHUNK_BYTES):
            self._wsock.sendall(view[start:start + SEND_CHUNK_BYTES])

    def _send_failure(self, err: OSError) -> str:
        if isinstance(err, TimeoutError):
            return f"the client did not read its results for {self.settings.write_stall_s:g} s"
        return f"sending failed ({err})"

    def _sent(self, kind: str, data: bytes) -> None:
        self._last_sent = time.monotonic()
        self.report.bytes_out += len(data)
        if kind.startswith("image_"):
            self.report.images_sent[kind] += 1

    # ---- the watchdog ----------------------------------------------------------------------

    def watch_connection(self) -> None:
        """The input has ended and the chain computes: from now on, a reset connection drops the
        session, and a silence of `probe_s` gets a progress TEXT."""
        self._watching = True

    def _watch(self) -> None:
        deadline = self._started + self.settings.scan_timeout_s
        while not self._done.wait(WATCH_S):
            now = time.monotonic()
            if now > deadline:
                self._on_deadline(f"the scan exceeded its deadline of {self.settings.scan_timeout_s:g} s")
                return
            if not self._watching or self.report.dropped is not None:
                continue
            if self._connection_reset():
                self.drop("the client is gone (connection reset)")
                return
            if self._probing and now - self._last_sent > self.settings.probe_s:
                try:
                    self.send("text", proto.text_message(f"INFO: reconstructing, {now - self._started:.0f} s so far"))
                except Dropped:
                    return

    def _connection_reset(self) -> bool:
        """Whether the peer reset the connection: a pending socket error (a read would report
        the end of the stream first, once the client has closed its sending side)."""
        try:
            return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0
        except OSError:
            return True
