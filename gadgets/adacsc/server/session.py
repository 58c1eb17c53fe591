"""One connection = one scan: config, header, optional JSON parameters, data into a running chain,
images back as soon as the chain produces them, then CLOSE.

Threads per session: the connection's own thread reads messages and feeds the chain; the chain's
node threads process; a writer thread sends what the last node produces; a watchdog enforces the
deadline. The writer is fed through a bounded outbox, so a client that never reads its results
holds at most `outbox_bytes` of server memory for at most `write_stall_s` seconds before the
session is dropped.

Bounds: the header's matrix and coils are checked against the operator limits when it arrives;
the bytes received and the buffers the gadgets allocate are charged to one budget
(`max_scan_bytes`); each scan has a deadline (`scan_timeout_s`). A scan past its deadline, whose
client is gone (a failed send or a reset connection; while the chain computes with no output for
`probe_s` seconds, a progress TEXT probes the connection) or whose server is aborting is
cancelled: the chain stops at the next item or solver iteration and the client, where reachable,
is told why.

Failure policy: whatever goes wrong in a session (bad input, a failing gadget, a lost client) ends
that session only. Where the socket still works, the client gets an error report (TEXT
"ERROR: ..." as Gadgetron's own server sends, or an ERROR message, by setting) and CLOSE. When the
client stops sending early (CLOSE, half-close or a disconnect), the data received so far still
run through the chain and every slice it completes is sent back.
"""

import logging
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ismrmrd
from gadgetron.types import ImageArray

from adacsc import resources, threads
from adacsc.chain.config import ChainConfig, ChainError
from adacsc.chain.runner import Chain, NodeFailure
from adacsc.chain.timing import ChainObserver
from adacsc.core import cancel
from adacsc.core.cancel import Cancelled
from adacsc.io.header import HeaderError, parse_header
from adacsc.io.images import split_image_array
from adacsc.io.scan_qa import is_scan_qa
from adacsc.limits import LimitError, ScanBudget, ScanLimits, check_encoding
from adacsc.server import protocol as proto
from adacsc.server.opening import Opening
from adacsc.server.outbox import Outbox
from adacsc.server.parameters import (
    ChainRequest, ParameterError, apply_overrides, looks_like_json, parse_json_parameters, select_chain,
)

log = logging.getLogger(__name__)

GiB = 1 << 30
DIRECT_SEND_BYTES = 4 * proto.MiB
"""messages up to this size are written by the producing thread itself when the socket is idle"""
SEND_CHUNK_BYTES = proto.MiB
"""sends go out in pieces of this size, each within `write_stall_s`"""
MESSAGE_OVERHEAD_BYTES = 1024
"""an image message's bytes besides its pixels and attributes (id, header, lengths), charged with it"""
GADGET_WARNINGS_SENT = 20
"""gadget warnings passed on to the client per scan; later ones are only logged"""


@dataclass(frozen=True)
class SessionSettings:
    """What every session of a server shares."""

    config_dirs: tuple[Path, ...]
    trusted_modules: frozenset[str] = frozenset()
    """modules a client-sent chain XML (CONFIG_TEXT) may run, besides adacsc.gadgets.*"""
    strict: bool = False
    """round-trip every hop through gadgetron-python's serialisers (slower; see Chain)"""
    io_timeout_s: float = 300.0
    """a client silent this long mid-scan is dropped"""
    message_timeout_s: float = 10.0
    """a message must arrive within this long of its first byte, plus 1 s per MiB of its size"""
    write_stall_s: float = 20.0
    """a client that accepts none of its results for this long is dropped (its scan is cancelled)"""
    scan_timeout_s: float = 1800.0
    """the deadline of one scan, from connection to CLOSE; past it the scan is cancelled"""
    probe_s: float = 10.0
    """while the chain computes after the input ended, a progress TEXT is sent after this long
    without output: a client that is gone answers it with a reset, and its scan is cancelled"""
    outbox_bytes: int = 64 * proto.MiB
    limits: proto.Limits = proto.Limits()
    max_scan_bytes: int = 16 * GiB
    """the scan's budget: bytes received plus buffers allocated by the gadgets"""
    error_format: str = "text"
    """"text": TEXT "ERROR: ..." (Gadgetron's server); "error": ERROR (id 8, uint64 length)"""
    max_queued_items: int = 4096
    """readouts waiting in front of the first gadget before reading pauses (back-pressure)"""
    socket_send_buffer: int | None = None
    """SO_SNDBUF for session sockets (None: the system default)"""
    observer: ChainObserver | None = None
    """told each stage's and each slice's latency (the server's metrics)"""

    def trusts(self, module: str) -> bool:
        """Whether a client-sent chain may name `module`."""
        return module in self.trusted_modules or module.startswith("adacsc.gadgets.")


class SessionError(RuntimeError):
    """Something the client should be told about; ends the session."""


class _Dropped(Exception):
    """The client stopped reading or went away."""


class _ChainFailed(Exception):
    """A gadget failed: reading stops; closing the chain reports which one and why."""


@dataclass
class SessionReport:
    """What one session did (also logged)."""

    session_id: int
    peer: str
    config: str | None = None
    acquisitions: int = 0
    noise_readouts: int = 0
    waveforms: int = 0
    images_in: int = 0
    pushed: int = 0
    images_sent: Counter = field(default_factory=Counter)
    outputs_not_sent: Counter = field(default_factory=Counter)
    bytes_in: int = 0
    bytes_out: int = 0
    closed_by_client: bool = False
    errors: list[str] = field(default_factory=list)
    dropped: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Finished without errors and without being dropped."""
        return not self.errors and self.dropped is None


class _Prefixed(logging.LoggerAdapter):
    def process(self, msg: str, kwargs: Any) -> tuple[str, Any]:
        return f"{self.extra['prefix']}: {msg}", kwargs


class Session:
    """Serves one connection; `run()` returns when the scan is done and the socket closed."""

    def __init__(self, sock: socket.socket, peer: str, session_id: int, settings: SessionSettings,
                 opening: Opening | None = None) -> None:
        self.sock = sock
        self.settings = settings
        self.report = SessionReport(session_id, peer)
        self.log = _Prefixed(log, {"prefix": f"session {session_id} ({peer})"})
        self._opening = opening if opening is not None else Opening(proto.SocketReader(sock))
        self._reader = self._opening.reader
        self._reader.message_s = settings.message_timeout_s
        self._wsock = sock.dup()  # the sending side, with its own (shorter) timeout
        self._budget = ScanBudget(settings.max_scan_bytes)
        self._outbox = Outbox(settings.outbox_bytes, self._budget.release)
        self._writer: threads.Task | None = None
        self._done = threading.Event()
        self._input_ended = False
        self._last_sent = time.monotonic()
        self._cancelled: str | None = None
        self._gadget_warnings = 0
        self._config_name: str | None = None
        self._config_text: str | None = None
        self._header: bytes | None = None
        self._json_config: str | None = None
        self._overrides: dict[str, str] = {}
        self._chain: Chain | None = None
        self._chain_name: str | None = None
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._anything_received = False

    @property
    def budget_used(self) -> int:
        """Bytes of the scan budget in use (received plus allocated)."""
        return self._budget.used

    # ---- writing ---------------------------------------------------------------------------

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
                self._budget.release(charged)
                self._drop(self._send_failure(err))
                return
            self._outbox.release()
            self._budget.release(charged)
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

    def _drop(self, reason: str) -> None:
        """Give up on the client: discard pending output and unblock the reading side."""
        with self._lock:
            if self.report.dropped is not None:
                return
            self.report.dropped = reason
        self.log.warning("dropping the session: %s; results not yet sent are discarded", reason)
        self._outbox.abort()
        if self._chain is not None:
            self._chain.cancel(f"the client is gone: {reason}")
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def cancel(self, reason: str) -> None:
        """Stop the scan (deadline, server abort): the chain stops at its next item or solver
        iteration, reading stops, and the client is told `reason` (where it still listens)."""
        with self._lock:
            if self._cancelled is not None or self._done.is_set():
                return
            self._cancelled = reason
        self.log.warning("cancelling the scan: %s", reason)
        if self._chain is not None:
            self._chain.cancel(reason)
        try:
            self.sock.shutdown(socket.SHUT_RD)  # wakes the reading thread
        except OSError:
            pass

    def abandon(self, reason: str) -> None:
        """Give up on the connection now (the server stops): pending output is discarded, the
        socket shut down, so no send or read blocks any longer; the chain is cancelled."""
        self.cancel(reason)
        self._drop(reason)

    def _watch(self) -> None:
        """The deadline; once the input ended, a reset connection and, while the chain computes
        without output, a progress probe."""
        deadline = self._started + self.settings.scan_timeout_s
        while not self._done.wait(0.1):
            now = time.monotonic()
            if now > deadline:
                self.cancel(f"the scan exceeded its deadline of {self.settings.scan_timeout_s:g} s")
                return
            if not self._input_ended or self._chain is None or self.report.dropped is not None:
                continue
            if self._connection_reset():
                self._drop("the client is gone (connection reset)")
                return
            if self._cancelled is None and now - self._last_sent > self.settings.probe_s:
                try:
                    self._send("text", proto.text_message(f"INFO: reconstructing, {now - self._started:.0f} s so far"))
                except _Dropped:
                    return

    def _connection_reset(self) -> bool:
        """Whether the peer reset the connection: a pending socket error (a read would report
        the end of the stream first, once the client has closed its sending side)."""
        try:
            return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0
        except OSError:
            return True

    def _send(self, kind: str, data: bytes, charged: int = 0) -> None:
        """Send now when the socket is free and the message small, else queue it for the writer.
        `charged`: bytes of the scan's budget the message holds, released once it is sent or
        discarded."""
        if self.report.dropped is not None:
            self._budget.release(charged)
            raise _Dropped()
        if len(data) <= DIRECT_SEND_BYTES and self._outbox.claim():
            try:
                self._send_bytes(data)
            except OSError as err:
                self._outbox.release()
                self._drop(self._send_failure(err))
                raise _Dropped() from err
            finally:
                self._budget.release(charged)
            self._outbox.release()
            self._sent(kind, data)
            return
        if not self._outbox.put(kind, data, self.settings.write_stall_s, charged):
            self._budget.release(charged)
            self._drop(f"the client did not read its results for {self.settings.write_stall_s:g} s")
            raise _Dropped()

    def _send_error(self, text: str) -> None:
        self.report.errors.append(text)
        self.log.error("%s", text)
        text = resources.without_folders(text, self.settings.config_dirs)
        data = (proto.error_message(text) if self.settings.error_format == "error"
                else proto.text_message(f"ERROR: {text}"))
        try:
            self._send("error", data)
        except _Dropped:
            pass

    def _send_warning(self, text: str, logged: bool = False) -> None:
        if not logged:
            self.log.warning("%s", text)
        text = resources.without_folders(text, self.settings.config_dirs)
        try:
            self._send("text", proto.text_message(f"WARNING: {text}"))
        except _Dropped:
            pass

    def _gadget_warning(self, text: str) -> None:
        """A warning a gadget logged (already in the server log): the client hears of it too."""
        self._gadget_warnings += 1
        if self._gadget_warnings <= GADGET_WARNINGS_SENT:
            self._send_warning(text, logged=True)
        elif self._gadget_warnings == GADGET_WARNINGS_SENT + 1:
            self._send_warning(f"more than {GADGET_WARNINGS_SENT} gadget warnings: the rest are only in the "
                               "server log", logged=True)

    def _on_output(self, item: object) -> None:
        """Called by the chain's last node for every item it produces."""
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
            self._budget.charge(nbytes, f"sending image {image.image_index} of series {image.image_series_index}",
                                cancel.stop_or_after(self.settings.write_stall_s))
            try:
                self._send(f"image_{image.image_series_index}", proto.item_message(image), nbytes)
            except _Dropped:
                self.report.outputs_not_sent["Image (session dropped)"] += 1

    # ---- reading ---------------------------------------------------------------------------

    def run(self) -> SessionReport:
        """Serve the connection to its end."""
        self._configure_socket()
        session_id = self.report.session_id
        self._writer = threads.start(self._write_loop, name=f"adacsc-send-{session_id}")
        threads.start(self._watch, name=f"adacsc-watch-{session_id}")
        fatal = False
        try:
            fatal = self._read_loop()
        except Exception as err:  # a bug must end this session only
            self.log.exception("unexpected failure")
            self._send_error(f"internal server error: {err}")
            fatal = True
        finally:
            self._finish(fatal)
        return self.report

    def _configure_socket(self) -> None:
        self.sock.settimeout(self.settings.io_timeout_s)
        self._wsock.settimeout(self.settings.write_stall_s)
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.settings.socket_send_buffer:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.settings.socket_send_buffer)
        except OSError:
            pass

    def _read_loop(self) -> bool:
        """Read until CLOSE or the end; True when it ended on an error the client caused."""
        try:
            return self._read_messages()
        finally:
            self._input_ended = True

    def _read_messages(self) -> bool:
        limits = self.settings.limits
        while True:
            if self._cancelled is not None:
                return False
            try:
                message = self._next_message(limits)
            except proto.EndOfStream:
                if self.report.dropped is None:
                    (self.log.warning if self._anything_received else self.log.info)(
                        "the client ended the stream without CLOSE%s",
                        ": finishing the scan with the data received" if self._chain else "")
                return False
            except proto.TruncatedMessage as err:
                if self.report.dropped is None:
                    self.log.warning("client disconnected mid-message (%s): finishing the scan with the "
                                     "data received", err)
                return False
            except proto.ProtocolError as err:
                self._send_error(f"protocol error: {err}")
                return True
            except proto.ReadDeadline as err:
                self._send_error(f"{err}: the scan is dropped")
                return True
            except TimeoutError:
                self._send_error(f"no data from the client for {self.settings.io_timeout_s:g} s")
                return True
            except OSError as err:
                if self.report.dropped is None:
                    self.log.warning("connection lost: %s", err)
                return False
            self._anything_received = True
            self.report.bytes_in += message.size
            try:
                self._budget.charge(message.size, f"a {message.name} message")
            except LimitError as err:
                self._send_error(str(err))
                return True
            try:
                if not self._handle(message):
                    return False
            except SessionError as err:
                self._send_error(str(err))
                return True
            except _ChainFailed:
                self.log.warning("a gadget failed after %d items: no more data is read", self.report.pushed)
                return True

    def _next_message(self, limits: proto.Limits) -> proto.Message:
        """The messages the server read before it gave this connection a worker, then the socket's."""
        if self._opening.messages:
            return self._opening.messages.pop(0)
        if self._opening.failure is not None:
            failure, self._opening.failure = self._opening.failure, None
            raise failure
        return proto.read_message(self._reader, limits)

    def _handle(self, message: proto.Message) -> bool:
        """Act on one message; False when the client closed the stream."""
        mid = message.mid
        if mid in (proto.ACQUISITION, proto.WAVEFORM, proto.IMAGE):
            self._push(message)
        elif mid == proto.CLOSE:
            self.report.closed_by_client = True
            return False
        elif mid in (proto.CONFIG_FILE, proto.CONFIG_TEXT):
            if self._chain is not None or self._config_name is not None or self._config_text is not None:
                raise SessionError(f"a second config ({message.name}) in one stream")
            if mid == proto.CONFIG_FILE:
                if not message.payload:
                    raise SessionError("CONFIG_FILE with an empty name")
                warning = config_name_warning(message.payload, self.settings)
                if warning is not None and message not in self._opening.answered:
                    self._send_warning(warning)
                self._config_name = message.payload
            else:
                self._config_text = message.payload
            self.log.debug("config %s received", message.name)
        elif mid == proto.HEADER:
            if self._chain is not None or self._header is not None:
                raise SessionError("a second ISMRMRD header in one stream")
            limits = replace(ScanLimits.from_environment(), max_scan_bytes=self.settings.max_scan_bytes)
            try:
                check_encoding(parse_header(message.payload), limits)
            except HeaderError as err:
                raise SessionError(str(err)) from err
            except LimitError as err:
                raise SessionError(f"the scan is refused: {err}") from err
            self._header = message.payload
        elif mid == proto.TEXT:
            self._text(message.payload)
        elif mid == proto.ERROR:
            self.log.warning("the client reported an error: %s", message.payload[:500])
        return True

    def _text(self, text: str) -> None:
        """TEXT: JSON parameters (python-ismrmrd-server style) before the data, else logged."""
        if not looks_like_json(text):
            self.log.info("client text: %s", text.strip()[:500])
            return
        if self._chain is not None:
            self._send_warning("JSON parameters after the data started are ignored")
            return
        try:
            parameters = parse_json_parameters(text)
        except ParameterError as err:
            self._send_warning(f"{err}: ignored")
            return
        if parameters.config is not None:
            self._json_config = parameters.config
        self._overrides.update(parameters.properties)
        if parameters.unusable:
            self._send_warning(f"{_listing(list(parameters.unusable), 'parameter')} ignored: only strings, "
                               "numbers and booleans are used")
        self.log.info("JSON parameters: config %s, %d propert%s", self._json_config or "(unchanged)",
                      len(self._overrides), "y" if len(self._overrides) == 1 else "ies")

    # ---- the chain -------------------------------------------------------------------------

    def _resolve_chain(self) -> ChainConfig:
        """The requested chain with the JSON overrides some node accepts (see adacsc.server.parameters)."""
        if self._json_config is not None and (self._config_name or self._config_text):
            self.log.info("JSON parameters choose config %r over the CONFIG message", self._json_config)
        request = ChainRequest(self._config_name, self._config_text, self._json_config)
        chain = select_chain(request, list(self.settings.config_dirs), self.settings.trusts)
        chain, ignored = apply_overrides(chain, self._overrides)
        if ignored:
            self._send_warning(f"{_listing(ignored, 'parameter')} ignored: no node of chain {chain.name!r} "
                               "accepts them")
        return chain

    def _start_chain(self) -> None:
        if self._config_name is None and self._config_text is None and self._json_config is None:
            raise SessionError("data arrived before the config: send CONFIG (id 1 or 2) first")
        if self._header is None:
            raise SessionError("data arrived before the ISMRMRD header (id 3)")
        try:
            chain = self._resolve_chain()
            self._chain = Chain(chain, self._header, self._on_output, strict=self.settings.strict,
                                budget=self._budget, on_warning=self._gadget_warning,
                                observer=self.settings.observer).start()
        except (ChainError, HeaderError, ValueError) as err:
            raise SessionError(f"cannot run the config: {err}") from err
        self._chain_name = chain.name
        self.report.config = chain.name
        self.log.info("running chain %s (%d nodes)", chain.name, len(chain.nodes))

    def _push(self, message: proto.Message) -> None:
        if self._chain is None:
            self._start_chain()
            if self._cancelled is not None:  # cancelled while the chain was starting
                self._chain.cancel(self._cancelled)
        item = message.payload
        if message.mid == proto.ACQUISITION:
            self.report.acquisitions += 1
            if item.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
                self.report.noise_readouts += 1
        elif message.mid == proto.WAVEFORM:
            self.report.waveforms += 1
        else:
            self.report.images_in += 1
        self._chain.push(item)
        self.report.pushed += 1
        if self._chain.failed:
            raise _ChainFailed()
        if not self.report.pushed % 64:
            self._throttle()

    def _throttle(self) -> None:
        """Pause reading while too many items wait in front of the first gadget, so a fast sender
        is slowed by TCP instead of filling memory."""
        limit = self.settings.max_queued_items
        while (self._chain.pending > limit and not self._chain.failed and self.report.dropped is None
               and self._cancelled is None):
            time.sleep(0.001)

    def _finish(self, fatal: bool) -> None:
        """End the chain, send what it produced, report, CLOSE, close the socket."""
        if self._chain is None and self.report.closed_by_client and not fatal and (
                self._header is not None and (self._config_name or self._config_text or self._json_config)):
            try:
                self._start_chain()  # a scan without data: still validate the config and header
            except SessionError as err:
                self._send_error(str(err))
        elif self._cancelled is not None and self._chain is None:
            self._send_error(f"the scan was cancelled: {self._cancelled}")
        elif self._chain is None and self._anything_received and not fatal and self.report.dropped is None:
            missing = [what for what, present in (("config", self._config_name or self._config_text or
                                                   self._json_config), ("header", self._header)) if not present]
            if missing:
                self._send_warning(f"the stream ended without {' and '.join(missing)}: nothing to reconstruct")
        if self._chain is not None:
            try:
                self._chain.close()
            except Cancelled as err:
                if self.report.dropped is None:
                    self._send_error(f"the scan was cancelled: {err}")
            except NodeFailure as err:
                self._send_error(str(err))
            except Exception as err:
                self.log.exception("chain failure")
                self._send_error(f"chain failure: {err}")
        self._account()
        try:
            self._send("close", proto.close_message())
        except _Dropped:
            pass
        self._outbox.finish()
        self._writer.join()
        self._done.set()
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if fatal and self.report.dropped is None:
            # the client may still be sending: read (and discard) a little, so that closing
            # does not reset the connection before it has read the error report
            self._reader.drain(max_bytes=64 * proto.MiB, deadline_s=2.0)
        for sock in (self._wsock, self.sock):
            try:
                sock.close()
            except OSError:
                pass
        self.report.seconds = time.monotonic() - self._started
        sent = self.report.images_sent
        self.log.info("finished in %.2f s, sent %s: %s", self.report.seconds,
                      ", ".join(f"{name} x{count}" for name, count in sorted(sent.items())) or "no images",
                      "ok" if self.report.ok else (self.report.dropped or "; ".join(self.report.errors)))

    def _account(self) -> None:
        r = self.report
        chain = self._chain
        if chain is not None:
            self.log.info("received %d acquisitions (%d noise), %d waveforms, %d images; %d items went into "
                          "chain %s, which produced %d outputs (the gadgets account for dropped readouts)",
                          r.acquisitions, r.noise_readouts, r.waveforms, r.images_in, chain.items_in,
                          self._chain_name, chain.items_out)
            if chain.items_in != r.pushed:
                self.log.error("accounting mismatch: %d items received, %d in the chain", r.pushed, chain.items_in)
        elif r.acquisitions or r.waveforms or r.images_in:
            self.log.warning("received %d acquisitions that never reached a chain", r.acquisitions)
        if r.outputs_not_sent:
            self.log.warning("outputs not sent: %s",
                             ", ".join(f"{name} x{count}" for name, count in sorted(r.outputs_not_sent.items())))


def config_name_warning(name: str, settings: SessionSettings) -> str | None:
    """The warning a CONFIG_FILE naming no known config gets at once (JSON parameters may still
    name the config, as FIRE clients do), or None."""
    try:
        resources.resolve(resources.CONFIG, name, settings.config_dirs)
    except resources.ResourceError as err:
        return f"{err}; unless JSON parameters name a config, the scan fails at its first data"
    return None


def _listing(names: list[str], noun: str, shown: int = 10) -> str:
    """'3 parameters (a, b, c)', at most `shown` names and a count of the rest."""
    head = ", ".join(repr(n) for n in names[:shown])
    rest = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{len(names)} {noun}{'s' if len(names) != 1 else ''} ({head}{rest})"
